"""The training feed, the epoch clock and the compute precision."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from convnet.data.dataset import Dataset
from convnet.models.registry import resolve_precision
from convnet.training.callbacks import EpochTimer
from convnet.training.trainer import batches


def numbered(n: int) -> Dataset:
    """Images whose first pixel is their index, so a batch says which examples it holds."""
    x = np.zeros((n, 4, 4, 1), np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    return Dataset(x, np.arange(n) % 3, ("a", "b", "c"), "numbered")


def passes(data: Dataset, batch_size: int, count: int, **kwargs) -> list[list[int]]:
    feed, steps = batches(data, batch_size, **kwargs)
    it = iter(feed)
    out = []
    for _ in range(count):
        indices = []
        for _ in range(steps):
            x, y = next(it)
            assert x.dtype == "uint8" and y.shape[1] == 3  # pixels stay uint8; labels one-hot
            indices += x.numpy()[:, 0, 0, 0].tolist()
        out.append(indices)
    return out


def test_each_pass_is_one_epoch_of_every_example_reshuffled():
    first, second = passes(numbered(50), 16, 2, shuffle_seed=7)
    assert sorted(first) == sorted(second) == list(range(50))  # 16+16+16+2: a partial last batch
    assert first != second != list(range(50))
    assert passes(numbered(50), 16, 2, shuffle_seed=7) == [first, second]  # the seed repeats it
    # A run resumed at its second epoch sees the order an uninterrupted run saw.
    assert passes(numbered(50), 16, 1, shuffle_seed=7, first_epoch=1) == [second]


def test_every_iterator_over_a_feed_gives_the_same_order():
    """Keras' JAX trainer takes a batch from one iterator, then trains from a new one."""
    feed, _ = batches(numbered(50), 16, shuffle_seed=7, first_epoch=1)
    first = iter(feed)
    for _ in range(5):
        next(first)
    again = [int(i) for i in next(iter(feed))[0].numpy()[:, 0, 0, 0]]
    assert again == passes(numbered(50), 16, 2, shuffle_seed=7)[1][:16]


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="the jax extra is missing")
def test_best_trains_jitted_on_jax():
    """RandomTranslation says it cannot be jitted (TensorFlow's kernel); on JAX it can."""
    script = (
        "from convnet.models.registry import create_model, get_preset\n"
        "from convnet.training.trainer import compile_for_training\n"
        "model = create_model('best', (28, 28, 1), 10, 'float32')\n"
        "compile_for_training(model, get_preset('best').recipe, 1e-3)\n"
        "print(model.jit_compile)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]


def test_unshuffled_passes_keep_the_order():
    assert passes(numbered(20), 8, 2) == [list(range(20))] * 2


def test_elapsed_seconds_count_the_time_between_epochs(clock):
    timer = EpochTimer(elapsed=10.0)
    timer.on_train_begin()
    logs = [{}, {}]
    for epoch, log in enumerate(logs):
        timer.on_epoch_begin(epoch)
        clock.now += 3.0
        timer.on_epoch_end(epoch, log)
        clock.now += 1.0  # work between epochs (a backup, say)
    assert [log["epoch_seconds"] for log in logs] == [3.0, 3.0]
    assert [log["elapsed_seconds"] for log in logs] == [13.0, 17.0]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse avx512f amx_bf16 amx_tile", "mixed_bfloat16"),
        ("fpu avx512f avx512_bf16", "mixed_bfloat16"),
        ("fpu sse avx2 avx512f", "float32"),
    ],
)
def test_auto_precision_follows_the_cpu(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert resolve_precision("auto", cpuinfo) == expected
    assert resolve_precision("float32", cpuinfo) == "float32"
    assert resolve_precision("auto", tmp_path / "missing") == "float32"


def test_ctrl_c_in_fit_is_raised_at_the_next_batch_end_and_twice_at_once():
    import os
    import signal

    from convnet.training.callbacks import StopOnInterrupt

    before = signal.getsignal(signal.SIGINT)
    with StopOnInterrupt() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # handled at once: no exception here
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            stop.on_test_batch_end(3)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C does not wait
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_stops_a_real_fit_between_batches():
    import os
    import signal

    import keras

    from convnet.training.callbacks import StopOnInterrupt

    batches = []

    class SendCtrlC(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            batches.append(batch)
            if batch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(KeyboardInterrupt), StopOnInterrupt() as stop:
        model.fit(
            np.ones((40, 3)),
            np.ones((40, 2)),
            batch_size=4,
            verbose=0,
            callbacks=[SendCtrlC(), stop],
        )
    assert batches == [0, 1, 2]  # batch 2 finished, batch 3 never began
