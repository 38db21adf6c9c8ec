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

from effnet.allocator import keep_freed_memory
from effnet.cli.examples import add_examples
from effnet.errors import EffnetError, missing_extra

_COMMANDS = [
    "effnet.cli.models",
    "effnet.cli.demo",
    "effnet.cli.experiments",
    "effnet.cli.search",
    "effnet.cli.weights",
    "effnet.cli.predict",
    "effnet.cli.cam",
    "effnet.cli.bench",
    "effnet.cli.export",
    "effnet.cli.train",
]


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (`effnet scale: error: argument --phi: ...`), exit status 2; the
    subcommands' parsers are of this class too (argparse makes subparsers of the parent's class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")

    def _get_value(self, action: argparse.Action, arg_string: str):
        """No flag or operand of effnet takes an empty string: `--weights ''` or `-o ''` is a shell variable that
        was not set, and falling back to a default (random weights, the current folder) would hide it."""
        if not arg_string.strip() and not isinstance(action, argparse._SubParsersAction):  # (its subcommand's own)
            leave_out = " or leave the option out" if action.option_strings else ""
            raise argparse.ArgumentError(action, f"got an empty value {arg_string!r}; give a value{leave_out}")
        return super()._get_value(action, arg_string)

    _REPEATABLE = (argparse._AppendAction, argparse._AppendConstAction, argparse._CountAction, argparse._ExtendAction)

    def parse_known_args(self, args=None, namespace=None):
        self._given: dict[argparse.Action, str] = {}  # option → its value as written, for this parse
        return super().parse_known_args(args, namespace)

    def _get_values(self, action: argparse.Action, arg_strings: list[str]):
        """An option given twice with different values: the last one counts, as argparse has it (so a script can
        add an override to a common command line), but never silently: a warning names both values."""
        if action.option_strings and not isinstance(action, self._REPEATABLE):
            written = " ".join(arg_strings)
            if action in self._given and self._given[action] != written:
                print(f"{self.prog}: warning: {action.option_strings[-1]} given twice ({self._given[action]}, then "
                      f"{written}); the last one counts", file=sys.stderr)
            self._given[action] = written
        return super()._get_values(action, arg_strings)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="effnet", description="EfficientNet and compound scaling for any ConvNet (Tan & Le, ICML 2019)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS:
        importlib.import_module(module).register(sub)
    add_examples(parser)
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


def _trailing_positional(parser: argparse.ArgumentParser, command: str) -> str | None:
    """The dest of `command`'s list positional (predict's IMAGE_OR_DIR ..., plot's RUN_DIR ...), if it has one."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return next((a.dest for a in sub.choices[command]._actions
                 if not a.option_strings and a.nargs in ("+", "*")), None)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    listed = _trailing_positional(parser, args.command)
    if extra and listed and not any(e.startswith("-") for e in extra):  # files after an option: still files
        setattr(args, listed, [*getattr(args, listed), *extra])
        extra = []
    if extra:  # named by the subcommand, as its other usage errors are
        print(f"effnet {args.command}: error: unrecognized arguments: {' '.join(extra)}; see "
              f"`effnet {args.command} --help`", file=sys.stderr)
        return 2
    try:
        keep_freed_memory()  # models allocate the same blocks call after call: reuse them (effnet.allocator)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning(args.command)
            return int(args.func(args) or 0)
    except EffnetError as exc:
        print(f"effnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        message = missing_extra(exc)
        if message is None:
            raise
        print(f"effnet {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"effnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `effnet ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
