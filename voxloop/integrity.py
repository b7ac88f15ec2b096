"""Checks that model files on disk are the pinned bytes."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from voxloop.errors import ModelIntegrityError, VoxloopError


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, cached while its size and mtime stay the same."""
    stat = Path(path).stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def verify_sha256(path: str | Path, expected: str, what: str, fix: str) -> Path:
    """Raise a clear error unless ``path`` exists and hashes to ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise VoxloopError(f"{what} not found at {path}. {fix}")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelIntegrityError(
            f"{what} at {path} has sha256 {actual}, expected {expected}: the file is "
            f"corrupt or not the pinned release. {fix}"
        )
    return path
