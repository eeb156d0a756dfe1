"""Graph errors: every problem names the node, the field, a code and, where one exists, the
closest valid name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from ppokit.errors import PPOKitError


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name closest to `name` (for "did you mean"), or None when none is close."""
    valid = list(valid)
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if match:
        return match[0]
    lowered = {v.lower(): v for v in valid}
    return lowered.get(name.lower())


@dataclass(frozen=True)
class GraphIssue:
    """One problem of a graph. `field` is "type", "params.<name>", "inputs.<name>" or a graph
    setting; `code` is a stable identifier (unknown_param, type_mismatch, cycle, ...)."""

    node: str | None
    field: str | None
    code: str
    message: str
    suggestion: str | None = None
    node_type: str | None = None

    def __str__(self) -> str:
        where = f"node {self.node!r}" if self.node is not None else "graph"
        if self.node is not None and self.node_type:
            where += f" ({self.node_type})"
        if self.field:
            where += f" {self.field}"
        text = f"{where}: {self.message}"
        if self.suggestion is not None:
            text += f"; did you mean {self.suggestion!r}?"
        return f"{text} [{self.code}]"


class GraphError(PPOKitError):
    """A graph file cannot be read, is invalid, or failed while running."""


class GraphValidationError(GraphError):
    """All the problems found in a graph, reported together."""

    def __init__(self, issues: list[GraphIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        n = len(self.issues)
        head = f"{source or 'graph'}: {n} error{'s' if n != 1 else ''}"
        super().__init__("\n  ".join([head, *(str(i) for i in self.issues)]))


class GraphRunError(GraphError):
    """A node raised while the graph ran: names the node, its type and the tick."""

    def __init__(self, node: str, node_type: str, when: str, error: BaseException) -> None:
        self.node, self.node_type, self.when, self.error = node, node_type, when, error
        detail = (
            str(error) if isinstance(error, PPOKitError) else f"{type(error).__name__}: {error}"
        )
        super().__init__(f"node {node!r} ({node_type}) failed {when}: {detail}")
