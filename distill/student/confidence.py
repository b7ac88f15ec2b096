"""When the hybrid engine asks the cascade about a spoken turn the student answered, and
when it takes the cascade's refusal over the student's answer.

The student's words' log-probability under its own text head (``TurnProgress.text_logprob``)
ranks its right answers above its wrong ones well, so where it is low the hybrid asks the
cascade too. The cascade's scripted LLM refuses what it cannot match: a question outside
the domain, or one its Whisper misheard; Whisper's own mean token log-probability tells
the two apart (it is low where it misheard), so a refusal is taken only where Whisper was
sure of what it heard. Both thresholds are measured (``voxloop eval routing``, on a split
the held-out ones are not) and kept beside the weights they were measured with
(``routing.json``, keyed by the sha256 of the weights that write the words: every tensor
but the mouth's, which only says the words and is re-taught on its own): a student whose
words change has none until it is measured again; one given a new mouth keeps them.

    write_routing(folder, Routing(-0.5, -0.35), {"chosen_on": "valid", ...})
    read_routing(folder)        # Routing(...), or None: none measured for these weights
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from voxloop.models import WEIGHTS_FILE, weights_sha256
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
    text = json.dumps({**asdict(routing), "words_sha256": words_sha256(folder), **info},
                      indent=1) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def read_routing(folder: str | Path) -> Routing | None:
    """The folder's thresholds for its weights; None where none were measured for them."""
    path = Path(folder) / ROUTING_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if "words_sha256" in data:
        measured_here = data["words_sha256"] == words_sha256(folder)
    else:  # written before the key left the mouth out: then the whole file was hashed
        measured_here = data.get("weights_sha256") == weights_sha256(folder)
    if not measured_here:
        log.warning("%s was measured for other words than %s writes: the hybrid asks the "
                    "cascade only about refusals (run voxloop eval routing --export)",
                    path, folder)
        return None
    return Routing(float(data["min_words_logprob"]), data.get("refusal_heard_logprob"))


def words_sha256(folder: str | Path) -> str | None:
    """sha256 of what writes the student's words: its word vocabularies (``vocab.json``'s
    ``text`` and ``ctc``) and the tensors of ``model.safetensors`` (names, dtypes, shapes
    and bytes, in name order; the mouth's left out); None without weights."""
    import torch
    from safetensors import safe_open

    from voxloop.distill.student.mouth import MOUTH_PREFIX

    path, vocab_path = Path(folder) / WEIGHTS_FILE, Path(folder) / "vocab.json"
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    if vocab_path.is_file():
        vocab = json.loads(vocab_path.read_text())
        digest.update(json.dumps([vocab.get("text"), vocab.get("ctc")]).encode())
    with safe_open(str(path), "pt") as f:
        for name in sorted(f.keys()):
            if name.startswith(MOUTH_PREFIX):
                continue
            tensor = f.get_tensor(name).contiguous()
            digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
