"""`python -m convnet.cli`: the `convnet` command."""

from convnet.cli.entry import run

if __name__ == "__main__":
    run()
