"""examples/quickstart.ipynb runs headless, offline, on the committed backbone."""

from __future__ import annotations

import nbclient  # the dev extra installs both: a missing one fails here, never skips
import nbformat
import pytest
from conftest import ROOT, SHARED_DATA, require_split

NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_executes(monkeypatch, tmp_path):
    """Every cell runs (nbclient raises on a cell's error) and shows what its text promises."""
    require_split("cmid", "train")
    monkeypatch.setenv("LT_TUNING_DATA", str(SHARED_DATA))
    monkeypatch.setenv("LT_TUNING_QUICKSTART_RUNS", str(tmp_path / "runs"))  # not into the checkout
    # Every cell runs, on 64 rows per split and 2 steps per model: the test checks the workflow, not the numbers.
    monkeypatch.setenv("LT_TUNING_QUICKSTART_STEPS", "2")
    monkeypatch.setenv("LT_TUNING_QUICKSTART_EXAMPLES", "64")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "| method | Acc | F1 | Head F1 | Tail F1 |" in text
    assert "| CLS-tuning |" in text and "| Prompt-tuning |" in text
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) == 3  # class distribution, per-class F1, weight norms
    assert text.count(" -> ") == 3  # the trained model classifies three new sentences
    assert len(list((tmp_path / "runs").glob("lightning_logs/version_*/checkpoints/best-*.ckpt"))) == 2
