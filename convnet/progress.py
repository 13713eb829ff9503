"""Progress bars that render in a Jupyter notebook and a terminal alike, for long work: training
(`convnet.training.progress`), the test-time views after it, and prediction over many inputs.
No framework is imported here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys

import tqdm


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel: IPython with a kernel behind its shell."""
    ipython = sys.modules.get("IPython")  # never imported here: a terminal has no need of it
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def bar_class() -> type[tqdm.tqdm]:
    """tqdm's notebook widget in a Jupyter kernel with ipywidgets, else its text bar.

    tqdm.auto would choose alike, but warns in a kernel without ipywidgets; its text bar renders
    there too, redrawn in place with carriage returns.
    """
    if in_kernel() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as notebook_bar

        return notebook_bar
    return tqdm.tqdm


def bar(total: int | None, description: str, verbose: int | str = 1, unit: str = "it"):
    """A progress bar for `total` steps, used as a context manager with `.update(n)`.

    Shown for `verbose` 1 or "auto": in a notebook always, in a terminal when stderr is one (a
    pipe or a log file gets no bar). Otherwise a stand-in that shows nothing.
    """
    if verbose not in (1, "auto"):
        return _Silent()
    disable = False if in_kernel() else None  # tqdm's None: shown only on a terminal
    return bar_class()(total=total, desc=description, unit=unit, disable=disable)


class _Silent(contextlib.nullcontext):
    """A bar that shows nothing."""

    def __init__(self):
        super().__init__(self)  # `with bar(...) as shown` gives the bar itself, as tqdm does

    def update(self, n: int = 1) -> None:
        pass
