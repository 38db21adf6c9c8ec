"""Plain-text and markdown tables, and the JSON form of the same rows: one way to print numbers in a table.

A cell is given as the value itself (a number, a string, None for "no value"), never as text padded by hand:
`format_table` right-aligns the columns whose cells are all numbers (or None), and those it is told to, and
left-aligns the others.  A
column's numbers use the general format of `format_cell` unless `formats` names a format for it, either a format
spec (`".2f"`, `"+.1%"`) or a template with one field (`"{:.2f}%"`, `"{:.2f}x"`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None,
                 formats: Mapping[str, str] | None = None, right: Collection[str] = ()) -> str:
    """Columns padded to their widest cell; numbers right-aligned, text left-aligned (unless its header is in
    `right`, e.g. a column of intervals "80.1 ± 0.4"); None prints as "-"."""
    specs = [(formats or {}).get(h) for h in headers]
    cells = [[format_cell(v, spec) for v, spec in zip(row, specs)] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [h in right or (all(_is_number(row[i]) for row in rows) and bool(rows)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [title] if title else []
    out += [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
                   formats: Mapping[str, str] | None = None) -> str:
    """The same rows as a GitHub markdown table (cells formatted as in `format_table`, not padded)."""
    specs = [(formats or {}).get(h) for h in headers]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(format_cell(v, spec) for v, spec in zip(row, specs)) + " |" for row in rows]
    return "\n".join(out)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) or value is None


def format_cell(value: Any, spec: str | None = None) -> str:
    """One cell: "-" for None; a number by `spec` (a format spec, or a template such as "{:.2f}%"), else floats
    with three significant digits (thousands and up as whole numbers with separators) and ints with separators;
    anything else as `str`."""
    if value is None:
        return "-"
    if not _is_number(value):
        return str(value)
    if spec is not None:
        return spec.format(value) if "{" in spec else format(value, spec)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}"


def format_duration(seconds: float) -> str:
    """A wall time for a progress line or an ETA: `42s`, `3m07s`, `2h05m`."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def format_local_time(seconds_since_epoch: float) -> str:
    """A moment as local date and time to the minute, e.g. 2026-12-03 18:40."""
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds_since_epoch))


def to_json(rows: Any) -> str:
    return json.dumps(rows, indent=2)


__all__ = ["format_cell", "format_duration", "format_local_time", "format_table", "markdown_table", "to_json"]
