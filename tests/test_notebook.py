"""examples/analysis.ipynb runs end to end in a fresh kernel (its own reconciliation
asserts included), writes nothing to stderr and shows its four plots; the committed file
carries no outputs.

To keep the suite quick the test hands the notebook a smaller sample, built here, through
``TIMEBANK_SAMPLE_URL``; the notebook's own build is ``sample_ledger.build(url)``, which
tests/test_examples.py runs as ``examples/sample_ledger.py``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from timebank.bank import TimeBank

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "analysis.ipynb"
#: Seconds a cell may run (building the sample takes a few).
CELL_TIMEOUT = 180
PLOTS = 4
SAMPLE = {"seed": 7, "members": 40, "days": 61}


def build_sample(url: str) -> None:
    """examples/sample_ledger.py's build(), smaller (examples are scripts, not a package)."""
    module = sys.modules.get("sample_ledger")
    if module is None:
        spec = importlib.util.spec_from_file_location(
            "sample_ledger", NOTEBOOK.parent / "sample_ledger.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    bank: TimeBank = module.build(url, **SAMPLE)
    bank.dispose()


def read_notebook() -> Any:
    return nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]


def code_cells(notebook: Any) -> list[Any]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_notebook_is_committed_without_outputs() -> None:
    notebook = read_notebook()
    nbformat.validate(notebook)
    for cell in code_cells(notebook):
        assert cell.outputs == [], cell.source
        assert cell.execution_count is None, cell.source
    assert notebook.metadata.kernelspec.name == "python3"


def test_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'sample.db'}"
    build_sample(url)
    monkeypatch.setenv("TIMEBANK_SAMPLE_URL", url)  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "Agg")  # "%matplotlib inline" takes over in the notebook
    notebook = read_notebook()
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",  # the venv's ipykernel: "python" in its spec is sys.executable
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},  # imports sample_ledger
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [output for cell in code_cells(notebook) for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    errors = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not errors, errors
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == PLOTS
