"""argparse types shared by the subcommands: a bad number is a usage error naming the value, before any work."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def check_output_file(path: str, flag: str = "-o/--output") -> None:
    """An output file's place, checked before any work: its folder exists and it is not itself a folder."""
    from pathlib import Path

    from effnet.errors import EffnetError

    p = Path(path)
    if p.is_dir():
        raise EffnetError(f"{flag} {path}: is a folder; expected a file name (e.g. {p / 'out'}{p.suffix or ''})")
    if not p.parent.is_dir():
        what = "is not a folder" if p.parent.exists() else "does not exist"
        raise EffnetError(f"{flag} {path}: the folder {p.parent} {what}; create it first or choose another path")


def device(text: str) -> str:
    """--device: auto, cpu, cuda or cuda:N; a CUDA device this machine does not have is refused here."""
    import re

    if text in ("auto", "cpu"):
        return text
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected auto, cpu, cuda or cuda:N")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(match.group(1) or 0)
    if index >= count:
        have = f"only {count} CUDA device(s)" if count else "no CUDA GPU"
        raise argparse.ArgumentTypeError(f"got {text!r}, but this machine has {have}; use --device cpu (or auto)")
    return text


def add_data_source(parser: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    """The data source, spelled the same in train, eval and the searches: a positional DATA or `--dataset DATA`."""
    suffix = f" (default {default})" if default else ""
    parser.add_argument("data", nargs="?", default=None, metavar="DATA", help=f"{help}{suffix}; or --dataset DATA")
    parser.add_argument("--dataset", dest="dataset_flag", default=None, metavar="DATA",
                        help="the data source as a flag, the same as the positional DATA")


def data_source(args: argparse.Namespace, default: str | None = None) -> str:
    """The DATA that `add_data_source` parsed: the positional or --dataset (not two different ones), else `default`."""
    from effnet.errors import EffnetError

    given = [v for v in (args.data, args.dataset_flag) if v is not None]
    if len(set(given)) > 1:
        raise EffnetError(f"DATA: got {given[0]!r} and --dataset {given[1]!r}; give the data source once")
    if not given and default is None:
        raise EffnetError("DATA: missing; give 'fashion-mnist' or an image folder, as the positional DATA or "
                          "--dataset DATA")
    return given[0] if given else default
