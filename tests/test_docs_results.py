"""The accuracies README.md and docs/RESULTS.md quote from an experiment are the ones its results.json gives.

A paragraph, list item or table row that names an experiment's folder (`docs/experiments/NAME/...`, usually a link
to its report) quotes numbers that experiment owns.  Every percentage in it (`93.61 ± 0.19%`, `81.7–81.9%`, `32%`)
must be a number of that experiment's report as `effnet experiments` writes it from the results.json files under
its folder today (rounded to the digits quoted), or one that a results.json states at its top level (a target).
A number written by hand and left behind when the experiment ran again fails here.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/RESULTS.md")
EXPERIMENTS = REPO / "docs" / "experiments"

_NAMED = re.compile(r"experiments/([a-z0-9-]+)/")
_NUMBER = r"\d+(?:\.\d+)?"
_PERCENT = re.compile(rf"(?<![\d.\w])({_NUMBER})(?:\s*[–-]\s*({_NUMBER}))?(?:\s*±\s*({_NUMBER}))?\s*%")


def _blocks(text: str) -> list[tuple[int, str]]:
    """(first line, text) of each paragraph, list item and table row outside code blocks."""
    blocks: list[tuple[int, list[str]]] = []
    in_code, current = False, None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_code, current = not in_code, None
            continue
        stripped = line.strip()
        if in_code or not stripped:
            current = None
            continue
        if current is None or stripped.startswith(("- ", "* ", "|")) or current[1][0].startswith("|"):
            current = (number, [stripped])
            blocks.append(current)
        else:
            current[1].append(stripped)
    return [(number, " ".join(lines)) for number, lines in blocks]


def _rendered(results: dict) -> str:
    """The report `effnet experiments` writes from `results` (without its plots)."""
    from effnet.experiments import suite

    name = results.get("experiment")
    if name in suite.MODULES:
        body, _ = suite.module(name).report(results)
        return suite.render_header(results) + "\n" + body
    if name == "cam":
        from effnet.experiments.cam import report

        return report(results)
    if name == "latency":
        from effnet.experiments.latency_report import report

        return report(results)
    raise AssertionError(f"no report is known for experiment {name!r}")


def _stored(results: dict) -> list[float]:
    """The numbers results.json states at its top level (a target such as `target_top1`), not the runs' records."""
    return [float(v) for v in results.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]


@cache
def _numbers(experiment: str) -> tuple[float, ...]:
    """Every number of the reports rendered from the experiment's results.json files, and of their top levels."""
    files = sorted((EXPERIMENTS / experiment).rglob("results.json"))
    assert files, f"docs/experiments/{experiment}/ holds no results.json"
    numbers: list[float] = []
    for path in files:
        results = json.loads(path.read_text())
        numbers += [float(n) for n in re.findall(_NUMBER, _rendered(results))]
        numbers += _stored(results)
    return tuple(numbers)


def _matches(quoted: str, numbers: tuple[float, ...]) -> bool:
    digits = len(quoted.partition(".")[2])
    return any(f"{abs(n):.{digits}f}" == quoted for n in numbers)


def _quotes() -> list[tuple[str, int, tuple[str, ...], str]]:
    """(doc, line, experiments named, quoted number) of every percentage in a block that names an experiment."""
    found = []
    for doc in DOCS:
        for line, block in _blocks((REPO / doc).read_text()):
            named = tuple(sorted({n for n in _NAMED.findall(block) if (EXPERIMENTS / n).is_dir()}))
            if not named:
                continue
            for match in _PERCENT.finditer(block):
                found += [(doc, line, named, q) for q in match.groups() if q is not None]
    return found


QUOTES = _quotes()


def test_the_docs_quote_experiments():
    """The reader above finds the quotes (a change of format would otherwise let every number through)."""
    assert len(QUOTES) >= 20, QUOTES
    transfer = [q for doc, _, named, q in QUOTES if doc == "docs/RESULTS.md" and "transfer" in named]
    assert "93.61" in transfer, transfer


def test_a_number_not_in_the_results_is_caught():
    assert _matches("93.61", _numbers("transfer")) and _matches("93.6", _numbers("transfer"))
    assert not _matches("89.82", _numbers("transfer"))


@pytest.mark.parametrize("doc,line,named,quoted", QUOTES, ids=[f"{q[0]}:{q[1]}:{q[3]}" for q in QUOTES])
def test_a_quoted_accuracy_is_the_one_its_results_give(doc, line, named, quoted):
    numbers = tuple(n for experiment in named for n in _numbers(experiment))
    assert _matches(quoted, numbers), (f"{doc}:{line} quotes {quoted}%, which no report of {', '.join(named)} "
                                       "gives from its results.json")
