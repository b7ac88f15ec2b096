"""The student's mouth: the answer's words -> their codec frames, all frames at once.

The student writes its answer's words first (its inner monologue); the mouth then says
them. It reads the whole sentence, word by word and letter by letter (a word heard in
one answer only is still made of letters heard in many), predicts how many frames each
word lasts, and predicts every frame's codes from the word it belongs to, where in that
word it is, the letter about as far into the word as the frame is, and the words around
it: no frame depends on an earlier generated frame, so one wrong code cannot send
the rest of the answer astray (the exposure bias that kept the autoregressive audio steps
from saying composed answers). Within a frame the codebooks are predicted in order, each
seeing the codes chosen below it (residual codebooks refine the one before).

An answer the mouth learned is said at its take's word lengths (``remember``), the others
at the lengths it predicts: it learned each answer's codes at one take's lengths, and said
a frame off in a word or two it often comes out garbled.

    mouth = Mouth(MouthConfig(text_vocab=381))            # config.py
    mouth.set_spelling(vocab["text"])                     # the student's words, spelled
    codes = mouth.say(torch.tensor([[17, 44, 9]]))        # [1, K_out, F] int64

Shapes: ``W`` words, ``F`` frames (25 Hz), ``K`` = ``k_out`` codebooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from voxloop.distill.student.config import CODEBOOK_SIZE, WORD_FRAMES_MAX, MouthConfig

MOUTH_PREFIX = "mouth."  # a student keeps its mouth as ``.mouth``: these tensors say its words


class ConvBlock(nn.Module):
    """ConvNeXt block over frames ``[B, F, D]`` (not causal: the sentence is known)."""

    def __init__(self, d: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.norm = nn.LayerNorm(d)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        y = self.conv((x * keep).transpose(1, 2)).transpose(1, 2)
        return x + self.drop(self.down(F.gelu(self.up(self.norm(y)))))


ASCII = 128  # letters are read as their ASCII codes


@dataclass
class Encoded:
    """A batch of answers read: ``words [B, W, D]``, ``letters [B, W, L, D]`` (zero past a
    word's letters), ``n_chars [B, W]`` and ``log_frames [B, W]`` (predicted log(1 + frames))."""

    words: torch.Tensor
    letters: torch.Tensor
    n_chars: torch.Tensor
    log_frames: torch.Tensor


@dataclass
class MouthOutput:
    """``log_frames [B, W]`` (predicted log(1 + frames) per word) and ``logits [B, K, F, 1024]``."""

    log_frames: torch.Tensor
    logits: torch.Tensor | None


class Mouth(nn.Module):
    def __init__(self, config: MouthConfig) -> None:
        super().__init__()
        c, d = config, config.d_model
        self.config = c
        self.register_buffer("spelling", torch.zeros(c.text_vocab + 1, c.max_chars,
                                                     dtype=torch.long))  # ASCII, 0: none
        # word lengths are learned in log frames, whose mean undershoots the frames: the
        # ratio of true to predicted frames on the training answers (mouth_train.fit_pace)
        self.register_buffer("pace", torch.ones(()))
        # the answers it learned (word ids, padded with pad_word) and their frames per word
        self.register_buffer("known_words", torch.zeros(0, 0, dtype=torch.int16))
        self.register_buffer("known_frames", torch.zeros(0, 0, dtype=torch.int16))
        self._known: dict[tuple[int, ...], torch.Tensor] | None = None
        # the known answers' codes, said ahead of time (said_codes.py; not saved with it)
        self.said_codes = None
        self.char_embed = nn.Embedding(ASCII, d, padding_idx=0)
        self.char_pos = nn.Embedding(c.max_chars, d)
        self.word_embed = nn.Embedding(c.text_vocab + 1, d, padding_idx=c.pad_word)
        self.word_pos = nn.Embedding(c.max_words, d)
        layer = nn.TransformerEncoderLayer(d, c.n_heads, 4 * d, c.dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.chars = nn.TransformerEncoder(layer, c.char_layers, enable_nested_tensor=False)
        self.words = nn.TransformerEncoder(layer, c.word_layers, enable_nested_tensor=False)
        self.duration = nn.Linear(d, 1)
        self.into = nn.Embedding(WORD_FRAMES_MAX, d)  # frames since the word began
        self.left = nn.Embedding(WORD_FRAMES_MAX, d)  # frames until it ends
        self.frames = nn.ModuleList(ConvBlock(d, c.kernel, c.dropout)
                                    for _ in range(c.frame_blocks))
        self.norm = nn.LayerNorm(d)
        self.below = nn.ModuleList(nn.Embedding(CODEBOOK_SIZE, d) for _ in range(c.k_out - 1))
        self.heads = nn.ModuleList(nn.Linear(d, CODEBOOK_SIZE) for _ in range(c.k_out))

    def set_spelling(self, words: list[str]) -> None:
        """Spell the student's words (its ``vocab["text"]``, in id order) for the mouth;
        saved with it from then on."""
        if len(words) != self.config.text_vocab:
            raise ValueError(f"{len(words)} words, the mouth says {self.config.text_vocab}")
        self.spelling.zero_()
        self.spell(dict(enumerate(words)))

    def spell(self, words: dict[int, str]) -> None:
        """Spell the words of these ids (the others keep their spelling)."""
        for i, word in words.items():
            letters = [min(ord(ch), ASCII - 1) for ch in word[:self.config.max_chars]]
            self.spelling[i] = 0
            self.spelling[i, :len(letters)] = torch.tensor(letters, dtype=self.spelling.dtype)

    def remember(self, words: list, frames: list) -> None:
        """Say these answers (word ids ``[W_i]`` each) at these frames per word (``[W_i]``
        each) from now on, instead of the ones remembered before; saved with the mouth."""
        width = max((len(w) for w in words), default=0)
        known_words = torch.full((len(words), width), self.config.pad_word, dtype=torch.int16)
        known_frames = torch.zeros(len(words), width, dtype=torch.int16)
        for i, (w, f) in enumerate(zip(words, frames, strict=True)):
            if len(w) != len(f):
                raise ValueError(f"answer {i}: {len(w)} words but {len(f)} word lengths")
            known_words[i, :len(w)], known_frames[i, :len(f)] = torch.as_tensor(w), \
                torch.as_tensor(f)
        device = self.pace.device
        self.known_words, self.known_frames = known_words.to(device), known_frames.to(device)
        self._known = None

    def remembered_lengths(self) -> tuple[list[list[int]], list[list[int]]]:
        """What ``remember`` was given: each remembered answer's word ids ``[W_i]`` and
        frames per word ``[W_i]``, in ``known_words`` order (padding, at each row's end,
        dropped)."""
        pad = self.config.pad_word
        words = [[w for w in row if w != pad] for row in self.known_words.tolist()]
        frames = [row[:len(w)] for row, w in zip(self.known_frames.tolist(), words,
                                                 strict=True)]
        return words, frames

    def known_answers(self) -> list[list[int]]:
        """The answers it remembers, as word ids (padding dropped), in ``known_words`` order."""
        return self.remembered_lengths()[0]

    def remembered(self, words: torch.Tensor, frames: torch.Tensor,
                   pace: float = 1.0) -> torch.Tensor:
        """Frames per word ``[B, W]`` of ``words [B, W]`` with the rows of remembered
        answers at their remembered lengths (times ``pace``)."""
        pad = self.config.pad_word
        if self._known is None:
            self._known = {tuple(w[w != pad].tolist()): f[w != pad] for w, f in
                           zip(self.known_words.long(), self.known_frames.long(), strict=True)}
        out = frames.clone()
        for b, row in enumerate(words):
            known = self._known.get(tuple(row[row != pad].tolist()))
            if known is not None:
                out[b, :len(known)] = (known.to(out) * pace).round().clamp(min=1)
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in ("known_words", "known_frames"):  # their shapes are the saved ones
            key = prefix + name
            if key not in state_dict:  # saved before mouths remembered: none remembered
                state_dict[key] = torch.zeros(0, 0, dtype=torch.int16)
            setattr(self, name, torch.zeros(state_dict[key].shape, dtype=torch.int16,
                                            device=self.pace.device))
        self._known = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def encode(self, words: torch.Tensor) -> Encoded:
        """``words [B, W]`` (padded with ``pad_word``) -> their states and log frames."""
        c, (batch, n_words) = self.config, words.shape
        pad = words == c.pad_word
        pos = self.word_pos(torch.arange(n_words, device=words.device).clamp(max=c.max_words - 1))
        chars = self.spelling[words]  # [B, W, L]
        x = self.char_embed(chars) + self.char_pos.weight[None, None] + pos[None, :, None]
        letters = self._read_letters(x.flatten(1, 2), chars.flatten(1) > 0)
        letters = letters.view(batch, n_words, c.max_chars, -1)
        n_chars = (chars > 0).sum(-1)
        spelled = letters.sum(2) / n_chars.clamp(min=1)[..., None]
        h = self.words(self.word_embed(words) + pos[None] + spelled, src_key_padding_mask=pad)
        return Encoded(h, letters, n_chars, self.duration(h)[..., 0].masked_fill(pad, 0.0))

    def _read_letters(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The letter layers over ``x [B, N, D]`` (every word's letter slots, in order),
        run on the real letters only (``real [B, N]``): most slots of a word are padding,
        which as keys is masked anyway, so packing changes no letter's state and saves
        most of the work. Padding slots come back zero."""
        count = real.sum(1)
        width = int(count.max()) if count.numel() else 0
        if width == 0:
            return torch.zeros_like(x)
        order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)[:, :width, None]
        order = order.expand(-1, -1, x.shape[-1])  # the real letters first, in order
        kept = torch.arange(width, device=x.device)[None] < count[:, None]  # [B, width]
        read = self.chars(x.gather(1, order), src_key_padding_mask=~kept)
        return torch.zeros_like(x).scatter(1, order, read * kept[..., None])

    def frame_states(self, encoded: Encoded, frames: torch.Tensor) -> tuple[torch.Tensor,
                                                                             torch.Tensor]:
        """Encoded words and frames per word ``[B, W]`` (0 for padding) -> frame states
        ``[B, F, D]`` and which frames are real ``[B, F, 1]``."""
        states = encoded.words
        ends = frames.cumsum(1)
        total = int(ends[:, -1].max()) if frames.numel() else 0
        f = torch.arange(max(total, 1), device=states.device)[None]
        word = torch.searchsorted(ends, f.expand(len(ends), -1).contiguous(), right=True)
        word = word.clamp(max=states.shape[1] - 1)
        starts = ends - frames
        into = (f - starts.gather(1, word)).clamp(min=0)
        length = frames.gather(1, word).clamp(min=1)
        left = (ends.gather(1, word) - 1 - f).clamp(0, WORD_FRAMES_MAX - 1)
        keep = (f < ends[:, -1:]).unsqueeze(-1).to(states.dtype)
        # the letter as far into the word as the frame is (a linear guess the blocks refine)
        n_chars = encoded.n_chars.gather(1, word)
        letter = ((2 * into + 1) * n_chars // (2 * length)).clamp(max=(n_chars - 1).clamp(min=0))
        letters = encoded.letters.flatten(1, 2)
        at = word * self.config.max_chars + letter
        d = states.shape[-1]
        x = states.gather(1, word[..., None].expand(-1, -1, d))
        x = x + letters.gather(1, at[..., None].expand(-1, -1, d))
        x = x + self.into(into.clamp(max=WORD_FRAMES_MAX - 1)) + self.left(left)
        for block in self.frames:
            x = block(x, keep)
        return self.norm(x) * keep, keep

    def code_logits(self, h: torch.Tensor, k: int, codes: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, F, 1024]`` of codebook ``k`` given the codes below it ``[B, >=k, F]``."""
        for j in range(k):
            h = h + self.below[j](codes[:, j])
        return self.heads[k](h)

    def forward(self, words: torch.Tensor, frames: torch.Tensor,
                codes: torch.Tensor | None = None) -> MouthOutput:
        """Training: ``words [B, W]``, true ``frames [B, W]`` per word and ``codes [B, K, F]``
        (the codes below each codebook are the true ones) -> durations and logits."""
        encoded = self.encode(words)
        if codes is None:
            return MouthOutput(encoded.log_frames, None)
        h, _ = self.frame_states(encoded, frames)
        logits = torch.stack([self.code_logits(h, k, codes) for k in range(self.config.k_out)], 1)
        return MouthOutput(encoded.log_frames, logits)

    @torch.inference_mode()
    def say(self, words: torch.Tensor, pace: float = 1.0, remembered: bool = True,
            temperature: float = 0.0, seed: int = 0) -> list[torch.Tensor]:
        """``words [B, W]`` -> each row's codes ``[K, F_b]`` (``pace`` > 1 slower; a
        remembered answer at its remembered lengths, from ``said_codes`` if it is there).

        Greedy by default; ``temperature`` > 0 samples each code (``seed``: the draws) and
        ``remembered=False`` says every row at the lengths the mouth predicts: other sayings
        of the same words, for a judge to choose among (``distill.evals.sayings``).
        """
        usual = pace == 1.0 and remembered and temperature == 0.0
        if usual and self.said_codes is not None:
            said = [self.said_codes.get(row, self.config.pad_word) for row in words]
            if all(codes is not None for codes in said):
                return [codes.to(words.device, copy=True) for codes in said]
        encoded = self.encode(words)
        frames = self.lengths(words, pace, encoded, remembered)
        h, _ = self.frame_states(encoded, frames)
        codes = torch.zeros(len(words), self.config.k_out, h.shape[1], dtype=torch.long,
                            device=h.device)
        generator = torch.Generator(device=h.device).manual_seed(seed) if temperature > 0.0 \
            else None
        for k in range(self.config.k_out):
            logits = self.code_logits(h, k, codes)
            if temperature > 0.0:
                probs = torch.softmax(logits.flatten(0, 1) / temperature, -1)
                codes[:, k] = torch.multinomial(probs, 1, generator=generator).view(
                    logits.shape[:2])
            else:
                codes[:, k] = logits.argmax(-1)
        return [codes[b, :, :int(n)] for b, n in enumerate(frames.sum(1))]

    @torch.inference_mode()
    def lengths(self, words: torch.Tensor, pace: float = 1.0,
                encoded: Encoded | None = None, remembered: bool = True) -> torch.Tensor:
        """Frames per word ``[B, W]`` that ``say`` gives ``words [B, W]`` (0 for padding)
        at this ``pace`` (and, with ``remembered=False``, at the predicted lengths)."""
        encoded = self.encode(words) if encoded is None else encoded
        frames = self.word_frames(words, encoded.log_frames, pace)
        return self.remembered(words, frames, pace) if remembered else frames

    def word_frames(self, words: torch.Tensor, log_frames: torch.Tensor,
                    pace: float = 1.0) -> torch.Tensor:
        """Predicted log(1 + frames) ``[B, W]`` of ``words`` -> whole frames per word: at
        least one, none for padding."""
        frames = (torch.expm1(log_frames) * self.pace * pace).round().clamp(min=1).long()
        return frames.masked_fill(words == self.config.pad_word, 0)


def word_lengths(starts: torch.Tensor, total: int) -> torch.Tensor:
    """Start frames of the words ``[W]`` of an answer ``total`` frames long -> frames per
    word ``[W]``: word 0 also owns the leading silence, the last word the tail."""
    ends = torch.cat([starts[1:], torch.tensor([total], dtype=starts.dtype)])
    lengths = ends - starts
    lengths[0] += starts[0]
    return lengths
