"""What every training loop and data job here shares: the torchrun setup, atomic writes
(and telling an ``.npz`` from another file), resuming from a checkpoint and the
learning-rate schedule. torch is imported inside the functions that need it."""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path

from voxloop.errors import VoxloopError

_TEMP_NAME = re.compile(r"\.(?P<host>[^.]+)\.(?P<pid>\d+)\.tmp$")


def setup_distributed(device: str = "auto") -> tuple[int, int, object]:
    """``(rank, world size, torch.device)`` of this process.

    Under torchrun (``WORLD_SIZE`` > 1) it joins the process group: NCCL on CUDA, gloo on CPU.
    ``device``: "cuda", "cpu" or "auto" (CUDA when there is one). On CUDA each rank takes
    its ``LOCAL_RANK`` GPU, with TF32 matmuls and cuDNN autotuning on.
    """
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(chosen)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        chosen = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, chosen


def teardown_distributed() -> None:
    """End a torchrun job's process group once every rank got here: a rank that tears its
    group down and exits while another still writes its last files can abort that one's
    gloo threads at exit ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


NPZ_MAGIC = b"PK\x03\x04"  # every .npz is a zip archive


def is_npz_archive(path: str | Path) -> bool:
    """Whether ``path`` starts as every ``.npz`` does: numpy reads any other file as a
    pickle and answers with advice to unpickle it, no use to a user."""
    with open(path, "rb") as f:
        return f.read(len(NPZ_MAGIC)) == NPZ_MAGIC


def temp_host() -> str:
    """This machine's name as temporary names carry it (no dots)."""
    return socket.gethostname().replace(".", "_") or "host"


def temp_path(path: str | Path) -> Path:
    """A temporary name beside ``path`` for this process: ``.NAME.HOST.PID.tmp`` (the host
    too: ranks on other machines may share the folder, and only this host's dead writers'
    files may be reaped, ``distill.data.dataset.remove_stale_tmp``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{temp_host()}.{os.getpid()}.tmp")


def temp_writer(name: str) -> tuple[str | None, int | None]:
    """(host, pid) of a ``temp_path`` file name; (None, None) for any other name."""
    match = _TEMP_NAME.search(name)
    if match is None:
        return None, None
    return match["host"], int(match["pid"])


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write a file all or nothing: ``write(tmp)`` fills a temporary name beside ``path``
    (per process, so concurrent writers never share one), then it is renamed over ``path``.
    A killed job leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # on disk before the rename, so a crash cannot undo it
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def torch_save_atomic(path: str | Path, payload: dict) -> Path:
    """``torch.save`` through :func:`atomic_write` (checkpoints survive a kill mid-save)."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, what: str = "training checkpoint") -> dict:
    """A checkpoint this project's training wrote (on the CPU), or a clear error for a
    missing or unreadable file. It is unpickled whole: load only files you trust."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise VoxloopError(f"{path} not found: give the {what} (a .pt file in a training "
                           "run's --out folder, e.g. best.pt or checkpoint.pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile,
            ValueError) as exc:
        raise VoxloopError(f"{path} is not a {what} torch can read: {exc}") from exc
    if not isinstance(state, dict) or "config" not in state:
        raise VoxloopError(f"{path} is not a {what} of this project (no config in it)")
    return state


def resume_checkpoint(path: str | Path, config: dict, what: str,
                      weights_only: bool = False) -> dict | None:
    """The checkpoint at ``path`` to resume from (on the CPU), None when there is none yet.
    One saved with another ``config`` (its ``"config"`` entry) is a clear error: ``what``
    names the config ("codec")."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=weights_only)
    if state["config"] != config:
        raise VoxloopError(f"{path} was trained with another {what} config; use a new --out "
                           "folder or the same settings")
    return state


def cosine_lr(step: int, peak_lr: float, warmup_steps: int, total_steps: int,
              floor: float) -> float:
    """Linear warmup to ``peak_lr``, then a half cosine down to ``floor * peak_lr`` at
    ``total_steps`` (held there after). The floor keeps a run that is extended or resumed
    past its planned length learning instead of stalling at a learning rate of zero."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak_lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))
