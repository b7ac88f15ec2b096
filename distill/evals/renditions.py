"""The clearest take of each answer a student says most, chosen by the Whisper judge.

piper draws its noise anew for every synthesis, so one answer comes out in takes of
different lengths and clarity, and through the codec's first K = 4 codebooks some takes
decode to speech Whisper cannot follow ("A cow says moo." -> "at CalCes New.") where another
take of the same sentence decodes clean. A student learns each fixed answer from the one
take its pack holds and says it as that take decodes: a bad take costs every turn that
asks for it. For every answer with at least ``min_turns`` training turns (the domain's fixed
answers), ``choose_renditions`` synthesizes ``takes`` more takes, decodes each one's first K
codebooks with the decoder the student speaks through, transcribes it with the ASR teacher's
Whisper and keeps the take judged right with the fewest word errors (the pack's own take
wins ties; with ``misheard_only`` new takes are drawn only where the judge hears the pack's
take wrong, or, with ``misheard_above_wer_pct``, with more word errors than that). The
chosen take replaces the answer in the dataset's answer cache, its codes go to
``renditions.npz`` (``distill.data.targets``: every later pack of the dataset uses them) and
into the pack, with its word times aligned anew where the pack has them (``replace_answers``).

Some words no take carries: piper's voice says "A dozen is twelve." so that Whisper hears "It
doesn't miss 12." in every take, through the codec or not. ``say_as`` respells such a word
for the voice only (``dozen=dozzen``: "A dozen is 12." in 9 of 32 takes through the
codec); the words the student is taught and the judge listens for stay as written.

    voxloop distill renditions data/distill-v2 runs/student/aligned.npz --takes 8
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from voxloop.distill.evals.judge import judge
from voxloop.distill.evals.metrics import word_error_rate
from voxloop.distill.evals.student import decode_codes, heard_in
from voxloop.errors import VoxloopError


@dataclass(frozen=True)
class RenditionSettings:
    takes: int = field(default=8, metadata={"help": "new takes synthesized per answer"})
    min_turns: int = field(default=20, metadata={
        "help": "re-take the answers of at least this many train turns (the fixed answers)"})
    codebooks: int = field(default=4, metadata={
        "help": "codebooks decoded to judge a take (what the student says: its K_out)"})
    decoder: str = field(default="answers", metadata={
        "help": "the codec decoder that judges (answers: the one the student speaks with)"})
    threads: int = field(default=2, metadata={"help": "CPU threads (codec, Whisper)"})
    misheard_only: bool = field(default=False, metadata={
        "help": "re-take only the answers whose pack take the judge hears wrong (spend "
                "--takes where they are needed)"})
    misheard_above_wer_pct: float = field(default=100.0, metadata={
        "help": "with --misheard-only: a take the judge hears right also counts as misheard "
                "when its word error rate is above this (percent; 100: only wrong ones). "
                "Right is the key content; a mangled first word is not wrong, but unclear"})
    say_as: tuple[str, ...] = field(default=(), metadata={
        "help": "WORD=SPELLING pairs: new takes are synthesized with WORD written "
                "SPELLING, a spelling the voice and the codec carry more clearly (--say-as "
                "dozen=dozzen voxloop=Voxeloop); the answer's words, and what the judge "
                "listens for, stay as written"})

    def spoken(self, text: str) -> str:
        """``text`` as the voice is given it: every ``--say-as`` word respelled."""
        for word, spelling in parse_say_as(self.say_as).items():
            text = whole_word(word).sub(spelling, text)
        return text

    def needs_takes(self, own: Take) -> bool:
        """Whether an answer whose pack take was judged ``own`` gets new takes."""
        return not self.misheard_only or not own.correct or (
            100 * own.wer > self.misheard_above_wer_pct)


@dataclass(frozen=True)
class Take:
    transcript: str
    wer: float
    correct: bool
    noisy_right: int = 0  # of the noisy listens (made only of a take heard right), right
    noisy: int = 0

    @property
    def steady(self) -> bool:
        """Heard right, and under every noisy listen too."""
        return self.correct and self.noisy_right == self.noisy

    def rank(self) -> tuple[bool, int, float]:
        """Smaller is clearer: judged right first, then right under more noisy listens,
        then fewer word errors."""
        return not self.correct, -self.noisy_right, self.wer


def whole_word(word: str) -> re.Pattern:
    """``word`` anywhere it is a whole word, in any case."""
    return re.compile(rf"\b{re.escape(word)}\b", flags=re.IGNORECASE)


def parse_say_as(pairs: tuple[str, ...]) -> dict[str, str]:
    """``("dozen=dozzen",)`` -> ``{"dozen": "dozzen"}``."""
    out = {}
    for pair in pairs:
        word, _, spelling = pair.partition("=")
        if not word.strip() or not spelling.strip():
            raise VoxloopError(f"--say-as {pair!r}: write it WORD=SPELLING, e.g. dozen=dozzen")
        out[word.strip()] = spelling.strip()
    return out


def answers_to_retake(data, min_turns: int) -> list[tuple[str, int, int]]:
    """``(answer text, its train turns, a row that says it)`` for every answer of the
    pack's train split with at least ``min_turns`` turns, most said first."""
    rows = data.indices("train")
    texts, first, counts = np.unique(data.answer_text[rows], return_index=True,
                                     return_counts=True)
    keep = [(str(t), int(c), int(rows[f])) for t, f, c in zip(texts, first, counts, strict=True)
            if c >= min_turns]
    return sorted(keep, key=lambda x: -x[1])


