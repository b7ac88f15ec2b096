"""The mouth's codes for every answer it remembers, said once when the student is saved.

``Mouth.say`` is a function of the answer's words and the mouth's weights only (greedy,
at the remembered word lengths), and most answers are ones the mouth remembers
(``Mouth.known_words``), so their codes can be said ahead of time: an engine that has
written a known answer's words then has its frames at once instead of after the mouth's
~12 ms pass (one thread), which is on the path from the end of the user's turn to the
first answer audio. Answers it does not remember are said as before.

The table lives beside the weights (``said_codes.safetensors``), keyed by the sha256 of
the ``model.safetensors`` it was said with: ``save_student`` writes it from the saved
(float16) weights, as ``load_student`` will read them, and a table of other weights is a
clear error rather than another voice. Each answer keeps the way it was said (the
``Mouth.say`` keyword arguments: none for the usual greedy saying): ``voxloop distill
sayings`` (``distill.evals.sayings``) replaces the sayings a judge mishears with clearer
ones the same weights say another way, and the way says how to say them again; an answer
the student may write that the mouth never learned (the refusal) is recorded there instead,
in the assistant's own voice (way ``{"recorded": voice}``: not a way the mouth says it).

    table = say_known(mouth)                  # every remembered answer, one at a time
    save_said_codes(table, folder)            # beside folder/model.safetensors
    carry_said_codes(old_folder, folder)      # its table, where the mouth is the same
    mouth.said_codes = load_said_codes(folder)   # None without a table
    table.get(torch.tensor([17, 44, 9]))      # [K, F] int64, or None: not remembered
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from voxloop.errors import VoxloopError
from voxloop.models import WEIGHTS_FILE, weights_sha256
from voxloop.training import atomic_write

SAID_CODES_FILE = "said_codes.safetensors"
RECORDED = "recorded"  # a way that is no saying of the mouth: a take of the assistant's voice


class SaidCodes:
    """Remembered answers (word ids each) -> the codes ``[K, F]`` their mouth says, and the
    way it says them (``Mouth.say`` keyword arguments; ``{}``: greedy, the default)."""

    def __init__(self, answers: list[list[int]], codes: list[torch.Tensor],
                 ways: list[dict] | None = None) -> None:
        self._codes = {tuple(words): c for words, c in zip(answers, codes, strict=True)}
        ways = [{}] * len(answers) if ways is None else ways
        self._ways = {tuple(words): w for words, w in zip(answers, ways, strict=True)}

    def __len__(self) -> int:
        return len(self._codes)

    def get(self, words: torch.Tensor, pad_word: int | None = None) -> torch.Tensor | None:
        """The codes ``[K, F]`` said for ``words [W]`` (``pad_word`` ids dropped), or None."""
        ids = [int(w) for w in words.tolist() if w != pad_word]
        return self._codes.get(tuple(ids))

    def items(self):
        return self._codes.items()

    def way(self, words) -> dict:
        """How the mouth said ``words`` (a sequence of word ids, no padding)."""
        return self._ways[tuple(int(w) for w in words)]


def say_known(mouth, progress: bool = False) -> SaidCodes:
    """Every answer ``mouth`` remembers, said one at a time as a one-row ``say`` says it
    (~9 ms each on two threads; ``progress``: a bar)."""
    from tqdm import tqdm

    answers = [words for words in mouth.known_answers() if words]
    kept, mouth.said_codes = mouth.said_codes, None
    try:
        codes = [mouth.say(torch.tensor([words], device=mouth.pace.device))[0].cpu()
                 for words in tqdm(answers, desc="saying the known answers", unit="answer",
                                   disable=not progress)]
    finally:
        mouth.said_codes = kept
    return SaidCodes(answers, codes)


def unlearned_answers(model, tokenizer) -> list[list[int]]:
    """The answers ``model`` may say without having written them (its heard-intents head's
    fixed answers and the domain's refusal) that its mouth never learned, as word ids:
    the mouth says those as noise. None it cannot write (a word outside its vocabulary)."""
    from voxloop.distill.student.vocab import UNK

    head = getattr(model, "heard_intents", None)
    if model.mouth is None or head is None:
        return []
    known = {tuple(words) for words in model.mouth.known_answers()}
    said = [tokenizer.encode_answer(text) for text in sorted({*head.answers.values(),
                                                               head.refusal})]
    return [words for words in said if UNK not in words and tuple(words) not in known]


def write_said_codes(folder: str | Path, progress: bool = False) -> int:
    """Say every answer the saved student in ``folder`` remembers, as ``load_student`` loads
    it, and write the table (the one of earlier weights goes). Returns the answers said."""
    from voxloop.distill.student.model import load_student

    folder = Path(folder)
    before = load_said_codes(folder, any_weights=True)
    recorded = sum(RECORDED in before.way(w) for w, _ in before.items()) if before else 0
    (folder / SAID_CODES_FILE).unlink(missing_ok=True)
    if recorded:  # keyed by word ids, which new weights' vocabulary may number otherwise
        warnings.warn(f"{folder / SAID_CODES_FILE} held {recorded} recorded answers (the "
                      "refusal), which the mouth does not say: record them again with "
                      f"`voxloop distill sayings {folder} --recorded-only`", stacklevel=2)
    model, _ = load_student(folder)
    if model.mouth is None or not len(model.mouth.known_words):
        return 0
    table = say_known(model.mouth, progress)
    if len(table):
        save_said_codes(table, folder)
    return len(table)


def save_said_codes(table: SaidCodes, folder: str | Path) -> Path:
    """``folder/said_codes.safetensors``: the table, keyed by the folder's weights."""
    from safetensors.torch import save_file

    folder = Path(folder)
    sha = weights_sha256(folder)
    if sha is None:
        raise VoxloopError(f"{folder} has no {WEIGHTS_FILE} to say the answers of")
    answers = [list(words) for words, _ in table.items()]
    codes = [c for _, c in table.items()]
    ways = [json.dumps(table.way(words), sort_keys=True) for words in answers]
    kinds = sorted(set(ways))  # each distinct way once, in the metadata; an index per answer
    way_index = torch.tensor([kinds.index(w) for w in ways], dtype=torch.int32)
    width = max((len(w) for w in answers), default=0)
    words = torch.full((len(answers), width), -1, dtype=torch.int32)
    for i, w in enumerate(answers):
        words[i, :len(w)] = torch.tensor(w, dtype=torch.int32)
    lengths = torch.tensor([c.shape[1] for c in codes], dtype=torch.int32)
    flat = torch.cat(codes, dim=1).to(torch.int16)  # [K, all frames]: codes < 1024
    path = folder / SAID_CODES_FILE
    atomic_write(path, lambda tmp: save_file(
        {"words": words, "lengths": lengths, "codes": flat.contiguous(), "ways": way_index},
        str(tmp), metadata={"weights_sha256": sha, "ways": json.dumps(kinds)}))
    return path


def load_said_codes(folder: str | Path, any_weights: bool = False) -> SaidCodes | None:
    """The table beside ``folder``'s weights; None when there is none. A table said with
    other weights is refused (its answers would come out in another voice), unless
    ``any_weights`` (to read what it held before it is said again)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(folder) / SAID_CODES_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    made_with = metadata.get("weights_sha256")
    if not any_weights and made_with != weights_sha256(folder):
        raise VoxloopError(f"{path} was said by other weights than "
                           f"{Path(folder) / WEIGHTS_FILE}: delete it, or write it again with "
                           f"`voxloop distill said-codes {folder}`")
    tensors = load_file(str(path))
    ends = tensors["lengths"].long().cumsum(0).tolist()
    starts = [0, *ends[:-1]]
    codes = tensors["codes"].long()
    answers = [[int(w) for w in row if w >= 0] for row in tensors["words"].tolist()]
    kinds = [json.loads(w) for w in json.loads(metadata.get("ways", '["{}"]'))]
    ways = [kinds[i] for i in tensors["ways"].tolist()] if "ways" in tensors else None
    return SaidCodes(answers, [codes[:, a:b] for a, b in zip(starts, ends, strict=True)], ways)


def _mouth_and_words(folder: Path) -> tuple[dict, list]:
    from safetensors.torch import load_file

    from voxloop.distill.student.mouth import MOUTH_PREFIX

    weights = load_file(str(folder / WEIGHTS_FILE))
    vocab = json.loads((folder / "vocab.json").read_text())
    return {k: v for k, v in weights.items() if k.startswith(MOUTH_PREFIX)}, vocab["text"]


def carry_said_codes(source: str | Path, folder: str | Path) -> int:
    """Keep ``source``'s table (its sayings, some chosen by ear: ``voxloop distill sayings``)
    for ``folder``'s weights, where ``folder``'s mouth and words are ``source``'s tensor for
    tensor (a words-only fine-tune leaves the mouth as it was), so every answer is said as
    it was; refused where they differ. Returns the answers kept."""
    source, folder = Path(source), Path(folder)
    table = load_said_codes(source)
    if table is None:
        raise VoxloopError(f"{source} has no {SAID_CODES_FILE} to keep")
    (mouth, words), (theirs, their_words) = _mouth_and_words(source), _mouth_and_words(folder)
    if words != their_words or mouth.keys() != theirs.keys() or not all(
            torch.equal(mouth[k], theirs[k]) for k in mouth):
        raise VoxloopError(f"{folder}'s mouth or words are not {source}'s: its answers would "
                           f"come out another way; say them with `voxloop distill said-codes "
                           f"{folder}` (and `voxloop distill sayings`)")
    save_said_codes(table, folder)
    return len(table)
