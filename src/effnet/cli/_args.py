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
