"""The training feed, the epoch clock and the compute precision."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import make_images

from convnet.data.dataset import Dataset
from convnet.machine import cpu_flags
from convnet.models.precision import (
    BFLOAT16_CPU_FLAGS,
    Accelerator,
    choose_precision,
    find_accelerator,
)
from convnet.models.registry import get_preset
from convnet.training import feed
from convnet.training.callbacks import EpochTimer


def numbered(n: int) -> Dataset:
    """Images whose first pixel is their index, so a batch says which examples it holds."""
    x = np.zeros((n, 4, 4, 1), np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    return Dataset(x, np.arange(n) % 3, ("a", "b", "c"), "numbered")


FEEDS = {"tf.data": feed._tf_batches, "numpy": feed.EpochBatches}


def batch_stream(kind: str, data: Dataset, batch_size: int, shuffle_seed=None, first_epoch=0):
    """An iterator over the feed `kind` makes, as Keras reads it."""
    made = FEEDS[kind](data, batch_size, shuffle_seed, first_epoch)
    if kind == "numpy":
        return (made[i] for i in itertools.count())
    return iter(made)


def passes(kind: str, data: Dataset, batch_size: int, count: int, **kwargs) -> list[list[int]]:
    stream = batch_stream(kind, data, batch_size, **kwargs)
    steps = feed.epoch_steps(len(data), batch_size)
    out = []
    for _ in range(count):
        indices = []
        for _ in range(steps):
            x, y = next(stream)
            assert x.dtype == "uint8" and y.shape[1] == 3  # pixels stay uint8; labels one-hot
            indices += np.asarray(x)[:, 0, 0, 0].tolist()
        out.append(indices)
    return out


@pytest.mark.parametrize("kind", FEEDS)
def test_each_pass_is_one_epoch_of_every_example_reshuffled(kind):
    first, second = passes(kind, numbered(50), 16, 2, shuffle_seed=7)
    assert sorted(first) == sorted(second) == list(range(50))  # 16+16+16+2: a partial last batch
    assert first != second != list(range(50))
    assert passes(kind, numbered(50), 16, 2, shuffle_seed=7) == [first, second]  # seeded
    # A run resumed at its second epoch sees the order an uninterrupted run saw.
    assert passes(kind, numbered(50), 16, 1, shuffle_seed=7, first_epoch=1) == [second]


@pytest.mark.parametrize("kind", FEEDS)
def test_every_iterator_over_a_feed_gives_the_same_order(kind):
    """Keras' JAX trainer takes a batch from one iterator, then trains from a new one."""
    first = batch_stream(kind, numbered(50), 16, shuffle_seed=7, first_epoch=1)
    for _ in range(5):
        next(first)
    again = next(batch_stream(kind, numbered(50), 16, shuffle_seed=7, first_epoch=1))
    assert (
        np.asarray(again[0])[:, 0, 0, 0].tolist()
        == (passes(kind, numbered(50), 16, 2, shuffle_seed=7)[1][:16])
    )


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="the jax extra is missing")
@pytest.mark.trains
def test_best_trains_and_predicts_jitted_on_jax(tmp_path):
    """RandomTranslation says it cannot be jitted (TensorFlow's kernel); on JAX it can. The copy
    a run saves, and the model loaded from it, predicted op by op on JAX before: 142 XLA
    compilations in a small training instead of 32."""
    script = (
        "import sys\n"
        "from convnet.models.factory import create_model, load_model, portable_model\n"
        "from convnet.models.registry import get_preset\n"
        "from convnet.training.keras_recipe import compile_for_training\n"
        "model = create_model('best', (28, 28, 1), 10, 'float32')\n"
        "compile_for_training(model, get_preset('best').recipe, 1e-3)\n"
        "saved = portable_model(model)\n"
        "saved.save(sys.argv[1])\n"
        "print(model.jit_compile, saved.jit_compile, load_model(sys.argv[1]).jit_compile)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model.keras")],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True"]


@pytest.mark.parametrize("kind", FEEDS)
def test_unshuffled_passes_keep_the_order(kind):
    assert passes(kind, numbered(20), 8, 2) == [list(range(20))] * 2


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
    ("flags", "backend", "expected"),
    [
        ("fpu sse avx512f amx_bf16 amx_tile", "tensorflow", "mixed_bfloat16"),
        ("fpu avx512f avx512_bf16", "tensorflow", "mixed_bfloat16"),
        ("fpu sse avx2 avx512f", "tensorflow", "float32"),
        ("fpu avx512f avx512_bf16", "jax", "float32"),
        ("fpu avx512f avx512_bf16", "torch", "float32"),
    ],
)
def test_auto_precision_on_a_cpu_follows_its_flags(tmp_path, flags, backend, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    found = cpu_flags(cpuinfo)
    assert choose_precision("auto", backend, None, found) == expected
    assert choose_precision("float32", backend, None, found) == "float32"
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ((9, 0), "mixed_bfloat16"),
        ((8, 6), "mixed_bfloat16"),
        ((7, 5), "mixed_float16"),
        ((7, 0), "mixed_float16"),
        ((6, 1), "float32"),
        (None, "float32"),
    ],
)
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_auto_precision_on_a_gpu_follows_its_compute_capability(backend, capability, expected):
    gpu = Accelerator("NVIDIA (faked)", capability)
    assert choose_precision("auto", backend, gpu, {"avx512_bf16"}) == expected


