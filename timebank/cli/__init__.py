"""The ``timebank`` command for station operators, administrators and scripts.

It needs the ``cli`` extra (click and rich): ``pip install 'timebank[cli]'``. The library
itself never imports this package, so ``import timebank`` works without them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

#: Exit codes, one per family of errors (documented in the README and in ``--help``).
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INVALID = 3
EXIT_REFUSED = 4
EXIT_NOT_FOUND = 5
EXIT_PERMISSION = 6
EXIT_CONFLICT = 7
EXIT_DATABASE = 8
EXIT_SCHEMA = 9


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    try:
        from timebank.cli._app import run  # noqa: PLC0415 - fails without the extra
    except ModuleNotFoundError as missing:  # click or rich is not installed
        if missing.name not in ("click", "rich"):
            raise
        print(
            "timebank: the command needs the 'cli' extra: pip install 'timebank[cli]'",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return run(sys.argv[1:] if argv is None else list(argv))


__all__ = [
    "EXIT_CONFLICT",
    "EXIT_DATABASE",
    "EXIT_INTERNAL",
    "EXIT_INVALID",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PERMISSION",
    "EXIT_REFUSED",
    "EXIT_SCHEMA",
    "EXIT_USAGE",
    "main",
]
