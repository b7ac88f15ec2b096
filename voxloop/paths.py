"""Output paths checked before any work, so a bad one fails at once and costs no run."""

from __future__ import annotations

import os
from pathlib import Path

from voxloop.errors import VoxloopError


def output_file(path: str | Path, suffix: str, what: str = "the output",
                flag: str = "") -> Path:
    """A file to write ``what`` to: not a folder, ending in ``suffix`` (``.wav``), in a
    folder that exists or can be made and written. ``flag`` names the option in errors."""
    out, shown = Path(path), f"{flag} {path}".strip()
    if out.is_dir():
        raise VoxloopError(f"{shown} is a folder: name a file in it, "
                           f"e.g. {out / ('out' + suffix)}")
    if out.suffix.lower() != suffix:
        raise VoxloopError(f"{shown}: {what} is saved as a {suffix[1:]} file; give a path "
                           f"ending in {suffix}, e.g. {out.with_suffix(suffix)}")
    _check_writable(out.parent, shown)
    return out


def output_folder(path: str | Path, flag: str = "--out") -> Path:
    """A folder to write results into: not a file, and it or its nearest existing parent
    a folder that can be written."""
    out, shown = Path(path), f"{flag} {path}".strip()
    if out.exists() and not out.is_dir():
        raise VoxloopError(f"{shown} is a file: name a folder for the results")
    _check_writable(out, shown)
    return out


def _check_writable(folder: Path, shown: str) -> None:
    existing = next((p for p in [folder, *folder.parents] if p.exists()), Path())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise VoxloopError(f"{shown}: cannot write into {existing}")