def test_auto_precision_asks_the_backend_for_its_gpu(monkeypatch):
    from convnet.models import precision

    monkeypatch.setattr(precision, "find_accelerator", lambda backend: Accelerator("A100", (8, 0)))
    assert precision.resolve_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(precision, "find_accelerator", lambda backend: Accelerator("T4", (7, 5)))
    assert precision.resolve_precision("auto") == "mixed_float16"
    assert find_accelerator(keras.backend.backend()) is None  # this machine has no GPU


def test_mixed_float16_compiles_with_loss_scaling():
    from convnet.models.factory import create_model
    from convnet.training.keras_recipe import compile_for_training

    model = create_model("fast", precision="mixed_float16")
    compile_for_training(model, get_preset("fast").recipe, 1e-3)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


needs_bfloat16 = pytest.mark.skipif(
    not cpu_flags() & BFLOAT16_CPU_FLAGS,
    reason="this CPU has neither AMX nor AVX-512 BF16 (/proc/cpuinfo flags amx_bf16, "
    "avx512_bf16): TensorFlow has no native bfloat16 kernels here to train with",
)


@needs_bfloat16
@pytest.mark.trains
def test_mixed_bfloat16_trains_end_to_end_and_saves_a_float32_model(tmp_path, tiny_npz):
    import convnet

    seen = {}

    class Precision(keras.callbacks.Callback):
        """What the model computes in and keeps its weights in, during fit."""

        def on_train_batch_end(self, batch, logs=None):
            *body, head = [layer for layer in self.model.layers if layer.weights]
            seen.setdefault("body", {layer.dtype_policy.name for layer in body})
            seen.setdefault("head", head.dtype_policy.name)
            seen.setdefault("weights", {v.dtype for v in self.model.weights})

    run = convnet.train(
        train=str(tiny_npz),
        preset="fast",
        precision="mixed_bfloat16",
        epochs=2,
        batch_size=64,
        out=str(tmp_path / "run"),
        verbose=0,
        callbacks=[Precision()],
    )
    assert seen == {"body": {"mixed_bfloat16"}, "head": "float32", "weights": {"float32"}}
    assert json.loads((run.run / "manifest.json").read_text())["precision"] == "mixed_bfloat16"
    assert run.test_accuracy > 0.9  # it learnt: four bar classes are easy

    # Saved as float32: the weights, the compute, and what it answers, with bare Keras.
    saved = keras.saving.load_model(run.run / "model.keras")
    assert {weight.dtype for weight in saved.weights} == {"float32"}
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    x = make_images(32, seed=4).x
    probabilities = saved.predict(x, verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, run.predict(x), atol=1e-6)


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


@pytest.mark.trains
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
    assert batches == [0, 1, 2]  # batch 3 never began
    assert int(model.optimizer.iterations) == 3  # and batch 2 finished: its step was taken


@pytest.mark.trains
def test_a_users_own_callbacks_run_in_fit(tmp_path, tiny_npz):
    import convnet

    class Recorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append((epoch, set(logs)))

    recorder = Recorder()
    result = convnet.train(
        train=str(tiny_npz), epochs=2, out=str(tmp_path / "run"), verbose=0, callbacks=[recorder]
    )
    assert [epoch for epoch, _ in recorder.epochs] == [0, 1]
    # After convnet's own callbacks: the epoch's timings are in the logs it sees.
    assert {"val_accuracy", "elapsed_seconds"} <= recorder.epochs[0][1]
    metrics = json.loads((result.run / "metrics.json").read_text())
    assert metrics["parameters"] == convnet.create_model("seed", (28, 28, 1), 4).count_params()


@pytest.mark.parametrize(
    ("labels", "train", "val", "warned"),
    [
        ([0, 1, 2, 3] * 10, 0.9, 0.26, True),  # chance 0.25: learnt, and nothing carried over
        ([0, 1, 2, 3] * 10, 0.9, 0.7, False),  # it carried over
        ([0, 1, 2, 3] * 10, 0.3, 0.25, False),  # nothing learnt yet: under-training says so
        ([0] * 9 + [1], 1.0, 0.0, False),  # 10 images: accuracy moves in steps of 10%
        ([2] * 40, 1.0, 0.0, False),  # one class: no room above chance, which is 1
    ],
)
def test_the_near_chance_warning_needs_a_validation_set_that_can_tell(labels, train, val, warned):
    import warnings

    from convnet.training.callbacks import ChanceWatch, NearChanceWarning

    watch = ChanceWatch(np.array(labels))
    watch.on_train_begin()
    watch.on_epoch_end(0, {"accuracy": train, "val_accuracy": val})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watch.on_train_end()
    said = [str(w.message) for w in caught if w.category is NearChanceWarning]
    assert len(said) == warned
    if warned:
        assert said[0].startswith(f"validation accuracy {val:.3f} stayed near chance (0.250)")
