"""The analysis extra's check, imported before anything that needs pandas or matplotlib:
without them, importing :mod:`timebank.analysis` says which extra to install."""

from __future__ import annotations

from typing import Final

INSTALL: Final = "pip install 'timebank[analysis]'"

try:
    import matplotlib  # noqa: F401
    import pandas  # noqa: F401
except ImportError as missing:
    raise ImportError(
        f"timebank.analysis needs pandas and matplotlib ({missing}): {INSTALL}",
        name=missing.name,
    ) from missing
