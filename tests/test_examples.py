"""Every script in examples/ runs to the end against a fresh SQLite database.

The scripts are found by glob, so a new example is tested without touching this file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))


def test_examples_are_found() -> None:
    assert EXAMPLES, f"no scripts found in {EXAMPLES_DIR}"


@pytest.mark.parametrize("script", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'example.db'}"
    result = subprocess.run(
        [sys.executable, str(script), url],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
    assert result.returncode == 0, (
        f"{script.name} exited with {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
