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


def test_no_subcommand_shows_a_json_switch_beside_format():
    for path, parser in PARSERS.items():
        flags = {s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}
        assert "--json" not in flags, f"effnet {path}: --json is shown; machine-readable output is --format json"


@pytest.mark.parametrize("argv", [
    ["train", "fashion-mnist"], ["train", "--dataset", "fashion-mnist"],
    ["eval", "runs/x", "fashion-mnist"], ["eval", "runs/x", "--dataset", "fashion-mnist"],
    ["search", "coefficients", "--base", "b0", "fashion-mnist"],
    ["search", "coefficients", "--base", "b0", "--dataset", "fashion-mnist"],
    ["search", "architecture", "fashion-mnist"], ["search", "architecture", "--dataset", "fashion-mnist"],
])
def test_the_data_source_is_the_same_positional_or_flag_everywhere(argv):
    from effnet.cli._args import data_source

    assert data_source(build_parser().parse_args(argv)) == "fashion-mnist"


def test_the_data_source_given_twice_differently_or_not_at_all_is_refused():
    from effnet.cli._args import data_source
    from effnet.errors import EffnetError

    with pytest.raises(EffnetError, match="DATA: got 'fashion-mnist' and --dataset 'photos'"):
        data_source(build_parser().parse_args(["train", "fashion-mnist", "--dataset", "photos"]))
    with pytest.raises(EffnetError, match="DATA: missing"):
        data_source(build_parser().parse_args(["train"]))
    assert data_source(build_parser().parse_args(["search", "architecture"]), "fashion-mnist") == "fashion-mnist"


@pytest.mark.parametrize(("formats", "output", "expected"), [
    (["onnx"], "x.onnx", ("onnx", "table")),
    (["onnx", "json"], "x.bin", ("onnx", "json")),
    (["json"], "x.pt", ("torchscript", "json")),
    ([], "model.XML", ("openvino", "table")),
    (["json", "json"], "x.onnx", ("onnx", "json")),
])
def test_export_format_names_the_file_and_or_the_report(formats, output, expected):
    from effnet.cli.export import _formats

    assert _formats(formats, output) == expected


@pytest.mark.parametrize(("formats", "output", "message"), [
    (["onnx", "torchscript"], "x.onnx", "got onnx and torchscript, expected at most one file format"),
    (["table", "json"], "x.onnx", "got table and json"),
    (["json"], "x.bin", "-o x.bin has no known suffix"),
])
def test_export_format_conflicts_are_refused(formats, output, message):
    from effnet.cli.export import _formats
    from effnet.errors import EffnetError

    with pytest.raises(EffnetError, match=message):
        _formats(formats, output)


def test_export_json_keeps_working_as_a_hidden_alias():
    args = build_parser().parse_args(["export", "efficientnet_b0", "--format", "onnx", "--json", "-o", "x.onnx"])
    assert args.format == ["onnx", "json"]
