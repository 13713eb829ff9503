"""`make check`'s guard: under it, a process that trains fails, naming the marker it lacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import CONVNET

CHECK_MODE = Path(__file__).with_name("check_mode")
FIT = """
import keras, numpy as np
model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
model.compile("sgd", "mse")
model.fit(np.zeros((4, 2)), np.zeros(4), verbose=0)
"""


def test_under_make_check_a_process_that_trains_fails_naming_the_marker(tmp_path):
    env = os.environ | {"PYTHONPATH": str(CHECK_MODE)}
    done = subprocess.run([sys.executable, "-c", FIT], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert "TrainingInCheck: make check runs the tests that train nothing" in done.stderr
    assert "@pytest.mark.trains" in done.stderr
    # Outside it, the same code trains, and a command that never imports Keras is as it was.
    plain = os.environ | {"PYTHONPATH": ""}
    assert subprocess.run([sys.executable, "-c", FIT], env=plain).returncode == 0
    listed = subprocess.run([CONVNET, "presets"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "seed" in listed.stdout
