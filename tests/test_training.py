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


def test_temporary_names_carry_host_and_pid_and_only_this_hosts_dead_ones_are_reaped(tmp_path):
    import os

    from voxloop.distill.data.dataset import remove_stale_tmp
    from voxloop.training import temp_path, temp_writer

    mine = temp_path(tmp_path / "shard.npz")
    host, pid = temp_writer(mine.name)
    assert pid == os.getpid() and host and mine.name.startswith(".shard.npz.")
    dead = 2**22 + 12345  # above any pid this machine hands out
    stale = tmp_path / f".a.npz.{host}.{dead}.tmp"
    elsewhere = tmp_path / f".b.npz.other-node.{dead}.tmp"  # a rank on another machine
    for path in (mine, stale, elsewhere):
        path.write_bytes(b"partial")
    assert [p.name for p in remove_stale_tmp(tmp_path)] == [stale.name]
    assert mine.exists() and elsewhere.exists()


def test_load_checkpoint_says_what_is_wrong(tmp_path):
    from voxloop.training import load_checkpoint

    with pytest.raises(VoxloopError, match="not found: give the student checkpoint"):
        load_checkpoint(tmp_path / "none.pt", "student checkpoint")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(VoxloopError, match="is not a student checkpoint torch can read"):
        load_checkpoint(tmp_path / "junk.pt", "student checkpoint")
    torch_save_atomic(tmp_path / "other.pt", {"weights": 1})
    with pytest.raises(VoxloopError, match="no config in it"):
        load_checkpoint(tmp_path / "other.pt", "student checkpoint")
