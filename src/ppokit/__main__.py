"""The `ppokit` command and `python -m ppokit`: run the CLI and exit with its status."""

from __future__ import annotations

import os
import sys

INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


def run() -> None:
    try:
        from ppokit.cli import main  # the CLI's own handler is not in place while it imports

        status = main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = INTERRUPTED
    if status == INTERRUPTED:
        # A Ctrl-C that lands while an extension runs Python code through PyRun_String (torch's
        # import does) leaves CPython marked "ended by an unhandled KeyboardInterrupt" even after
        # main() handled it, and the interpreter then kills itself with SIGINT on the way out
        # (status -2, not 130). Every `finally` has run by now; skip only the interpreter's
        # teardown so that the status is the one we report.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED)
    sys.exit(status)


if __name__ == "__main__":
    run()
