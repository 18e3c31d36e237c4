"""The wheel carries the migrations: build it, install it into a fresh virtual environment
outside the repository, and there create a database, migrate and post."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import sys, timebank
    assert "site-packages" in timebank.__file__, timebank.__file__
    ledger = timebank.Ledger.open(sys.argv[1])
    assert timebank.current_revision(ledger.engine) == timebank.head_revision()
    ledger.open_account("s", "station", floor_minutes=None)
    ledger.open_account("m", "member")
    entry = ledger.transfer("k1", debit="s", credit="m", amount_minutes=30,
                            code="deposit", operator="op")
    assert ledger.balance("m").posted_minutes == 30
    print("posted", entry.id)
""")


@pytest.mark.slow
def test_wheel_installs_and_migrates_outside_the_repository(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True, capture_output=True,
    )
    [wheel] = dist.glob("timebank-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True,
                   capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(python), "-c", SCRIPT, f"sqlite:///{elsewhere / 'bank.db'}"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    )
    assert result.stdout.strip() == "posted 1"
    # Without the cli extra the library imports without click or rich, and the command
    # says which install brings it.
    probe = subprocess.run(
        [str(python), "-c", "import sys, timebank, timebank.bank, timebank.simulation; "
         "print(sorted({'click', 'rich'} & set(sys.modules)))"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "[]"
    command = subprocess.run([str(env_dir / "bin" / "timebank"), "--help"], cwd=elsewhere,
                             env=env, capture_output=True, text=True, check=False)
    assert command.returncode == 1
    assert "pip install 'timebank[cli]'" in command.stderr
