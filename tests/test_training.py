"""voxloop.training: the schedule every trainer uses, all-or-nothing writes and resuming."""

from __future__ import annotations

import pytest

from voxloop.errors import VoxloopError
from voxloop.training import atomic_write, cosine_lr, resume_checkpoint, torch_save_atomic


def test_cosine_lr_warms_up_peaks_and_ends_at_its_floor():
    lrs = [cosine_lr(step, 1.0, 10, 110, floor=0.1) for step in range(130)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # never rises again
    assert lrs[60] == pytest.approx(0.55)  # half way down the cosine: midway to the floor
    assert lrs[110] == pytest.approx(0.1) and lrs[129] == pytest.approx(0.1)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "sub" / "state.bin"
    atomic_write(path, lambda tmp: tmp.write_bytes(b"old"))

    def fail(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.bin"]  # no temporary left


def test_resume_checkpoint_refuses_another_config(tmp_path):
    path = tmp_path / "checkpoint.pt"
    assert resume_checkpoint(path, {"width": 4}, "codec") is None  # nothing to resume yet
    torch_save_atomic(path, {"config": {"width": 4}, "step": 3})
    assert resume_checkpoint(path, {"width": 4}, "codec")["step"] == 3
    with pytest.raises(VoxloopError, match="trained with another codec config; use a new --out"):
        resume_checkpoint(path, {"width": 8}, "codec", weights_only=True)
