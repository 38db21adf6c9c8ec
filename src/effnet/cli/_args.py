"""argparse types shared by the subcommands: a bad number is a usage error naming the value, before any work."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable


def _number(text: str, parse: Callable[[str], float], ok: Callable[[float], bool], expected: str):
    """`parse(text)` when it is finite and `ok`; else the usage error "expected {expected}, got ..." (an integer
    out of range is named by its value, anything else by the text given)."""
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value if isinstance(value, int) else repr(text)}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v > 0, "a positive integer")


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: v > 0, "a finite positive number")


def finite_float(text: str) -> float:
    return _number(text, float, lambda v: True, "a finite number")


def pixels(text: str) -> int:
    """An input size in pixels, in the range the trainer accepts (`effnet.train.config.check_resolution`)."""
    from effnet.train.config import MAX_RESOLUTION, MIN_RESOLUTION

    return _number(text, int, lambda v: MIN_RESOLUTION <= v <= MAX_RESOLUTION,
                   f"an integer number of pixels in [{MIN_RESOLUTION}, {MAX_RESOLUTION}]")


def fraction(text: str) -> float:
    """A number in (0, 1], e.g. a crop fraction."""
    return _number(text, float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def int_list(text: str, what: str = "integers") -> list[int]:
    """Integers separated by commas, e.g. 1,32 (`what` names them in the error)."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what} such as 1,2; got {text!r}") from None


_MAC_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def _with_unit(text: str, units: dict[str, float]) -> float:
    stripped = text.strip()
    unit = next((u for u in sorted(units, key=len, reverse=True) if u and stripped.upper().endswith(u.upper())), "")
    if unit not in units:
        raise ValueError(text)
    return float(stripped[: len(stripped) - len(unit)]) * units[unit]


def macs(text: str) -> float:
    """A MACs count with an optional unit: 1.8G, 600M, 1.8e9."""
    return _number(text, lambda t: _with_unit(t, _MAC_UNITS), lambda v: v > 0,
                   "a MACs count > 0 such as 1.8G, 600M or 1.8e9")


def seconds(text: str) -> float:
    """A time with a unit: 25ms, 0.1s, 800us."""
    return _number(text, lambda t: _with_unit(t, _TIME_UNITS), lambda v: v > 0,
                   "a time with a unit > 0 such as 25ms, 0.1s or 800us")


UNTIL_HELP = ("start no new run after TIME, nor one that the finished runs' times say would end after it; runs "
              "under way finish, and the same command continues later. TIME: HH:MM (the next such local time), "
              "an ISO date-time (2026-12-03T18:40, local unless it names its offset) or +DURATION (+90m, +2h30m)")


def deadline(text: str, now: float | None = None) -> float:
    """--until: a time, in seconds since the epoch: HH:MM[:SS] (the next such local time), an ISO date-time (local
    unless it names its offset), +DURATION in h/m/s (+90m, +2h30m, +45s), or @SECONDS since the epoch (what a
    parent passes its worker processes, taken as it is even when it has passed)."""
    import datetime as dt
    import re
    import time

    now = time.time() if now is None else now
    stripped = text.strip()
    if stripped.startswith("@"):
        return _number(stripped[1:], float, lambda v: True, "@SECONDS since the epoch")
    expected = "expected HH:MM, an ISO date-time such as 2026-12-03T18:40, or +DURATION such as +90m or +2h30m"
    if stripped.startswith("+"):
        match = re.fullmatch(r"\+(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", stripped)
        if match is None or not any(match.groups()):
            raise argparse.ArgumentTypeError(f"{expected}; got {text!r}")
        hours, minutes, secs = (float(g or 0) for g in match.groups())
        if 3600 * hours + 60 * minutes + secs <= 0:
            raise argparse.ArgumentTypeError(f"got {text!r}, a duration of zero: no run could start; give a longer one")
        return now + 3600 * hours + 60 * minutes + secs
    clock = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", stripped)
    try:
        if clock:
            today = dt.datetime.fromtimestamp(now)
            at = today.replace(hour=int(clock[1]), minute=int(clock[2]), second=int(clock[3] or 0), microsecond=0)
            if at.timestamp() <= now:
                at += dt.timedelta(days=1)
            return at.timestamp()
        at = dt.datetime.fromisoformat(stripped)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{expected}; got {text!r}") from None
    if at.timestamp() <= now:
        raise argparse.ArgumentTypeError(f"got {text!r}, which has passed; give a later time")
    return at.timestamp()


def check_output_file(path: str, flag: str = "-o/--output", suffixes: tuple[str, ...] = ()) -> None:
    """An output file's place, checked before any work (`effnet.files.output_problem`); the error names `flag`."""
    from effnet.errors import EffnetError
    from effnet.files import checked_output

    checked_output(path, EffnetError, suffixes, name=f"{flag} {path}")


def _now() -> float:
    return time.monotonic()


def progress_line(prefix: str, unit: str, every_s: float = 2.0) -> Callable[[int, int], None]:
    """A `progress(done, total)` for long work that prints `PREFIX: done of total UNIT, elapsed (time left)` on
    stderr, at most every `every_s` seconds, and at the end once a line was printed (quick work stays quiet)."""
    import sys

    from effnet.report import format_duration

    start = last = _now()
    printed = False

    def show(done: int, total: int) -> None:
        nonlocal last, printed
        now = _now()
        if done <= 0 or (now - last < every_s and not (done >= total and printed)):
            return
        last, printed = now, True
        left = (now - start) / done * (total - done)
        print(f"{prefix}: {done:,} of {total:,} {unit}, {format_duration(now - start)} ({format_duration(left)} "
              "left)", file=sys.stderr, flush=True)

    return show


def flags_apply_only(flags: list[str]) -> str:
    """"--a applies only" / "--a and --b apply only": the start of a line about flags given without their context."""
    named = flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} and {flags[-1]}"
    return f"{named} {'applies' if len(flags) == 1 else 'apply'} only"


def option_defaults(parser: argparse.ArgumentParser) -> dict[str, tuple[str, object]]:
    """dest → (its longest option string, its default) for every option of `parser`: record it with
    `parser.set_defaults(option_defaults=...)` once every option is added, for `given_flags`."""
    out: dict[str, tuple[str, object]] = {}
    for action in parser._actions:
        if action.option_strings and action.default is not argparse.SUPPRESS and action.dest != "help":
            out.setdefault(action.dest, (max(action.option_strings, key=len), action.default))
    return out


def given_flags(args: argparse.Namespace, dests: set[str] | None = None, *, but: set[str] = frozenset()) -> list[str]:
    """The options given a value other than their default (those of `dests`, or all but `but`), as flags, in the
    order the parser has them; the parser recorded its defaults with `option_defaults`."""
    return [flag for dest, (flag, default) in args.option_defaults.items()
            if (dests is None or dest in dests) and dest not in but and getattr(args, dest, default) != default]


def it_or_them(items: list) -> str:
    return "it" if len(items) == 1 else "them"


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
