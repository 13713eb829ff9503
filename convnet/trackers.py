"""The experiment trackers a training logs to, and whether this environment has them.

No tracker is imported here: `convnet.api.train` and `convnet tune` refuse one that is not
installed before they read data or import Keras (it took `convnet train --mlflow` 3 s to say so).
"""

from __future__ import annotations

import importlib.util

from convnet.errors import ConfigError, setting

INSTALL = "pip install 'convnet[track]'"
TRACKERS = ("tensorboard", "mlflow")


def not_installed(module: str) -> ConfigError:
    """The error for a tracker asked for (`module`: one of `TRACKERS`) that is not installed."""
    return ConfigError(
        f"{setting(module)} needs {module}, which is not installed; {INSTALL} installs it."
    )


def check_installed(tensorboard: str | None, mlflow: str | None) -> None:
    """Refuses, before any training, a tracker asked for (not None) but not installed.

    Raises:
        ConfigError: naming the extra that installs it.
    """
    for module, asked in (("tensorboard", tensorboard), ("mlflow", mlflow)):
        if asked is not None and importlib.util.find_spec(module) is None:
            raise not_installed(module)
