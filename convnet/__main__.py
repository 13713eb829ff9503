"""`python -m convnet`: the `convnet` command, where its script is not on PATH."""

from convnet.cli import run

run()
