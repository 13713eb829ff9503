"""`make check` runs the tests that train nothing: in its processes, and in every Python process
they start with this folder on PYTHONPATH (so `convnet train` too), Keras' `Model.fit` refuses
to run. A test that reaches it fails, naming the marker it lacks."""

from __future__ import annotations

import importlib.abc
import sys

MESSAGE = (
    "make check runs the tests that train nothing, and this one trains a model: mark it "
    "`@pytest.mark.trains` (tests/conftest.py marks the users of the training fixtures)."
)


class TrainingInCheck(RuntimeError):
    """Raised where a test under `make check` trains."""


def refuse_training(*args, **kwargs):
    raise TrainingInCheck(MESSAGE)


def guard(keras) -> None:
    keras.Model.fit = refuse_training


class _GuardKerasOnImport(importlib.abc.MetaPathFinder):
    """Guards keras once it is imported, leaving every process that never imports it as it was
    (the framework-free commands stay free of it)."""

    def find_spec(self, name, path, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            guard(module)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if "keras" in sys.modules:
        guard(sys.modules["keras"])
    else:
        sys.meta_path.insert(0, _GuardKerasOnImport())


install()
