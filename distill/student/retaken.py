"""The report `voxloop distill renditions` keeps beside the pack it changed
(``PACK.renditions.json``): which answers it gave a new take, read by ``voxloop distill
mouth --retaken-weight`` to draw those answers more often.

    write_retaken(pack, report)      # report: {"answers": [{"text", "chosen", ...}], ...}
    retaken_answers(pack)            # {"The capital of iran is tehran.", ...}

A run on a pack given new takes before keeps the answers re-taken then (their new take is
the pack's own now, so this run does not choose it again).
"""

from __future__ import annotations

import json
from pathlib import Path

from voxloop.errors import VoxloopError
from voxloop.training import atomic_write


def report_path(pack: str | Path) -> Path:
    """``runs/x/said.npz`` -> ``runs/x/said.renditions.json``."""
    pack = Path(pack)
    return pack.with_name(f"{pack.stem}.renditions.json")


def write_retaken(pack: str | Path, report: dict) -> Path:
    """Keep ``report`` beside ``pack``, with every answer re-taken so far (``retaken``)."""
    path = report_path(pack)
    before = json.loads(path.read_text()).get("retaken", []) if path.is_file() else []
    now = {a["text"] for a in report["answers"] if a["chosen"]}
    text = json.dumps({**report, "pack": Path(pack).name, "retaken": sorted({*before, *now})},
                      indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def retaken_answers(pack: str | Path) -> set[str]:
    """The answer texts `voxloop distill renditions` gave ``pack`` a new take for."""
    path = report_path(pack)
    if not path.is_file():
        raise VoxloopError(f"--retaken-weight: no {path} (run `voxloop distill renditions` "
                           f"on {pack} first, or leave --retaken-weight at 1)")
    retaken = set(json.loads(path.read_text())["retaken"])
    if not retaken:
        raise VoxloopError(f"--retaken-weight: {path} re-took no answer; leave it at 1")
    return retaken
