"""One CLI vocabulary: every subcommand's help ends with examples and documents every flag; the common ideas have
the same flag everywhere (older spellings still parse, hidden)."""

from __future__ import annotations

import argparse

import pytest

from effnet.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, path: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                here = f"{path} {name}".strip()
                yield here, sub
                yield from _parsers(sub, here)


PARSERS = dict(_parsers(build_parser()))


@pytest.mark.parametrize("path", sorted(PARSERS))
def test_help_ends_with_examples_and_every_flag_has_help(path):
    parser = PARSERS[path]
    text = parser.format_help()
    assert "example" in text.split("options:")[-1], f"effnet {path} --help has no example"
    undocumented = [a.option_strings for a in parser._actions
                    if a.option_strings and a.help is None and a.dest != "help"]
    assert not undocumented, f"effnet {path}: flags without help: {undocumented}"


def test_output_files_are_dash_o_output_and_run_folders_out():
    for path, parser in PARSERS.items():
        for action in parser._actions:
            if "-o" in action.option_strings:
                assert "--output" in action.option_strings, (path, action.option_strings)


@pytest.mark.parametrize(("argv", "dest", "value"), [
    (["bench", "efficientnet_b0", "--batch", "4"], "batch", "4"),
    (["bench", "efficientnet_b0", "--batch-size", "4"], "batch", "4"),
    (["scale", "efficientnet_b0", "--batch", "2"], "batch", 2),
    (["scale", "efficientnet_b0", "--batch-size", "2"], "batch", 2),
    (["plot", "runs/x", "--out", "a.png"], "out", "a.png"),
    (["plot", "runs/x", "--output", "a.png"], "out", "a.png"),
    (["search", "coefficients", "--base", "b0", "--loader-workers", "3"], "loader_workers", 3),
    (["search", "coefficients", "--base", "b0", "--workers", "3"], "loader_workers", 3),
])
def test_old_spellings_still_parse(argv, dest, value):
    assert getattr(build_parser().parse_args(argv), dest) == value


def test_hidden_aliases_are_not_in_the_help():
    assert "--loader-workers" not in PARSERS["search coefficients"].format_help()
    assert "--batch " not in PARSERS["bench"].format_help().replace("--batch-size", "")
