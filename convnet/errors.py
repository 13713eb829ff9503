"""Errors a user can fix (the CLI prints their message on one line and exits 2), and warnings
(printed as `convnet: warning: ...`; the command goes on).
"""


class ConvnetError(Exception):
    """Base class for every error convnet raises on purpose."""


class DataError(ConvnetError, ValueError):
    """Input data is missing, unreadable or not what was expected."""


class ConfigError(ConvnetError, ValueError):
    """A configuration key or value is unknown or of the wrong type."""


class RunError(ConvnetError):
    """A run folder is missing, incomplete, or cannot be written."""


class DiskFull(RunError):
    """The disk of a run folder filled up; the run is left "interrupted", to resume once space is
    freed."""


class ExportError(ConvnetError):
    """A model could not be exported."""


class BackendError(ConvnetError):
    """The Keras backend asked for cannot be used in this process."""


class ConvnetWarning(UserWarning):
    """Something the user should know that does not stop the command; the CLI prints it as
    `convnet: warning: ...`."""


class DataMismatchWarning(ConvnetWarning):
    """Runs compared side by side were not trained or tested on the same data."""


class UnderTrainingWarning(ConvnetWarning):
    """A run makes fewer optimizer steps than its preset needs to learn
    (`convnet.models.registry.under_training`)."""
