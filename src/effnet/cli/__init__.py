"""`effnet`: one command, one subcommand per workflow. Thin: parse, call the library, print.

Each module in `_COMMANDS` defines `register(subparsers)`, which adds its subcommand(s) and sets `func` to a
function taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from effnet.errors import EffnetError

_COMMANDS = [
    "effnet.cli.models",
    "effnet.cli.demo",
    "effnet.cli.experiments",
    "effnet.cli.search",
    "effnet.cli.weights",
    "effnet.cli.predict",
    "effnet.cli.bench",
    "effnet.cli.export",
    "effnet.cli.train",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effnet", description="EfficientNet and compound scaling for any ConvNet (Tan & Le, ICML 2019)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def _show_warning(command: str):
    """effnet's own warnings as one line (`effnet scale: warning: ...`); other libraries' as Python prints them."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if f"{os.sep}effnet{os.sep}" in filename:
            print(f"effnet {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning(args.command)
            return int(args.func(args) or 0)
    except EffnetError as exc:
        print(f"effnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"effnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `effnet ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
