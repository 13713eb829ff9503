"""Where a streamed run's resident memory goes, stage by stage: `fast` on a doodle folder with
`fit` cut to 5 steps, and each stage's RSS at its end and its peak: the kernel's high-water mark
(VmHWM), reset to the current RSS as each stage begins (`/proc/self/clear_refs`), so no transient
is missed between samples.

    .venv/bin/python -m bench.scale_stages /tmp/convnet-scale/doodles-8GB

`bench.scale` gives the whole run's peak; this says which stage sets it and what each adds, which
is what tells a per-example array from a per-batch one (the folders are `bench.scale`'s).
"""

from __future__ import annotations

import argparse
import functools
import tempfile

STAGES = {
    "convnet.data": ("load_training_data",),
    "convnet.training.trainer": ("calibrate", "predicted_tally", "write_report", "_save_model"),
}


def status_mb(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) // 1024


def reset_peak() -> None:
    """Sets the high-water mark to the current RSS (Linux 4.0 and later)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


class Stages:
    """Each stage's RSS when it ends and the highest RSS while it ran. A stage runs from its
    function's call to its return; the time between stages is a stage of its own."""

    def __init__(self):
        self.peaks, self.after = {}, {}
        self.stage = "start-up"
        reset_peak()

    def begin(self, stage: str) -> None:
        self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), status_mb("VmHWM"))
        self.after[self.stage] = status_mb("VmRSS")
        self.stage = stage
        reset_peak()

    def wrap(self, module, name: str) -> None:
        function = getattr(module, name)

        @functools.wraps(function)
        def staged(*args, **kwargs):
            self.begin(name)
            try:
                return function(*args, **kwargs)
            finally:
                self.begin(f"after {name}")  # until the next stage begins

        setattr(module, name, staged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a doodle folder (bench.doodles)")
    args = parser.parse_args()
    stages = Stages()
    import importlib

    import keras

    fit = keras.Model.fit

    def five_steps(model, *fit_args, **fit_kwargs):
        return fit(model, *fit_args, **(fit_kwargs | {"epochs": 1, "steps_per_epoch": 5}))

    keras.Model.fit = five_steps
    stages.wrap(keras.Model, "fit")
    for module, names in STAGES.items():
        for name in names:
            stages.wrap(importlib.import_module(module), name)
    import convnet

    with tempfile.TemporaryDirectory() as out:
        convnet.train(train=args.folder, preset="fast", out=f"{out}/run", stream=True, verbose=0)
    stages.begin("end")
    print("| stage | RSS MB at its end | peak RSS MB while it ran |\n| --- | --- | --- |")
    for stage, peak in stages.peaks.items():
        print(f"| {stage} | {stages.after[stage]} | {peak} |")


if __name__ == "__main__":
    main()
