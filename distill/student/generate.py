"""Streaming generation with the student: prefill user codes chunk by chunk, then step.

    stepper = StudentStepper(model, tokenizer, SamplingOptions())
    state = stepper.start(batch=1)
    stepper.advance(state, [codes_chunk])      # [K, T] per row, any T, while the user speaks
    stepper.end_turn(state)
    while not state.done:                      # after the end of the turn
        out = stepper.step(state)              # one position for every unfinished row
        out.text[0], out.frames[0]             # new answer words, or a finished frame [K_out]

One step is one model call: first the answer words (text head; with greedy text, the
words a known answer would go on with are checked in the same call: :mod:`drafts`), then
the delayed audio steps (audio heads), one position each; a frame is complete
``K_out - 1`` steps after its first codebook. A student with a mouth says the words all at
once when they are written, and each step after that hands out one of its frames without
a model call (``said_frames``: all that are left at once).
Generation can stop after any step: just stop calling.
Rows are independent sessions in one batch; each is a :class:`RowStream` with its
own cache length, moved from outside only by ``reset``, ``mark``, ``rollback`` and
``stop`` (continuous batching, :mod:`realtime.engines.batcher`, keeps one state of
many rows and steps a ``select``-ed few of them per call).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from voxloop.distill.student.drafts import MAX_DRAFT_WORDS, AnswerDrafts
from voxloop.distill.student.intent_reading import IntentReading
from voxloop.distill.student.layout import (
    audio_step_ids,
    text_token_ids,
    user_frame_ids,
    with_word,
)
from voxloop.distill.student.model import AUDIO_SPECIAL, KVCache, KVCacheRows, Student
from voxloop.distill.student.rows import HEADS, Phase, RowStream, TurnProgress
from voxloop.distill.student.vocab import EOT, SEP, Tokenizer


@dataclass(frozen=True)
class SamplingOptions:
    """How to pick tokens; temperature 0 is greedy."""

    temperature: float = 0.0
    top_k: int = 0
    text_temperature: float = 0.0
    max_text_tokens: int = 48
    max_audio_frames: int = 375  # 15 s at 25 Hz
    seed: int = 0
    draft_words: int = MAX_DRAFT_WORDS  # words checked ahead per call (greedy text; drafts)
    heard_intents: bool = True  # a student with a HeardIntents head may say its fixed answer


@dataclass
class GenerationState:
    """Rows stepped together: ``cache`` holds exactly ``rows``, in order."""

    cache: KVCache | KVCacheRows
    rows: list[RowStream]
    rng: torch.Generator

    @property
    def done(self) -> bool:
        return all(r.phase is Phase.DONE for r in self.rows)

    def select(self, indices: list[int]) -> GenerationState:
        """Rows ``indices`` (at least one) as a batch of their own over the same storage
        (no copy)."""
        if not indices:
            raise ValueError("no rows selected: a batch has at least one row")
        rows = [self.rows[i] for i in indices]
        return GenerationState(rows[0].cache.rows([r.index for r in rows]), rows, self.rng)


@dataclass
class StepOutput:
    """Per row: the new answer words (none, or more than one where a draft held) and a
    completed audio frame ``[K_out]`` (or None)."""

    text: list[list[str]]
    frames: list[np.ndarray | None]


class StudentStepper:
    """Runs the student over batches of :class:`RowStream`: prefill, end of turn, steps."""

    def __init__(self, model: Student, tokenizer: Tokenizer,
                 options: SamplingOptions = SamplingOptions()) -> None:
        self.model, self.tokenizer, self.options = model.eval(), tokenizer, options
        self.config = model.config
        self.device = next(model.parameters()).device
        greedy = options.text_temperature <= 0 and options.draft_words > 0
        self.drafts = AnswerDrafts.from_mouth(model.mouth) if greedy else AnswerDrafts([])
        self.reading = IntentReading(model, tokenizer, options.heard_intents)

    def start(self, batch: int = 1, capacity: int | None = None) -> GenerationState:
        """``batch`` empty listening rows over one cache of ``capacity`` positions each."""
        cache = KVCache.empty(self.config, batch, capacity, device=self.device)
        rng = torch.Generator(device="cpu").manual_seed(self.options.seed)
        return GenerationState(cache, [RowStream(cache, b) for b in range(batch)], rng)

    @torch.inference_mode()
    def end_turn(self, state: GenerationState, rows: list[int] | None = None,
                 heard_last: list[np.ndarray | None] | None = None) -> None:
        """The user stopped: next steps write the answer (``<sep>`` is the next input).
        ``heard_last`` (per row of ``rows``: user codes ``[K, T]`` or None): the turn's last
        frames, not yet heard; the first step feeds them just before ``<sep>``, so the first
        word comes one model call sooner than after an ``advance`` with them."""
        rows = list(rows if rows is not None else range(len(state.rows)))
        for i, last in zip(rows, heard_last or [None] * len(rows), strict=True):
            turn = state.rows[i].turn
            turn.phase, turn.pending = Phase.TEXT, text_token_ids(self.config, np.array([SEP]))[0]
            turn.heard_last = last if last is not None and last.shape[1] else None
            _keep_codes(turn, turn.heard_last)

    @torch.inference_mode()
    def step(self, state: GenerationState) -> StepOutput:
        """Feed every active row's pending position, read its head, choose the next one."""
        if any(r.phase is Phase.LISTEN for r in state.rows):
            raise ValueError("call end_turn() before step()")
        return self.advance(state)

    @torch.inference_mode()
    def advance(self, state: GenerationState,
                chunks: list[np.ndarray | None] | None = None) -> StepOutput:
        """One model call for a mixed batch (continuous batching): listening rows
        append their user codes ``chunks[b] [K, T_b]`` (None: idle this call) and read
        the CTC head (``RowStream.heard``); answering rows take one step, as ``step``."""
        chunks = chunks or [None] * len(state.rows)
        full = (state.cache.lengths >= state.cache.capacity).tolist()
        for row, no_room in zip(state.rows, full, strict=True):
            if no_room and row.writing:  # the cache is full: the answer ends
                row.stop()
        ids = [self._next_ids(row, chunk) for row, chunk in zip(state.rows, chunks, strict=True)]
        heads = {HEADS[r.phase] for r, x in zip(state.rows, ids, strict=True) if x is not None}
        if any(r.turn.heard_last is not None for r in state.rows if r.phase is Phase.TEXT):
            heads.add("ctc")  # a turn's last frames, heard in its first text call
        heads = tuple(sorted(heads))
        out = self._forward(state, ids, heads=heads)
        result = StepOutput([[] for _ in state.rows], [None] * len(state.rows))
        for b, (row, x) in enumerate(zip(state.rows, ids, strict=True)):
            turn = row.turn
            if turn.phase is Phase.SPEAK:
                result.frames[b] = self._speak_step(turn)
                continue
            if x is None:
                continue
            if turn.phase is Phase.LISTEN:
                turn.heard.extend(out.ctc[b, :len(x)].argmax(-1).tolist())
            elif turn.phase is Phase.TEXT:
                heard = 0 if turn.heard_last is None else turn.heard_last.shape[1]
                if heard:
                    turn.heard.extend(out.ctc[b, :heard].argmax(-1).tolist())
                turn.heard_last = None
                if turn.hint is None:
                    turn.hint = self.reading.hint(turn)
                result.text[b] = self._text_steps(row, out.text[b, heard:len(x)], state.rng)
            else:
                ends = 0.0 if out.boundary is None else float(torch.sigmoid(out.boundary[b, 0]))
                result.frames[b] = self._audio_step(turn, out.audio[b, 0], ends, state.rng)
        return result

    def _next_ids(self, row: RowStream, chunk: np.ndarray | None) -> np.ndarray | None:
        """The row's input this call: ``[T, C]`` embedding ids, or None (idle); a row
        writing words feeds its pending word and a draft of the next ones."""
        turn = row.turn
        if turn.phase is Phase.TEXT:
            last = [] if turn.heard_last is None else \
                [user_frame_ids(self.config, turn.heard_last)]
            if turn.sep_at is None:
                turn.sep_at = row.length + sum(map(len, last))
            room = min(self.options.draft_words, self.options.max_text_tokens - len(turn.text),
                       row.cache.capacity - row.length - 1 - sum(map(len, last)))
            turn.draft = [] if room <= 0 else self.drafts.draft(turn.text, room) \
                if turn.text else self._first_draft(turn, room)
            draft = [text_token_ids(self.config, np.array(turn.draft))] if turn.draft else []
            return np.concatenate([*last, turn.pending[None], *draft])
        if row.writing:
            return turn.pending[None]
        if row.phase is Phase.LISTEN and chunk is not None and chunk.shape[1]:
            _keep_codes(turn, chunk)
            return user_frame_ids(self.config, chunk)
        return None

    def _first_draft(self, turn: TurnProgress, room: int) -> list[int]:
        """The first call's draft: the fixed answer the words heard so far most likely ask
        for (``HeardIntents``, however unsure: a draft is only checked), so a fixed answer
        is often written whole in one call; else the likeliest known answer's start."""
        guess = self.reading.guess(turn) if len(self.drafts) else None
        return self.tokenizer.encode_answer(guess)[:room] if guess else \
            self.drafts.draft([], room)

    def _forward(self, state: GenerationState, ids: list[np.ndarray | None],
                 heads: tuple[str, ...]):
        lengths = [0 if x is None else len(x) for x in ids]
        width = max(lengths)
        if width == 0:
            return None
        batch = np.full((len(ids), width, self.config.channels), self.config.null_id, np.int64)
        for b, x in enumerate(ids):
            if x is not None:
                batch[b, :len(x)] = x
        return self.model(torch.from_numpy(batch).to(self.device), state.cache,
                          torch.tensor(lengths, device=self.device), heads=heads)

    def _text_steps(self, row: RowStream, logits: torch.Tensor, rng) -> list[str]:
        """``logits [1 + len(draft), V]``: the model's word at each position, while the
        one before matched the draft; the positions after the first mismatch go back."""
        turn, words = row.turn, []
        draft, turn.draft = turn.draft, []
        for i in range(len(logits)):
            word = self._text_step(turn, logits[i], rng, row)
            words += [word] if word is not None else []
            if turn.phase is not Phase.TEXT or i == len(draft) or turn.text[-1] != draft[i]:
                break
        row._set_length(row.length - (len(logits) - 1 - i))
        if self.reading.holds_words(turn):
            settling = turn.phase is Phase.TEXT  # held back until settled, then all at once
            return [] if settling else [self.tokenizer.vocab["text"][t] for t in turn.text]
        return words

    def _text_step(self, turn: TurnProgress, logits: torch.Tensor, rng,
                   row: RowStream | None = None) -> str | None:
        token = sample(self.reading.lean(turn, logits), self.options.text_temperature,
                       self.options.top_k, rng)
        capped = token != EOT and len(turn.text) >= self.options.max_text_tokens
        if not capped:  # a word written, or the end chosen (not one forced by the cap)
            turn.text_logprob += float(torch.log_softmax(logits.float(), -1)[token])
        if token == EOT or capped:
            if self.model.mouth is not None:
                self.reading.settle(turn, row)
                if turn.hold and turn.text:
                    turn.phase = Phase.HELD
                else:
                    self._say(turn)
                return None
            turn.phase, turn.pending = Phase.AUDIO, text_token_ids(self.config, np.array([EOT]))[0]
            self._say_word(turn)
            return None
        turn.text.append(token)
        turn.pending = text_token_ids(self.config, np.array([token]))[0]
        return self.tokenizer.vocab["text"][token]

    @torch.inference_mode()
    def say(self, row: RowStream) -> None:
        """A held row's mouth says its words: its frames go out from the next step."""
        if row.phase is Phase.HELD:
            self._say(row.turn)

    def _say(self, turn: TurnProgress) -> None:
        """The mouth says the whole answer now; steps hand its frames out."""
        if not turn.text:  # nothing to say
            turn.phase = Phase.DONE
            return
        said = self.model.mouth.say(torch.tensor([turn.text], device=self.device))[0]
        turn.said, turn.phase = said[:, :self.options.max_audio_frames].cpu().numpy(), Phase.SPEAK

    def said_frames(self, row: RowStream) -> np.ndarray:
        """A speaking row's frames not yet handed out, all at once ``[K_out, F]`` (the
        mouth said them already: steps would only hand them out one by one); the row is
        done. Not speaking: no frames."""
        turn = row.turn
        if turn.phase is not Phase.SPEAK:
            return np.zeros((self.config.k_out, 0), np.int64)
        frames, turn.frames_out = turn.said[:, turn.frames_out:], turn.said.shape[1]
        turn.phase = Phase.DONE
        return frames

    def _speak_step(self, turn: TurnProgress) -> np.ndarray:
        """The mouth's next frame ``[K_out]``; the turn is done after its last."""
        frame = turn.said[:, turn.frames_out]
        turn.frames_out += 1
        if turn.frames_out >= turn.said.shape[1]:
            turn.phase = Phase.DONE
        return frame

    def _words_left(self, turn: TurnProgress) -> bool:
        """A word-pointer student's pointer is not yet at the answer's last word."""
        return self.config.word_pointer and turn.word + 1 < len(turn.text)

    def _say_word(self, turn: TurnProgress) -> None:
        """A word-pointer student's next input also carries the word being spoken."""
        if self.config.word_pointer and turn.text:
            with_word(self.config, turn.pending, turn.text[turn.word],
                      len(turn.steps) - turn.word_start)

    def _audio_step(self, turn: TurnProgress, logits: torch.Tensor, word_ends: float,
                    rng) -> np.ndarray | None:
        """``logits [K_out, 1025]`` of step ``s`` -> the delayed step, maybe a finished frame;
        ``word_ends``: the model's probability that frame ``s + 1`` starts the next answer
        word (a word-pointer student).

        The pointer moves on at the median of the word's length as the model predicts it:
        once the chance that the word has ended by now reaches one half. (Per frame the
        chance stays low, as a word's end is uncertain by a frame or two, so thresholding it
        frame by frame would hold every word too long.) Where the model would end the answer
        before its last word, the pointer is behind: it moves on instead."""
        k_out, s = self.config.k_out, len(turn.steps)
        codes = np.full(k_out, AUDIO_SPECIAL, dtype=np.int64)
        for k in range(k_out):
            frame = s - k
            if frame < 0 or (turn.eos_step is not None and frame >= turn.eos_step):
                continue
            allowed = logits[k] if k == 0 else logits[k, :AUDIO_SPECIAL]
            codes[k] = sample(allowed, self.options.temperature, self.options.top_k, rng)
            if k == 0 and codes[0] == AUDIO_SPECIAL and self._words_left(turn):
                # the pointer lags the audio: move it on rather than end before the last word
                word_ends = 1.0
                codes[0] = sample(logits[0, :AUDIO_SPECIAL], self.options.temperature,
                                  self.options.top_k, rng)
            if k == 0 and (codes[0] == AUDIO_SPECIAL or frame >= self.options.max_audio_frames):
                turn.eos_step, codes[0] = frame, AUDIO_SPECIAL
        turn.steps.append(codes)
        turn.pending = audio_step_ids(self.config, codes[None])[0]
        turn.word_stay *= 1.0 - word_ends
        if turn.word_stay <= 0.5 and self._words_left(turn):
            turn.word, turn.word_start, turn.word_stay = turn.word + 1, s + 1, 1.0
        self._say_word(turn)
        done_frame = s - (k_out - 1)
        frame_out = None
        if done_frame >= 0 and (turn.eos_step is None or done_frame < turn.eos_step):
            frame_out = np.array([turn.steps[done_frame + k][k] for k in range(k_out)])
            turn.frames_out += 1
        if turn.eos_step is not None and turn.frames_out >= turn.eos_step and s >= turn.eos_step:
            turn.phase = Phase.DONE
        return frame_out


def sample(logits: torch.Tensor, temperature: float, top_k: int,
           generator: torch.Generator) -> int:
    """Argmax when ``temperature`` is 0, else softmax sampling among the ``top_k`` best."""
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1).cpu()
    return int(torch.multinomial(probs, 1, generator=generator))


def _keep_codes(turn: TurnProgress, chunk: np.ndarray | None) -> None:
    """Add a chunk of user codes ``[K, T]`` to the turn's (the audio intents head reads
    them all at its end)."""
    if chunk is not None and chunk.shape[1]:
        turn.codes = chunk if turn.codes is None else np.concatenate([turn.codes, chunk], 1)
