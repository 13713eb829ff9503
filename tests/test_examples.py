"""The example notebooks, executed in a real Jupyter kernel as a reader would run them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbclient
import nbformat
import pytest
from test_notebook import FRAMEWORK_LOG, NOT_A_USERS, texts

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def execute(path: Path, folder: Path, **parameters) -> nbformat.NotebookNode:
    """The notebook at `path`, run in a fresh kernel in `folder`, its cell tagged `parameters`
    replaced by `parameters` (as papermill would)."""
    notebook = nbformat.read(path, as_version=4)
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    cell.source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=900, resources={"metadata": {"path": folder}}
    )
    return client.execute(env={k: v for k, v in os.environ.items() if k not in NOT_A_USERS})


@pytest.mark.slow
def test_the_article_notebook_trains_compares_and_predicts(tmp_path):
    notebook = execute(
        EXAMPLES / "fashion-mnist.ipynb", tmp_path, LIMIT=3000, EPOCHS=2, CSV_DIR="csv"
    )
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [output for cell in code for output in cell.outputs]
    shown = "\n".join(text for cell in code for text in texts(cell))
    assert "(60000, 785), (10000, 785)" in shown  # the Kaggle CSVs, read by pandas
    accuracies = dict(re.findall(r"(seed|fast): test loss [\d.]+, test accuracy ([\d.]+)", shown))
    assert set(accuracies) == {"seed", "fast"}, shown
    # Far above chance (0.10), though the seed's batches of 512 make only 12 steps here.
    assert all(float(value) > 0.3 for value in accuracies.values()), accuracies
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    reports = [page for page in html if page.startswith("<iframe srcdoc=")]
    assert len(reports) == 2  # the seed run's report, the comparison
    assert "Run report" in reports[0] and "Comparison of 2 runs" in reports[1]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) == 2  # the learning curves, the classified test images
    errors = [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    # The only warnings are those this short run must give: 2 epochs of 3,000 images are too
    # few steps for seed (12) and fast.
    told = [o for o in errors if "UnderTrainingWarning" in o.get("text", "")]
    # In Python's terms: "300 steps take epochs=50 here", not the command's --epochs.
    assert told and all("take epochs=" in o["text"] for o in told), errors
    assert not [o for o in told if "--" in o["text"]], told
    # Shown as the notebook's line that trained, not as convnet's own `return trainer.train(`.
    assert not [o for o in told if "trainer.train(" in o["text"]], told
    others = [o for o in errors if o not in told]
    assert not [o for o in others if "Warning" in o.get("text", "") or "Error" in str(o)], errors
    assert not FRAMEWORK_LOG.search(shown)
    assert len(list((tmp_path / "runs").iterdir())) == 2
