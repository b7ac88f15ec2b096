"""How sure a student must be of its answer words to answer a spoken turn itself.

Its words' log-probability under its own text head (``TurnProgress.text_logprob``) ranks
right answers above wrong ones well, so the hybrid engine hands the turns it is least
sure of to the cascade. The threshold is measured (``voxloop eval routing``, chosen on a
split the held-out ones are not) and kept beside the weights it was measured with
(``routing.json``, keyed by their sha256 like the said-codes table): a student saved again
has no threshold until it is measured again.

    write_threshold(folder, -0.6, {"chosen_on": "valid", ...})
    read_threshold(folder)            # -0.6, or None: none measured for these weights
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from voxloop.models import weights_sha256
from voxloop.training import atomic_write

ROUTING_FILE = "routing.json"

log = logging.getLogger("voxloop.distill")


def write_threshold(folder: str | Path, threshold: float, info: dict) -> Path:
    """Keep ``threshold`` (and what it was measured on, ``info``) beside the weights."""
    path = Path(folder) / ROUTING_FILE
    text = json.dumps({"min_words_logprob": threshold,
                       "weights_sha256": weights_sha256(folder), **info}, indent=1) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def read_threshold(folder: str | Path) -> float | None:
    """The folder's threshold for its weights; None where none was measured for them."""
    path = Path(folder) / ROUTING_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("weights_sha256") != weights_sha256(folder):
        log.warning("%s was measured for other weights than %s's: no threshold (run "
                    "voxloop eval routing --export %s)", path, folder, folder)
        return None
    return float(data["min_words_logprob"])
