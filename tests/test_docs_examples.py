"""The command examples the docs show with their output (`$ effnet models`, `$ effnet scale ...`) print what the docs
say: every output line shown under a command is a line of what it prints today (the tables the docs cut with `...`
are compared line by line, so a changed column or number fails here, not in a reader's hands)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from effnet.cli import main

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/scaling.md")
CHEAP = ("models", "scale", "info")  # no training, no timing: the output is exact on any machine


def _examples() -> list[tuple[str, int, str, list[str]]]:
    """(doc, line, command, shown output lines) of every `$ effnet ...` line in a code block of `DOCS`."""
    found = []
    for doc in DOCS:
        lines = (REPO / doc).read_text().splitlines()
        in_block, current = False, None
        for number, line in enumerate(lines, 1):
            if line.startswith("```"):
                in_block, current = not in_block, None
                continue
            if not in_block:
                continue
            if line.startswith("$ effnet "):
                command = line[2:].split("  #")[0].strip()
                current = (doc, number, command, [])
                found.append(current)
            elif current is not None and line.strip() and line.strip() != "..." and not line.startswith("("):
                current[3].append(line)
    return [e for e in found if shlex.split(e[2])[1] in CHEAP and "--target-latency" not in e[2] and e[3]]


EXAMPLES = _examples()


def test_the_docs_show_examples_with_output():
    assert len(EXAMPLES) >= 6, EXAMPLES


@pytest.mark.parametrize("doc,line,command,shown", EXAMPLES, ids=[f"{e[0]}:{e[1]}" for e in EXAMPLES])
def test_a_documented_example_prints_what_the_docs_show(doc, line, command, shown, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes a file (-o) writes it here
    main(shlex.split(command)[1:])  # an example of a target no model reaches returns 2, as the docs say
    printed = capsys.readouterr()
    actual = {re.sub(r"\s+", " ", text).strip() for text in (printed.out + printed.err).splitlines()}
    missing = [text for text in shown if re.sub(r"\s+", " ", text).strip() not in actual]
    assert not missing, f"{doc}:{line} `{command}` no longer prints: {missing}"
