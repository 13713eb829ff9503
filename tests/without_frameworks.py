"""Runs `convnet` commands with some frameworks made unimportable, as if not installed.

    python tests/without_frameworks.py tensorflow,torch -- train --backend jax ... [-- evaluate ...]

The commands run one after the other in this process, as `convnet.cli.main` runs them; after
each, a line `--- exit N ---` on stdout ends its output. A real import of a blocked package raises
ModuleNotFoundError, so a stray `import tensorflow` in a JAX process fails the command. Probes by
`importlib.util.find_spec` are let through (torch's dynamo asks whether TensorFlow is installed
while Keras imports; it is, on this machine). Test code, kept out of convnet itself.
"""

import sys

END = "--- exit {} ---"


class Blocker:
    def __init__(self, names: set[str]):
        self.names = names
        self.asked: set[str] = set()  # the blocked packages something tried to import

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in self.names:
            return None
        if sys._getframe(2).f_code.co_name == "find_spec":  # importlib.util.find_spec
            return None
        self.asked.add(name.partition(".")[0])
        raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)


def commands(args: list[str]) -> list[list[str]]:
    """`-- a b -- c d` as [[a, b], [c, d]]."""
    assert args and args[0] == "--"
    found = []
    for arg in args:
        if arg == "--":
            found.append([])
        else:
            found[-1].append(arg)
    return found


if __name__ == "__main__":
    blocked, *args = sys.argv[1:]
    blocker = Blocker(set(blocked.split(",")))
    sys.meta_path.insert(0, blocker)
    from convnet.cli import main

    codes = []
    for command in commands(args):
        codes.append(main(command))
        print(END.format(codes[-1]), flush=True)
    print(f"blocked frameworks asked for: {sorted(blocker.asked)}", file=sys.stderr)
    loaded = sorted(n for n in blocked.split(",") if n in sys.modules)
    print(f"blocked frameworks loaded: {loaded}", file=sys.stderr)
    sys.exit(max(codes))