class TakeJudge:
    """Decode a take's first K codebooks and judge what Whisper hears against its text.

    With ``listens``, a take heard right is heard again that many times with white noise
    added at ``snr_db`` (seeds 0, 1, ...): greedy Whisper turns on a knife's edge for
    some takes, so one heard right here may be heard wrong by the same model on another
    CPU (its float rounding differs), let alone by another recognizer or a person; a take
    right under the noise too is right with some margin."""

    def __init__(self, codec, asr, codebooks: int, listens: int = 0,
                 snr_db: float = 35.0) -> None:
        self.codec, self.asr, self.codebooks = codec, asr, codebooks
        self.listens, self.snr_db = listens, snr_db

    def __call__(self, codes: np.ndarray, text: str) -> Take:
        wav = decode_codes(self.codec, codes[:self.codebooks])
        heard = heard_in(self.asr, wav, self.codec.sample_rate)
        take = Take(heard, word_error_rate([text], [heard]), judge(text, heard))
        if not take.correct or not self.listens:
            return take
        right = noisy_right(self.asr, wav, self.codec.sample_rate, text, self.listens,
                            self.snr_db)
        return replace(take, noisy_right=right, noisy=self.listens)


def noisy_right(asr, wav: np.ndarray, rate_hz: int, text: str, listens: int,
                snr_db: float) -> int:
    """Of ``listens`` hearings of ``wav`` with noise at ``snr_db`` (seeds 0, 1, ...), how
    many ``asr`` hears as saying ``text``."""
    return sum(judge(text, asr.transcribe(with_noise(wav, snr_db, seed), rate_hz))
               for seed in range(listens))


