"""`effnet.files`: whole-or-nothing writes that leave a file's permissions as a plain write would."""

from __future__ import annotations

import os
import stat

import torch

from effnet.files import atomic_write_text, file_mode
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
