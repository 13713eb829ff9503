"""convnet: train, evaluate and serve Keras convolutional networks for image classification.

The public API is re-exported lazily: `import convnet` imports no framework, and each function
imports what it needs when it is called.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "train": "convnet.api",
    "evaluate": "convnet.api",
    "predict": "convnet.api",
    "predict_files": "convnet.api",
    "summary": "convnet.api",
    "fetch": "convnet.api",
    "export_csv": "convnet.api",
    "report": "convnet.api",
    "compare": "convnet.api",
    "lr_find": "convnet.api",
    "tune": "convnet.api",
    "export": "convnet.api",
    "serve": "convnet.api",
    "create_model": "convnet.api",
    "presets": "convnet.api",
    "list_presets": "convnet.models.registry",
    "register_preset": "convnet.models.registry",
    "load_config": "convnet.config",
    "TrainConfig": "convnet.config",
    "Run": "convnet.run",
    "load": "convnet.run",
    "Recipe": "convnet.models.recipe",
}
_RENAMED = {"load_dataset": ("convnet.data", "load_source")}

__all__ = sorted([*_EXPORTS, *_RENAMED])


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _RENAMED:
        module, attribute = _RENAMED[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'convnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
