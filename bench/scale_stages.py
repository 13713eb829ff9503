"""Where a streamed run's resident memory goes, stage by stage: `fast` on a doodle folder with
`fit` cut to 5 steps, the process's RSS sampled every 50 ms, and the peak of each stage.

    .venv/bin/python -m bench.scale_stages /tmp/convnet-scale/doodles-8GB

`bench.scale` gives the whole run's peak; this says which stage sets it and what each adds, which
is what tells a per-example array from a per-batch one (the folders are `bench.scale`'s).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import threading
import time

STAGES = {
    "convnet.data": ("load_training_data",),
    "convnet.training.trainer": ("calibrate", "predicted_tally", "write_report", "_save_model"),
}


def rss_mb() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) // 1024


class Stages:
    """Each stage's RSS when it ends and the highest RSS seen while it ran."""

    def __init__(self):
        self.stage, self.peaks, self.after = "start-up", {}, {}
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), rss_mb())
            time.sleep(0.05)

    def wrap(self, module, name: str) -> None:
        function = getattr(module, name)

        @functools.wraps(function)
        def staged(*args, **kwargs):
            self.stage = name
            try:
                return function(*args, **kwargs)
            finally:
                self.after[name] = rss_mb()
                self.stage = f"after {name}"  # until the next stage begins

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
    print("| stage | RSS MB at its end | peak RSS MB while it ran |\n| --- | --- | --- |")
    for stage, peak in stages.peaks.items():
        print(f"| {stage} | {stages.after.get(stage, '-')} | {peak} |")


if __name__ == "__main__":
    main()
