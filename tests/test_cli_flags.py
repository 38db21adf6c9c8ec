"""Flags that go together: what one flag changes is not silently undone by another, and combinations that mean
something work (the refusals, one line and exit 2, are in tests/test_cli_errors.py)."""

from __future__ import annotations

import pytest

from effnet.cli import _trailing_positional, build_parser


@pytest.mark.parametrize(("command", "dest"), [("predict", "images"), ("cam", "images"), ("plot", "run_dirs"),
                                               ("runs", "dirs"), ("train", None), ("export", None)])
def test_the_list_positional_that_files_after_an_option_join(command, dest):
    assert _trailing_positional(build_parser(), command) == dest


def test_pretrained_without_bundled_weights_names_flags_train_has(capsys, tmp_path, monkeypatch):
    """The refusal comes before any work and every flag it suggests is one `effnet train` has."""
    import re

    from effnet.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "fashion-mnist", "--model", "efficientnet_b0", "--pretrained"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "efficientnet_b0" in err and "efficientnet_lite0" in err
    train = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    known = {flag for action in train._actions for flag in action.option_strings}
    named = set(re.findall(r"--[a-z][a-z-]*", err))
    assert "--pretrained" in named and named <= known, named - known
    assert list(tmp_path.iterdir()) == []


def test_pretrained_with_bundled_weights_or_a_file_is_still_accepted(capsys, tmp_path):
    from effnet.cli import main

    assert main(["train", "fashion-mnist", "--model", "efficientnet_lite0", "--pretrained", "--recipe"]) == 0
    assert "bundled" in capsys.readouterr().out
    # a file is the user's choice, B0's included (--recipe reads no weights, so it need not exist yet)
    assert main(["train", "fashion-mnist", "--model", "efficientnet_b0", "--pretrained", str(tmp_path / "b0.pth"),
                 "--recipe"]) == 0
    assert "b0.pth" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["train", "fashion-mnist", "--no-test", "--recipe"],  # a holdout of 5000 by default: a test split to skip
    ["train", "fashion-mnist", "--test-subset", "100", "--recipe"],
    ["train", "fashion-mnist", "--holdout", "100", "--no-test", "--recipe"],
    ["train", "fashion-mnist", "--ema-decay", "0", "--recipe"],
    ["train", "fashion-mnist", "--model", "efficientnet_lite0", "--pretrained", "--freeze-backbone", "--recipe"],
    ["train", "fashion-mnist", "--model", "efficientnet_lite0", "--pretrained", "--bn-momentum", "0.1", "--recipe"],
    ["train", "fashion-mnist", "--augment", "randaugment", "--randaugment-m", "5", "--recipe"],
    ["train", "fashion-mnist", "--model", "efficientnet_b0", "--no-fused-bn-silu", "--recipe"],
    ["search", "coefficients", "--base", "efficientnet_b0", "--list-grid", "--step", "0.1", "--tolerance", "0.2",
     "--phi", "1", "--format", "json"],
    ["search", "architecture", "--list-space", "--resolution", "64", "--format", "json"],
])
def test_combinations_that_mean_something_are_accepted(argv, capsys):
    from effnet.cli import main

    assert main(argv) == 0, capsys.readouterr().err


def test_an_option_given_twice_keeps_the_last_value_and_says_so(capsys):
    """An override added to a common command line works, as argparse has it, but never silently."""
    parser = build_parser()
    args = parser.parse_args(["scale", "efficientnet_b0", "--phi", "1", "--phi=2", "-o", "a.json",
                              "--output", "b.json"])
    assert args.phi == 2 and args.output == "b.json"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["effnet scale: warning: --phi given twice (1, then 2); the last one counts",
                   "effnet scale: warning: --output given twice (a.json, then b.json); the last one counts"]
    parser.parse_args(["train", "fashion-mnist", "--no-test", "--no-test", "--epochs", "2", "--epochs", "2",
                       "--seed", "1"])
    assert capsys.readouterr().err == ""  # the same value again changes nothing: nothing to say


@pytest.mark.parametrize(("flags", "says"), [(["--freeze-backbone"], "kept fixed: only the classifier trains"),
                                             (["--backbone-lr-scale", "0.1"], "at a scaled lr")])
def test_fine_tuning_flags_without_pretrained_weights_run_and_say_so(flags, says, capsys):
    """A random-feature baseline is a real experiment (kept), but more often a forgotten --pretrained (said)."""
    from effnet.cli import main

    assert main(["train", "fashion-mnist", *flags, "--recipe"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"effnet train: warning: {flags[0]} without --pretrained")
    assert says in err[0]