def with_noise(wav: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """``wav`` float32 ``[T]`` plus white noise ``snr_db`` below its RMS (seeded)."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    noise = np.random.default_rng(seed).standard_normal(len(wav)).astype(np.float32)
    return wav + noise * np.float32(rms * 10 ** (-snr_db / 20))


def choose_renditions(dataset: str | Path, pack: str | Path, settings: RenditionSettings,
                      progress: bool = True) -> dict:
    """Re-take the answers of ``pack`` (made from ``dataset``) said most; updates the
    dataset's answer cache and ``renditions.npz``, and the pack. Returns the report
    (also written beside the pack: ``retaken.report_path``)."""
    import torch
    from tqdm import tqdm

    from voxloop.distill.data.synth import AnswerCache, CodecRunner
    from voxloop.distill.data.targets import RENDITIONS_FILE, load_renditions
    from voxloop.distill.student.align import WordAligner, word_frames
    from voxloop.distill.student.codec import load_student_codec
    from voxloop.distill.student.pack import PackedData
    from voxloop.distill.student.retaken import write_retaken
    from voxloop.distill.student.vocab import answer_words
    from voxloop.distill.teachers.asr import ASRSettings, load_asr
    from voxloop.training import atomic_write

    if settings.takes < 1:
        raise VoxloopError("--takes must be at least 1")
    parse_say_as(settings.say_as)  # a malformed pair fails before anything is loaded
    dataset, pack = Path(dataset), Path(pack)
    cache = AnswerCache(dataset / "answers")
    if not cache.folder.is_dir():
        raise VoxloopError(f"{dataset} has no answer cache (answers/): pass the dataset folder "
                           f"{pack} was packed from")
    torch.set_num_threads(settings.threads)
    data = PackedData.load(pack)
    todo = answers_to_retake(data, settings.min_turns)
    if not todo:
        raise VoxloopError(f"no answer of {pack} has {settings.min_turns} train turns: lower "
                           "--min-turns")
    unused = [word for word in parse_say_as(settings.say_as)
              if not any(whole_word(word).search(text) for text, _, _ in todo)]
    if unused:
        raise VoxloopError(f"--say-as {', '.join(unused)}: no answer re-taken has that word "
                           "(write a whole word of an answer, without punctuation)")
    runner = CodecRunner(data.vocab["codec"]["name"])
    take_judge = TakeJudge(load_student_codec(None, data.vocab, settings.decoder),
                           load_asr(ASRSettings(threads=settings.threads)), settings.codebooks)
    aligner = WordAligner(threads=settings.threads) if data.word_frames is not None else None
    chosen = load_renditions(dataset)
    codes, frames, speech, report = {}, {}, {}, []
    for text, turns, row in tqdm(todo, desc="renditions", unit="answer", disable=not progress):
        candidates = [(None, data.answer(row))]  # the pack's own take first: it wins ties
        judged = [take_judge(candidates[0][1], text)]
        if settings.needs_takes(judged[0]):
            for _ in range(settings.takes):
                pcm = cache.take(settings.spoken(text))
                candidates.append((pcm, runner.encode(pcm)))
                judged.append(take_judge(candidates[-1][1], text))
        best = min(range(len(judged)), key=lambda i: judged[i].rank())
        report.append({"text": text, "turns": turns, "chosen": best,
                       "takes": [asdict(t) for t in judged]})
        pcm, best_codes = candidates[best]
        if pcm is None:
            continue
        speech[text] = pcm
        chosen[cache.path(text).stem] = best_codes
        codes[text] = best_codes[:data.answer_codes.shape[0]]  # a said pack holds K_out
        if aligner is not None:
            starts = aligner.word_starts_s(pcm, answer_words(text))
            frames[text] = word_frames(starts, best_codes.shape[1], runner.codec.frame_rate)

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **chosen)

    # the chosen codes first, then the audio they came from: a run killed in the loop has
    # changed nothing, and one killed here leaves no cached audio without its codes
    atomic_write(dataset / RENDITIONS_FILE, write_npz)
    for text, pcm in speech.items():
        cache.replace(text, pcm)
    changed = replace_answers(data, codes, frames if aligner is not None else None)
    data.save(pack)
    summary = summarize(report)
    summary["turns_changed"] = changed
    out = {"settings": asdict(settings), "summary": summary, "answers": report}
    write_retaken(pack, out)
    return out


def replace_answers(data, codes: dict[str, np.ndarray],
                    word_frames: dict[str, np.ndarray] | None = None) -> int:
    """Give every turn of the pack ``data`` (a ``PackedData``) whose answer text is a key
    of ``codes`` those codes ``int16 [K, F]`` (and, in an aligned pack, those
    ``word_frames [W]``, which it needs for every replaced text). Returns how many turns
    changed."""
    if data.word_frames is not None and set(codes) - set(word_frames or {}):
        raise VoxloopError("an aligned pack needs the word times of every answer replaced")
    answers, frames, changed = [], [], 0
    for i, text in enumerate(data.answer_text):
        text = str(text)
        new = text in codes
        changed += new
        answer = np.asarray(codes[text], np.int16) if new else data.answer(i)
        if answer.shape[0] != data.answer_codes.shape[0]:
            raise VoxloopError(f"{text!r}: {answer.shape[0]} codebooks, the pack holds "
                               f"{data.answer_codes.shape[0]}")
        answers.append(answer)
        if data.word_frames is not None:
            frames.append(np.asarray(word_frames[text], np.int16) if new
                          else data.word_frames[data.text_offsets[i]:data.text_offsets[i + 1]])
            if len(frames[-1]) != data.text_offsets[i + 1] - data.text_offsets[i]:
                raise VoxloopError(f"{text!r}: {len(frames[-1])} word times for "
                                   f"{data.text_offsets[i + 1] - data.text_offsets[i]} words")
    data.arrays["answer_codes"] = data.answer_codes = np.concatenate(answers, 1)
    data.arrays["answer_offsets"] = data.answer_offsets = np.concatenate(
        [[0], np.cumsum([a.shape[1] for a in answers])]).astype(np.int64)
    if data.word_frames is not None:
        data.arrays["word_frames"] = data.word_frames = np.concatenate(frames)
    return changed


def summarize(report: list[dict]) -> dict:
    """Answers judged right and mean WER %, of the pack's takes and of the chosen ones."""
    before = [r["takes"][0] for r in report]
    after = [r["takes"][r["chosen"]] for r in report]
    return {"answers": len(report), "replaced": sum(r["chosen"] != 0 for r in report),
            "correct_before": sum(t["correct"] for t in before),
            "correct_after": sum(t["correct"] for t in after),
            "wer_before_pct": 100 * float(np.mean([t["wer"] for t in before])),
            "wer_after_pct": 100 * float(np.mean([t["wer"] for t in after])),
            "any_take_correct": sum(any(t["correct"] for t in r["takes"]) for r in report)}
