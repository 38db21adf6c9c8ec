"""`effnet.files`: whole-or-nothing writes that leave a file's permissions as a plain write would, and the check of
an output file's place."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from effnet.files import atomic_write_text, file_mode, output_problem
from effnet.weights.safe_load import write_safetensors


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_file_gets_the_umask_mode_and_an_existing_one_keeps_its_own(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text("x", tmp_path / "new.json")
        assert _mode(tmp_path / "new.json") == 0o640  # 0o666 less the umask, not mkstemp's 0o600
        (tmp_path / "kept.json").write_text("old")
        os.chmod(tmp_path / "kept.json", 0o604)
        atomic_write_text("new", tmp_path / "kept.json")
        assert _mode(tmp_path / "kept.json") == 0o604 and (tmp_path / "kept.json").read_text() == "new"
        assert file_mode(tmp_path / "missing") == 0o640
    finally:
        os.umask(old)


def test_a_written_safetensors_file_is_readable_by_others_as_a_plain_write_would_be(tmp_path):
    old = os.umask(0o022)
    try:
        write_safetensors({"w": torch.zeros(2)}, tmp_path / "w.safetensors", {"format": "effnet"})
        assert _mode(tmp_path / "w.safetensors") == 0o644
    finally:
        os.umask(old)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize(("name", "suffixes", "expected"), [
    (".", (), "is a folder; expected a file name"),
    ("missing/x.png", (), "the folder {tmp}/missing does not exist"),
    ("plain.txt/x.png", (), "the folder {tmp}/plain.txt is not a folder"),
    ("x.jpg", (".png",), "got suffix '.jpg', expected a .png file"),
    ("x", (".json", ".csv"), "got no suffix, expected a .json or .csv file"),
])
def test_an_output_path_that_cannot_take_a_file_says_why(tmp_path, name, suffixes, expected):
    (tmp_path / "plain.txt").write_text("x")
    problem = output_problem(tmp_path / name, suffixes)
    assert problem is not None and problem.startswith(expected.format(tmp=tmp_path))


def test_a_writable_output_path_passes_and_the_probe_leaves_the_folder_as_found(tmp_path):
    (tmp_path / "kept.png").write_bytes(b"old")
    assert output_problem(tmp_path / "new.PNG", (".png",)) is None
    assert output_problem(tmp_path / "kept.png", (".png",)) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.png"]
    assert (tmp_path / "kept.png").read_bytes() == b"old"


def test_an_output_in_a_folder_that_refuses_writes_is_refused():
    # /proc takes no new files, even from root (a chmod-ed folder would not stop root)
    assert output_problem("/proc/effnet-out.onnx").startswith("cannot write there (")
