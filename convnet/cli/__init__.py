"""The `convnet` command: argparse subcommands -> config -> convnet.api. No logic of its own.

`parser` declares the subcommands and their flags (`flags`: those they share), `handlers` runs
each by calling `convnet.api` and printing the result, and `entry` is the console script around
them: `main` returns an exit code, `run` exits with it.
"""

from convnet.cli.entry import main, run

__all__ = ["main", "run"]
