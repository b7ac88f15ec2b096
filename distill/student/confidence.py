"""When the hybrid engine asks the cascade about a spoken turn the student answered, and
when it takes the cascade's refusal over the student's answer.

The student's words' log-probability under its own text head (``TurnProgress.text_logprob``)
ranks its right answers above its wrong ones well, so where it is low the hybrid asks the
cascade too. The cascade's scripted LLM refuses what it cannot match: a question outside
the domain, or one its Whisper misheard; Whisper's own mean token log-probability tells
the two apart (it is low where it misheard), so a refusal is taken only where Whisper was
sure of what it heard. Both thresholds are measured (``voxloop eval routing``, on a split
the held-out ones are not) and kept beside the weights they were measured with
(``routing.json``, keyed by their sha256 like the said-codes table): a student saved
again has none until it is measured again.

    write_routing(folder, Routing(-0.5, -0.35), {"chosen_on": "valid", ...})
    read_routing(folder)        # Routing(...), or None: none measured for these weights
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from voxloop.models import weights_sha256
from voxloop.training import atomic_write

ROUTING_FILE = "routing.json"

log = logging.getLogger("voxloop.distill")


@dataclass(frozen=True)
class Routing:
    min_words_logprob: float  # the student's words below this: ask the cascade
    refusal_heard_logprob: float | None  # take the cascade's refusal where its ASR is this sure


def write_routing(folder: str | Path, routing: Routing, info: dict) -> Path:
    """Keep ``routing`` (and what it was measured on, ``info``) beside the weights."""
    path = Path(folder) / ROUTING_FILE
    text = json.dumps({**asdict(routing), "weights_sha256": weights_sha256(folder), **info},
                      indent=1) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def read_routing(folder: str | Path) -> Routing | None:
    """The folder's thresholds for its weights; None where none were measured for them."""
    path = Path(folder) / ROUTING_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("weights_sha256") != weights_sha256(folder):
        log.warning("%s was measured for other weights than %s's: the hybrid asks the "
                    "cascade only about refusals (run voxloop eval routing --export)",
                    path, folder)
        return None
    return Routing(float(data["min_words_logprob"]), data.get("refusal_heard_logprob"))
