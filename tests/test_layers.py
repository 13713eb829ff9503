"""The layering: import-linter's contracts hold, and commands that need no framework import none.

Each check runs in a fresh interpreter, since this one has Keras loaded already.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("keras", "tensorflow", "jax", "torch", "sklearn")
HEAVY = (*FRAMEWORKS, "numpy", "polars", "scipy", "matplotlib")


def loaded_after(code: str, *args: str) -> tuple[set[str], str]:
    """The HEAVY modules in sys.modules after `code` runs in a fresh process, and its stdout."""
    probe = (
        f"{code}\nimport sys, json\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True
    )
    *printed, modules = done.stdout.strip().splitlines()
    return set(json.loads(modules)), "\n".join(printed)


def test_the_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "3 kept, 0 broken" in done.stdout


def test_the_cli_and_the_api_import_no_framework_nor_numpy():
    loaded, _ = loaded_after("import convnet, convnet.cli, convnet.api")
    assert loaded == set()


def test_listing_presets_and_checking_a_config_need_no_framework(tmp_path):
    config = tmp_path / "fast.yaml"
    config.write_text("preset: fast\nepochs: 3\nbackend: jax\n")
    code = (
        "import sys\nfrom convnet.config import load_config\nfrom convnet.cli import main\n"
        "config = load_config(sys.argv[1], {'learning_rate': 0.01})\n"
        "print(config.recipe().epochs, config.recipe().learning_rate)\n"
        "assert main(['presets']) == 0\n"
    )
    loaded, printed = loaded_after(code, str(config))
    assert loaded == set()
    assert printed.splitlines()[0] == "3 0.01"
    assert "fast" in printed


def test_comparing_runs_needs_no_framework(tmp_path, trained_run):
    """The page is made of the runs' files: `convnet compare` took 4.4 s importing TensorFlow."""
    other = shutil.copytree(trained_run, tmp_path / "other")
    code = (
        "import sys\nfrom convnet.cli import main\n"
        "print(main(['compare', sys.argv[1], sys.argv[2], '--out', sys.argv[3]]))\n"
    )
    loaded, printed = loaded_after(code, str(trained_run), str(other), str(tmp_path / "c.html"))
    assert printed.splitlines()[-1] == "0", printed
    assert not loaded & set(FRAMEWORKS), loaded
    assert "Comparison of 2 runs" in (tmp_path / "c.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--preset", "nope"], "Unknown preset 'nope'"),
        (["train", "--epochs", "0"], "epochs must be an integer >= 1"),
        (["train", "--train", "{tmp}/bad.csv"], "bad.csv"),
        (["train", "--config", "{tmp}/bad.yaml"], "'epochs' must be int"),
        (["evaluate", "{tmp}"], "not a run folder"),
        (["predict", "{run}", "{tmp}/missing.png"], "missing.png: file not found"),
        (["predict", "{run}", "{tmp}/bad.csv"], "bad.csv"),
        (["export", "{tmp}/unfinished"], "no model.keras; the run has not finished training"),
        (
            ["train", "--num-processes", "2", "--process-id", "0", "--coordinator", "h:1"],
            "training on several processes needs the jax backend (received: tensorflow)",
        ),
    ],
)
def test_bad_input_is_refused_before_any_framework_is_imported(
    tmp_path, trained_run, args, message
):
    (tmp_path / "bad.csv").write_text("label,pixel1,pixel2,pixel3,pixel4\n0,1,2,3\n")
    (tmp_path / "bad.yaml").write_text("epochs: many\n")
    (tmp_path / "unfinished").mkdir()
    shutil.copy(trained_run / "config.yaml", tmp_path / "unfinished")
    args = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(trained_run)) for a in args]
    code = (
        "import sys, contextlib, io\nfrom convnet.cli import main\n"
        "err = io.StringIO()\n"
        "with contextlib.redirect_stderr(err):\n"
        "    code = main(sys.argv[1:])\n"
        "print(code)\nprint(err.getvalue().strip())\n"
    )
    loaded, printed = loaded_after(code, *args)
    code, *lines = printed.splitlines()
    assert code == "2" and len(lines) == 1 and message in lines[0], printed
    assert not loaded & set(FRAMEWORKS), loaded
