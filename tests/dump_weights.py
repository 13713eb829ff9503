"""Runs the `convnet` command with each process's final weights saved for the test to compare.

    python tests/dump_weights.py FOLDER train ...   # FOLDER/weights-process<I>.npz

The trainer calls `Context.finish` once `fit` is over, in every process; the wrapper saves the
weights it returns. Test code, kept out of convnet itself.
"""

import sys
from pathlib import Path

import numpy as np

from convnet.cli import main


def _dump_on_finish(folder: Path) -> None:
    from convnet import framework

    framework.load()
    from convnet.training import distributed

    finish = distributed.Context.finish

    def finish_and_dump(self, model):
        model = finish(self, model)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"weights-process{self.process_id}.npz", *model.get_weights())
        return model

    distributed.Context.finish = finish_and_dump


if __name__ == "__main__":
    _dump_on_finish(Path(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
