"""Shared by the class-activation-map tests: one torch thread per test, and the CLI run in-process."""

from __future__ import annotations

import pytest
import torch

from effnet.cli import main


@pytest.fixture
def one_thread():
    """Tiny models run as fast on one thread, and leave the other core to whatever else runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `effnet ARGV`."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
