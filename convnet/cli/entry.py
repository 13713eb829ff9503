"""The console script: parses the command line, runs one command, and turns its errors and
signals into one line and an exit code.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import warnings
from typing import NoReturn

from convnet import framework
from convnet.cli.parser import build_parser
from convnet.errors import ConvnetError, ConvnetWarning, on_the_command_line

_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """convnet's own warnings as one line, `convnet: warning: ...`; others as Python shows them."""
    if issubclass(category, ConvnetWarning):
        print(f"convnet: warning: {message}", file=sys.stderr, flush=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


class _TerminateAsInterrupt:
    """While in effect, SIGTERM (`kill`, a container or a scheduler stopping the command) does
    what Ctrl-C does: it runs SIGINT's handler, so the cleanup written for Ctrl-C runs (temporary
    files removed, a training run left "interrupted" and resumable), where the default action
    ends the process on the spot. During `fit` that handler stops at the next batch
    (`StopOnInterrupt`), while a model predicts once its call returns (`convnet.interrupts`);
    elsewhere it raises KeyboardInterrupt in the main thread.

    Where Python cannot raise, in a garbage collector's or a weak reference's callback or a
    `__del__`, it prints the KeyboardInterrupt and drops it, and the command ran on to its end:
    JAX registers a collector callback, and TensorFlow imports JAX where it is installed. Such a
    KeyboardInterrupt reaches `sys.unraisablehook`, and the signal is sent again 50 ms later,
    once the callback is done."""

    received = False
    _installed = False

    def __enter__(self):
        with contextlib.suppress(ValueError):  # not the main thread: signals are not ours
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
            self._previous_hook, sys.unraisablehook = sys.unraisablehook, self._on_unraisable
        return self

    def __exit__(self, *exc_info) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)
            sys.unraisablehook = self._previous_hook

    def _on_sigterm(self, signum, frame) -> None:
        self.received = True
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):  # SIGINT ignored (started in the background): stop anyway
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    def _on_unraisable(self, unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            self._previous_hook(unraisable)
            return
        signum = signal.SIGTERM if self.received else signal.SIGINT
        threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand. Returns the exit code: 0, 1 when some inputs failed (predict), 2 for
    a user error, 130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM: 128 + 15, as if
    the signal had ended the process, but after the same cleanup as Ctrl-C)."""
    args = build_parser().parse_args(argv)
    framework.quiet(False if args.verbose else None)  # None: TF_CPP_MIN_LOG_LEVEL=0 shows too
    framework.lean()
    terminate = _TerminateAsInterrupt()
    try:
        with warnings.catch_warnings(), terminate, on_the_command_line():
            warnings.simplefilter("always", ConvnetWarning)
            warnings.showwarning = _show_warning
            code = args.handler(args)  # None, or 1 when some of the work failed (predict)
    except ConvnetError as error:
        print(f"convnet: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout's reader has what it wanted (`| head`): end as Unix tools do
        with contextlib.suppress(OSError):  # and nothing more to flush into the closed pipe
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as interrupt:
        stopped = "terminated" if terminate.received else "interrupted"
        print(f"convnet: {str(interrupt) or stopped}", file=sys.stderr)
        return 143 if terminate.received else 130
    return code or 0


def run() -> NoReturn:
    """The console script: `main`, then an exit that skips the interpreter's teardown once a
    framework is loaded, which took TensorFlow 1.3 s and more after all the work was written
    (docs/benchmarks.md, bench.peer). Threads still running are waited for and atexit handlers
    run, as in a normal exit: only the freeing of modules and of C++ objects is left to the OS.
    """
    code = main()
    if not any(framework in sys.modules for framework in ("tensorflow", "jax", "torch")):
        sys.exit(code)
    # What the interpreter's exit does first: stop the idle workers of thread pools (MLflow's
    # artifact uploads), which a join alone would wait on for ever, then wait for every other
    # thread still running (the parse cache's writer, say).
    threading._shutdown()
    atexit._run_exitfuncs()
    with contextlib.suppress(OSError, ValueError):  # a reader that went away; a closed stream
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
