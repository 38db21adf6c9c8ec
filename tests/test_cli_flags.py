"""Flags that go together: what one flag changes is not silently undone by another, and combinations that mean
something work (the refusals, one line and exit 2, are in tests/test_cli_errors.py)."""

from __future__ import annotations

import pytest

from effnet.cli import _trailing_positional, build_parser


@pytest.mark.parametrize(("command", "dest"), [("predict", "images"), ("cam", "images"), ("plot", "run_dirs"),
                                               ("runs", "dirs"), ("train", None), ("export", None)])
def test_the_list_positional_that_files_after_an_option_join(command, dest):
    assert _trailing_positional(build_parser(), command) == dest
