"""The `convnet` command: argparse subcommands -> config -> convnet.api. No logic of its own."""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing

from convnet import api
from convnet.config import TrainConfig, config_fields, load_config
from convnet.errors import ConvnetError
from convnet.models.registry import Recipe


def _flag_type(field) -> type:
    hints = typing.get_type_hints(TrainConfig) | typing.get_type_hints(Recipe)
    hint = hints[field.name]
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return next(k for k in kinds if k is not type(None))


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config and recipe field, kebab-case; only flags given are applied."""
    parser.add_argument("--config", help="YAML file of settings (flags override it)")
    for field in config_fields():
        kind = _flag_type(field)
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help") or f"recipe: {field.name} (default: the preset's)"
        if kind is bool:
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag,
                type=kind,
                default=argparse.SUPPRESS,
                help=help_text,
                metavar=field.name.upper(),
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convnet", description=__doc__.split(":")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a preset and write a run folder")
    train.set_defaults(handler=_train)
    _add_config_flags(train)
    train.add_argument("--json", action="store_true", help="print one JSON document")

    evaluate = commands.add_parser("evaluate", help="test loss and accuracy of a run")
    evaluate.set_defaults(handler=_evaluate)
    evaluate.add_argument("run")
    evaluate.add_argument("--test", help="another test set (default: the run's own)")
    evaluate.add_argument("--json", action="store_true")

    predict = commands.add_parser("predict", help="classify images, .npy or CSV files")
    predict.set_defaults(handler=_predict)
    predict.add_argument("run")
    predict.add_argument("files", nargs="+")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--json", action="store_true")

    summary = commands.add_parser("summary", help="print a preset's layers")
    summary.set_defaults(handler=lambda args: print(api.summary(args.preset), end=""))
    summary.add_argument("preset")

    presets = commands.add_parser("presets", help="list the presets")
    presets.set_defaults(handler=_presets)
    fetch = commands.add_parser("fetch", help="make sure Fashion-MNIST is on this machine")
    fetch.set_defaults(handler=lambda args: print(f"Fashion-MNIST: {api.fetch(args.data_dir)}"))
    fetch.add_argument("--data-dir")
    return parser


def _train(args) -> None:
    flags = {
        k: v for k, v in vars(args).items() if k not in {"command", "config", "json", "handler"}
    }
    config = load_config(args.config, flags)
    verbose = 2 if args.json or not sys.stdout.isatty() else 1
    result = api.train(config, command=sys.argv, verbose=0 if args.json else verbose)
    if args.json:
        print(
            json.dumps(
                {
                    "run": str(result.run),
                    "test_loss": result.test_loss,
                    "test_accuracy": result.test_accuracy,
                    "wall_seconds": result.wall_seconds,
                }
            )
        )
    else:
        print(
            f"test loss {result.test_loss:.4f}, test accuracy {result.test_accuracy:.4f}, "
            f"{result.wall_seconds:.1f} s"
        )
        print(f"run folder: {result.run}")


def _evaluate(args) -> None:
    metrics = api.evaluate(args.run, args.test)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(
            f"test loss {metrics['test_loss']:.4f}, test accuracy {metrics['test_accuracy']:.4f} "
            f"on {metrics['test_examples']} examples of {metrics['test_data']}"
        )


def _predict(args) -> None:
    results = api.predict(args.run, args.files, top_k=args.top_k)
    if args.json:
        print(json.dumps(results))
        return
    for result in results:
        others = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in result["top"][1:])
        print(
            f"{result['file']}: {result['class']} {result['probability']:.3f}"
            + (f"  ({others})" if others else "")
        )


def _presets(args) -> None:
    from convnet.models.registry import get_preset

    for name in api.list_presets():
        print(f"{name:10s} {get_preset(name).description}")


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand. Returns the exit code: 0, 2 for a user error, 130 when interrupted."""
    args = _parser().parse_args(argv)
    try:
        args.handler(args)
    except ConvnetError as error:
        print(f"convnet: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convnet: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
