"""Ctrl-C (and SIGTERM, which the command line turns into it) held back while a framework runs.

Python raises KeyboardInterrupt wherever the main thread happens to be, and that can be Python
code a framework's C++ calls back: TensorFlow's op dispatch asking a `TensorShape` its length.
There the exception was lost (a `convnet predict` sent SIGTERM ran on to its end and exited 0, 1
time in 25), or corrupted TensorFlow's heap (`free(): invalid next size`, SIGABRT, 1 in 60).
Inside `Deferred`, the signal only sets a flag, and the interrupt is raised where convnet's own
code stands: at `check()`, and at the block's end.
"""

from __future__ import annotations

import contextlib
import signal


class Deferred(contextlib.ContextDecorator):
    """Holds SIGINT back until `check()` or the end of the block: a context manager, or a
    decorator whose function is the block.

    A second SIGINT raises at once (a user who insists). Off the main thread, or where SIGINT
    has no Python handler (ignored, or the OS default), the block runs as it would without it.

    Example:
        >>> with Deferred() as interrupt:
        ...     for batch in batches:
        ...         model.predict(batch)
        ...         interrupt.check()
    """

    def __enter__(self):
        self.requested = False  # a SIGINT came
        self._raised = False  # and a KeyboardInterrupt was raised for it
        self._previous = signal.getsignal(signal.SIGINT)
        self._installed = False
        if callable(self._previous):
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(signal.SIGINT, self._on_sigint)
                self._installed = True
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if not self._installed:
            return
        signal.signal(signal.SIGINT, self._previous)
        if self.requested and not self._raised and error_type is None:
            self._previous(signal.SIGINT, None)  # what the signal would have done

    def _on_sigint(self, signum, frame) -> None:
        if self.requested:
            self.check()
        self.requested = True

    def check(self) -> None:
        """Raises KeyboardInterrupt if SIGINT came since the block began."""
        if self.requested:
            self._raised = True
            raise KeyboardInterrupt
