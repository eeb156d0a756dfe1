"""Graphs for the node tests: the shipped examples, cut down to a few updates."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples" / "graphs"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def tiny_cartpole() -> dict:
    """examples/graphs/cartpole_ppo.json at 2 envs x 16 steps, 2 updates, quiet."""
    g = example("cartpole_ppo")
    g["nodes"]["env"]["params"]["num_envs"] = 2
    g["nodes"]["trainer"]["params"].update(
        horizon_length=16, epochs=2, minibatch_size=16, total_steps=64, log_every=0
    )
    g["nodes"]["eval"]["params"]["episodes"] = 2
    return g


@pytest.fixture
def tiny_graph():
    """Factory: a fresh copy of the tiny CartPole graph (a dict, as parsed from JSON)."""
    return lambda: copy.deepcopy(tiny_cartpole())


@pytest.fixture
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
