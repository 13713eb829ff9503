"""convnet's plots leave the caller's matplotlib as it was: a notebook's backend, style, interactive
mode and open figures. Checked in a fresh process whose backend is not Agg, as a user's would be."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

PNGS = ("learning_curves.png", "confusion_matrix.png", "reliability.png", "samples.png")

SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    from pathlib import Path

    import matplotlib
    matplotlib.use("svg")  # the user's choice; Agg was what convnet used to force
    import matplotlib.pyplot as plt

    plt.ion()
    plt.rcParams["lines.linewidth"] = 3.5
    mine = plt.figure()  # a figure the user has open

    import optuna
    import convnet
    from convnet.reports.plots import lr_find_plot
    from convnet.tuning.outputs import write_tune_page

    run, folder = Path(sys.argv[1]), Path(sys.argv[2])
    convnet.report(run)
    convnet.compare([run, run], out=folder / "compare.html")
    lr_find_plot(
        {"learning_rates": [1e-4, 1e-3, 1e-2], "losses": [2.0, 1.0, 3.0], "suggested": 1e-3},
        folder / "lr.png",
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    x = optuna.distributions.FloatDistribution(0.0, 1.0)
    for value in (0.1, 0.5, 0.9):  # enough for every view of tune.html
        study.add_trial(optuna.trial.create_trial(
            value=value, params={"x": value, "y": 1 - value}, distributions={"x": x, "y": x}
        ))
    write_tune_page(study, folder, ["val_accuracy"])
    print(json.dumps({
        "backend": matplotlib.get_backend(),
        "figures": plt.get_fignums(),
        "current": plt.gcf() is mine,
        "interactive": matplotlib.is_interactive(),
        "linewidth": plt.rcParams["lines.linewidth"],
        "style": plt.rcParams["axes.facecolor"],
    }))
    """
)


def test_reports_and_tune_pages_leave_the_callers_matplotlib_alone(trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run")
    for name in PNGS:
        (run / "plots" / name).unlink()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(run), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state == {
        "backend": "svg",
        "figures": [1],  # the user's own, still current; none of convnet's left open
        "current": True,
        "interactive": True,
        "linewidth": 3.5,
        "style": "white",  # Optuna's views set the ggplot style sheet (grey axes) for themselves
    }
    assert all((run / "plots" / name).stat().st_size > 1000 for name in PNGS)
    assert (tmp_path / "lr.png").stat().st_size > 1000
    assert "data:image/png;base64," in (tmp_path / "compare.html").read_text()
    assert (tmp_path / "tune.html").read_text().count("data:image/png;base64,") == 3
