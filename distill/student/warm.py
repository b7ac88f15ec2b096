"""Warm start: a new student begins from an older one's weights where they still mean the same.

A student that hears differently (semantic tokens instead of codec codes) or reads another
vocabulary still speaks with the same codec, in the same voice, from the same kind of
answer words: its transformer blocks, audio embeddings and audio head are what took the
older student most of its training to learn. ``warm_start`` copies every tensor whose
meaning carries over: the blocks and norms (same width and depth), the audio rows of the
embedding table and the audio head (same codec and ``K_out``), and the text and CTC rows
of words both vocabularies hold (matched by word, not by index). The user input (codebook
vectors, their projection, learned user code embeddings) starts afresh.

``grow_vocab`` is the fine-tune's case: the same student on data with words it has never
written (a dataset grown by new intents). Everything carries over; each word's rows (text
embedding, text head, CTC head, the mouth's word embedding and spelling) move to the
word's index in the larger vocabulary, as do the words of the answers the mouth remembers,
and only the new words start untrained.
"""

from __future__ import annotations

import torch

from voxloop.distill.student.config import StudentConfig
from voxloop.errors import VoxloopError


def _rows_by_word(new_words: list[str], old_words: list[str]) -> tuple[list[int], list[int]]:
    """Indices (new, old) of the words both vocabularies hold."""
    old_index = {w: i for i, w in enumerate(old_words)}
    pairs = [(i, old_index[w]) for i, w in enumerate(new_words) if w in old_index]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _audio_rows(config: StudentConfig) -> slice:
    """The embedding rows of the answer's codebooks (with their specials) and the null id."""
    return slice(config.audio_offset, config.n_embeddings)


@torch.no_grad()
def warm_start(student, vocab: dict, old, old_vocab: dict) -> dict[str, int]:
    """Copy what carries over from ``old`` (a ``Student`` and its vocab) into ``student``;
    returns how many tensors, and words of each vocabulary, were copied."""
    new_cfg, old_cfg = student.config, old.config
    if (new_cfg.d_model, new_cfg.n_layers, new_cfg.n_heads, new_cfg.n_kv_heads,
            new_cfg.k_out) != (old_cfg.d_model, old_cfg.n_layers, old_cfg.n_heads,
                               old_cfg.n_kv_heads, old_cfg.k_out):
        raise VoxloopError("warm start needs the same width, depth, heads and answer "
                           f"codebooks: {old_cfg} vs {new_cfg}")
    if vocab.get("codec", {}).get("sha256") != old_vocab.get("codec", {}).get("sha256"):
        raise VoxloopError("warm start needs answers in the same codec: the data's codec "
                           "differs from the old student's")
    new_state, old_state = student.state_dict(), old.state_dict()
    copied = 0
    for name, value in old_state.items():
        carries = name.startswith(("blocks.", "norm.")) or name == "audio_head.weight"
        if carries and name in new_state and new_state[name].shape == value.shape:
            new_state[name].copy_(value)
            copied += 1
    new_state["embed.weight"][_audio_rows(new_cfg)] = \
        old_state["embed.weight"][_audio_rows(old_cfg)]
    new_rows, old_rows = _rows_by_word(vocab["text"], old_vocab["text"])
    new_state["embed.weight"][[new_cfg.text_offset + i for i in new_rows]] = \
        old_state["embed.weight"][[old_cfg.text_offset + i for i in old_rows]]
    new_state["text_head.weight"][new_rows] = old_state["text_head.weight"][old_rows]
    ctc_new, ctc_old = _rows_by_word(vocab["ctc"], old_vocab["ctc"])
    for name in ("ctc_head.weight", "ctc_head.bias"):
        new_state[name][ctc_new] = old_state[name][ctc_old]
    student.load_state_dict(new_state)
    return {"tensors": copied + 4, "text_words": len(new_rows), "ctc_words": len(ctc_new)}


def grows(vocab: dict, old_vocab: dict) -> bool:
    """Whether ``vocab`` holds every word of ``old_vocab`` (both of its vocabularies)."""
    return all(set(old_vocab[k]) <= set(vocab[k]) for k in ("text", "ctc"))


@torch.no_grad()
def grow_vocab(student, vocab: dict, old, old_vocab: dict) -> int:
    """Load ``old`` (the same student, read in ``old_vocab``) into ``student``, built for
    ``vocab``, a vocabulary that ``grows`` it: every tensor carries over, the rows of a
    word move to its new index, and the new words' rows keep ``student``'s initialization
    (the mouth also learns how they are spelled). Returns how many words are new."""
    if not grows(vocab, old_vocab):
        raise VoxloopError("the new vocabulary drops words of the old one")
    new_cfg, old_cfg = student.config, old.config
    new_state, old_state = student.state_dict(), old.state_dict()
    text_new, text_old = _rows_by_word(vocab["text"], old_vocab["text"])
    ctc_new, ctc_old = _rows_by_word(vocab["ctc"], old_vocab["ctc"])
    by_word = {"text_head.weight": (text_new, text_old), "ctc_head.weight": (ctc_new, ctc_old),
               "ctc_head.bias": (ctc_new, ctc_old),
               # the mouth's last row is its padding word
               "mouth.word_embed.weight": (text_new + [new_cfg.text_vocab],
                                           text_old + [old_cfg.text_vocab]),
               "mouth.spelling": (text_new + [new_cfg.text_vocab],
                                  text_old + [old_cfg.text_vocab])}
    for name, value in old_state.items():
        if name not in new_state:
            raise VoxloopError(f"{name} of the old student has no place in the new one")
        if name == "embed.weight":  # [user codebooks | text | audio codebooks | null]
            user = slice(0, new_cfg.text_offset)
            new_state[name][user] = value[user]
            new_state[name][_audio_rows(new_cfg)] = value[_audio_rows(old_cfg)]
            new_state[name][[new_cfg.text_offset + i for i in text_new]] = \
                value[[old_cfg.text_offset + i for i in text_old]]
        elif name in by_word:
            rows_new, rows_old = by_word[name]
            new_state[name][rows_new] = value[rows_old]
        elif name == "mouth.known_words":  # remembered answers' word ids [answers, words]
            rows_new, rows_old = by_word["mouth.spelling"]  # with the padding word
            moved = torch.zeros(old_cfg.text_vocab + 1, dtype=torch.long)
            moved[rows_old] = torch.tensor(rows_new)
            new_state[name] = moved[value.long()].to(value.dtype)
        elif name == "mouth.known_frames":  # their lengths: as they are, whatever the shape
            new_state[name] = value.clone()
        elif new_state[name].shape != value.shape:
            raise VoxloopError(f"{name} is {tuple(value.shape)} in the old student, "
                               f"{tuple(new_state[name].shape)} in the new one")
        else:
            new_state[name].copy_(value)
    student.load_state_dict(new_state)
    kept = set(text_new)
    new_words = {i: w for i, w in enumerate(vocab["text"]) if i not in kept}
    if student.mouth is not None:
        student.mouth.spell(new_words)
    return len(new_words)
