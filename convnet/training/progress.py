"""Training progress that renders in a Jupyter notebook and a terminal alike."""

from __future__ import annotations

import keras

from convnet.progress import bar_class, in_kernel


class EpochBars(keras.callbacks.Callback):
    """Shows `fit`'s progress as `verbose` asks, wherever the process runs.

    In a Jupyter kernel, progress bars (`verbose` 1 or "auto") are one tqdm bar per epoch, which
    redraws in place and ends with the epoch's loss and metrics, validation ones too: Keras' own
    bar there is a new output of ANSI escape codes at every update, two per training step.
    Elsewhere, and for `verbose` 0 (nothing) and 2 (one line per epoch), Keras shows it.

    Use it as a context manager around `fit` too, which closes a bar that an error or Ctrl-C
    left open (tqdm would draw the next one below it, with cursor escapes), and pass it to `fit`
    as a callback with `verbose=progress.keras_verbose`.

    Args:
        verbose: 0 silent, 1 or "auto" progress bars, 2 one line per epoch. Defaults to "auto".

    Attributes:
        keras_verbose: the `verbose` for `fit`: 0 where this callback draws the bars.

    Example:
        >>> with EpochBars(verbose) as progress:
        ...     model.fit(x, y, callbacks=[progress], verbose=progress.keras_verbose)
    """

    def __init__(self, verbose: int | str = "auto"):
        super().__init__()
        self.draws = verbose in (1, "auto") and in_kernel()
        self.keras_verbose = 0 if self.draws else verbose
        self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._close()

    def on_train_begin(self, logs=None):
        self._close()
        self._shown = ()

    def on_epoch_begin(self, epoch, logs=None):
        if not self.draws:
            return
        self._close()
        self._bar = bar_class()(
            total=self.params["steps"],
            desc=f"Epoch {epoch + 1}/{self.params['epochs']}",
            unit="step",
        )

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is None:
            return
        self._shown = tuple(logs or ())  # the loss and metrics; the epoch's logs add more
        self._bar.set_postfix(logs or {}, refresh=False)
        self._bar.update(batch + 1 - self._bar.n)

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is None:
            return
        logs = logs or {}
        shown = [*self._shown, *(f"val_{name}" for name in self._shown)]
        self._bar.set_postfix({name: logs[name] for name in shown if name in logs}, refresh=False)
        self._close()

    def on_train_end(self, logs=None):
        self._close()  # an epoch cut short: the time budget, a stop at a batch's end

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
