"""convnet in a Jupyter notebook: cells run in a real IPython kernel, as Jupyter runs them."""

from __future__ import annotations

import os
import re
import sys

import nbclient
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

# What TensorFlow's C++ code writes to stderr: `I0000 00:00:1796581002.121524 5402 port.cc:153]`.
FRAMEWORK_LOG = re.compile(r"cuInit|oneDNN|absl|cuda|^[IWEF]\d{4} ", re.I | re.M)
PROBE = "written-to-fd-2"
# A kernel's environment as a user's: ipykernel forwards what is written to file descriptors 1
# and 2 to the notebook only outside pytest, and conftest.py sets a TensorFlow log level.
NOT_A_USERS = ("PYTEST_CURRENT_TEST", "TF_CPP_MIN_LOG_LEVEL")
WIDGET = "application/vnd.jupyter.widget-view+json"


def run_notebook(cells: list[str], folder) -> nbformat.NotebookNode:
    """Runs `cells` in a fresh kernel (the venv's ipykernel) in `folder`; the executed notebook."""
    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": folder}}
    )
    env = {k: v for k, v in os.environ.items() if k not in NOT_A_USERS}
    env["XDG_CACHE_HOME"] = str(folder / "user-cache")  # as conftest's `private_cache`
    return client.execute(env=env)


def texts(cell) -> list[str]:
    """The text of each of a cell's outputs: streams, and the plain text of the others."""
    return [o.get("text") or o.get("data", {}).get("text/plain", "") for o in cell.outputs]


def widget_texts(notebook) -> str:
    """The text of the notebook's HTML widgets (tqdm's bars) as the run left them."""
    widgets = notebook.metadata.get("widgets", {})
    models = widgets.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    html = [m["state"]["value"] for m in models.values() if m["model_name"] == "HTMLModel"]
    return " ".join(html).replace("\u2007", " ")  # tqdm's padding


@pytest.fixture(scope="module")
def notebook(tiny_npz, tmp_path_factory):
    """A notebook that trains the seed preset four times for 2 epochs; its cells and folder."""
    folder = tmp_path_factory.mktemp("notebook")
    train = f"convnet.train(preset='seed', train={str(tiny_npz)!r}, epochs=2, batch_size=32"
    cells = {
        # What C++ writes to fd 2 reaches the notebook, so the absence of TF's lines means
        # something.
        # Two epochs of seed are too few steps, on purpose: the under-training warning this
        # gives is tests/test_under_training.py's, not these tests' output to count.
        # ipykernel's thread reads fd 2 on its own time: the cell waits for it a second, or
        # under load the line landed in the next cell's output.
        "probe": f"import os, sys, time\nos.write(2, b'{PROBE}\\n')\ntime.sleep(1)\n"
        "print(sys.executable)\n"
        "import warnings\nfrom convnet.errors import UnderTrainingWarning\n"
        "warnings.filterwarnings('ignore', category=UnderTrainingWarning)",
        "before": "%matplotlib inline\nimport matplotlib\nprint(matplotlib.get_backend())",
        "training": f"import convnet\nresult = {train}, out='runs/nb')",
        "after": "print(matplotlib.get_backend())",
        "silent": f"result = {train}, out='runs/silent', verbose=0)",
        "lines": f"result = {train}, out='runs/lines', verbose=2)",
        # As where ipywidgets is not installed (convnet does not require it).
        "text_bars": f"sys.modules['ipywidgets'] = None\nresult = {train}, out='runs/text')",
    }
    executed = run_notebook(list(cells.values()), folder)
    return executed, dict(zip(cells, executed.cells, strict=True)), folder


@pytest.mark.trains
def test_the_kernel_is_this_venvs_and_forwards_fd_2(notebook):
    _, cells, _ = notebook
    stdout = [o.text for o in cells["probe"].outputs if o.get("name") == "stdout"]
    assert stdout == [sys.executable + "\n"]  # with convnet, and ipykernel as installed here
    assert PROBE in "".join(texts(cells["probe"]))


@pytest.mark.trains
def test_no_framework_start_up_lines_reach_the_notebook(notebook):
    _, cells, _ = notebook
    everything = "".join("".join(texts(cell)) for cell in cells.values())
    assert not FRAMEWORK_LOG.search(everything.replace(PROBE, "")), everything


@pytest.mark.trains
def test_training_shows_one_bar_per_epoch_that_ends_with_its_metrics(notebook):
    executed, cells, folder = notebook
    # Keras' bar was a new output of escape codes at each update, some 2,500 for the seed preset.
    training = cells["training"]
    assert [WIDGET in o.get("data", {}) for o in training.outputs] == [True, True]
    assert not any("\x1b[" in text for text in texts(training))
    bars = widget_texts(executed)
    assert "Epoch 2/2: 100%" in bars
    assert re.search(r"(\d+)/\1 .*loss=[\d.]+, .*val_accuracy=[\d.]+, val_loss=[\d.]+", bars), bars
    assert (folder / "runs" / "nb" / "model.keras").is_file()


@pytest.mark.trains
def test_training_leaves_the_notebooks_matplotlib_backend(notebook):
    _, cells, _ = notebook
    assert "inline" in texts(cells["before"])[0]
    assert texts(cells["after"]) == texts(cells["before"])


@pytest.mark.trains
def test_verbose_0_shows_nothing_and_2_a_line_per_epoch(notebook):
    _, cells, _ = notebook
    assert cells["silent"].outputs == []
    lines = "".join(texts(cells["lines"]))
    epoch = r"Epoch [12]/2\n(?P<steps>\d+)/(?P=steps) - \d+s - .* val_loss: [\d.]+.*\n"
    assert re.fullmatch(f"({epoch}){{2}}", lines), lines


@pytest.mark.trains
def test_without_ipywidgets_the_bars_are_text_redrawn_in_place(notebook):
    _, cells, _ = notebook
    shown = "".join(texts(cells["text_bars"]))
    assert "\x1b[" not in shown and "Warning" not in shown
    finals = [part for part in shown.split("\r") if part.endswith("\n")]  # each bar as it closed
    assert [part[:16] for part in finals] == ["Epoch 1/2: 100%|", "Epoch 2/2: 100%|"], shown
    assert all(" val_loss=" in part for part in finals), shown
