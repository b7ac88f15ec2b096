"""The clearest saying of every answer a student's mouth remembers, chosen by ear.

The mouth says a remembered answer one way (greedy, at the remembered word lengths), and
that way garbles some answers, most often their first word ("Eighteen divided by nine is
two." -> "Taking divided by 9 is 2."; word 0 also owns the take's leading silence, so
where its letters fall in its frames varies most). The same weights say the same words
other ways: slower or faster, at the lengths the mouth predicts instead of the take's, or
with each code sampled instead of the likeliest; one of those is often heard right where
the greedy one is not. ``choose_sayings`` judges the saying the student uses now (its
``said_codes`` table, else greedy) through the codec's decoder with Whisper, a saying heard
right again with noise added (``listens``: heard right only on a knife's edge, it is heard
wrong by the same Whisper on another CPU), and where the judge hears it wrong, or not
under every noisy listen (or, with ``misheard_above_wer_pct``, with more word errors than
that), says the answer the other ways in turn until one is right under every listen, and
keeps the clearest (judged right first, then right under more listens, then fewest word
errors; the saying now wins ties). The chosen codes become the folder's
``said_codes.safetensors``, which the engine and the evals read for a remembered answer.

The judge is the ASR teacher's Whisper tiny.en, the same model ``voxloop eval student``
judges with, so an eval after the choice reads the chosen answers as heard by the one
recognizer they were chosen for: quote it with that said.

An answer the student may write that its mouth never learned (the domain's refusal, which
the heard-intents head names for a question outside the domain: its words are not the
domain's answers', and the mouth says it as noise) is recorded instead: ``recorded_takes``
takes of the assistant's own voice (the TTS the mouth learned from, through the same codec),
the clearest kept, its way ``{"recorded": voice}``.

A pass over every answer takes an hour on two threads; ``again_from`` makes the next one
(more samples, another seed, or the same after the judge changed) judge only the answers
an earlier pass's report left misheard.

    voxloop distill sayings models/voxloop-student --report out/sayings.json
    voxloop distill sayings models/voxloop-student --again-from out/sayings.json \
        --samples 24 --seed 1 --report out/sayings-2.json
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from voxloop.errors import VoxloopError


@dataclass(frozen=True)
class SayingSettings:
    paces: tuple[float, ...] = field(default=(0.9, 1.05, 1.1, 1.15, 1.25), metadata={
        "help": "other paces tried at the remembered word lengths (>1 slower)"})
    predicted_paces: tuple[float, ...] = field(default=(1.0, 1.15), metadata={
        "help": "paces tried at the word lengths the mouth predicts"})
    samples: int = field(default=8, metadata={
        "help": "sampled sayings tried (each code drawn at --temperature)"})
    temperature: float = field(default=0.5, metadata={"help": "of the sampled sayings"})
    seed: int = field(default=0, metadata={"help": "of the sampled sayings' draws"})
    listens: int = field(default=2, metadata={
        "help": "noisy listens a saying heard right must pass too (white noise at "
                "--listen-snr-db, seeds 0, 1, ...; 0: heard once, clean); the other ways "
                "stop at the first right under every listen"})
    listen_snr_db: float = field(default=35.0, metadata={
        "help": "the noisy listens' signal-to-noise ratio (dB)"})
    misheard_above_wer_pct: float = field(default=100.0, metadata={
        "help": "an answer heard right is said other ways too when its word error rate is "
                "above this (percent; 100: only answers heard wrong)"})
    recorded_only: bool = field(default=False, metadata={
        "help": "keep the table's sayings as they are (none judged) and only record the "
                "answers the mouth never learned"})
    recorded_takes: int = field(default=4, metadata={
        "help": "takes of the assistant's voice recorded for each answer the student may say "
                "that its mouth never learned (the refusal); the clearest kept (0: none)"})
    again_from: str = field(default="", metadata={
        "help": "a report of an earlier pass (--report): only the answers whose chosen "
                "saying there this judge hears wrong (its clean transcript judged again) or "
                "not under every noisy listen are judged and said other ways; the rest keep "
                "their sayings unjudged (a pass of minutes, not an hour)"})
    decoder: str = field(default="answers", metadata={
        "help": "the codec decoder that judges (answers: the one the student speaks with)"})
    threads: int = field(default=2, metadata={"help": "CPU threads (mouth, codec, Whisper)"})

    def ways(self) -> list[dict]:
        """``Mouth.say`` keyword arguments of every other saying, in trial order."""
        ways = [{"pace": p} for p in self.paces if p != 1.0]
        ways += [{"pace": p, "remembered": False} for p in self.predicted_paces]
        ways += [{"temperature": self.temperature, "seed": 1000 * self.seed + i}
                 for i in range(self.samples)]
        return ways

    def needs_others(self, take) -> bool:
        """Whether an answer whose saying now was judged ``take`` is said other ways."""
        return not take.steady or 100 * take.wer > self.misheard_above_wer_pct


def misheard_in(report_path: str | Path, model_sha256: str = "") -> set[str]:
    """The answer texts whose chosen saying in an earlier ``--report`` the judge hears
    wrong now (its clean transcript judged again: the judge may have changed since), or
    heard right but not under every noisy listen; the answers it did not judge (kept from
    the pass before it) are not among them. A report of other weights is refused."""
    from voxloop.distill.evals.judge import judge
    from voxloop.distill.evals.renditions import Take

    try:
        report = json.loads(Path(report_path).read_text())
        chosen = [(a["text"], Take(**a["takes"][a["chosen"]])) for a in report["answers"]]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise VoxloopError(f"--again-from {report_path}: not a report of "
                           f"`voxloop distill sayings --report` ({e})") from e
    said_by = report.get("model_sha256")
    if said_by and model_sha256 and said_by != model_sha256:
        raise VoxloopError(f"--again-from {report_path} judged another student's sayings "
                           f"(weights {said_by[:12]}, these {model_sha256[:12]})")
    return {text for text, take in chosen
            if not judge(text, take.transcript) or take.noisy_right < take.noisy}


def way_name(way: dict) -> str:
    """``{"pace": 1.1}`` -> ``"pace 1.1"``; ``{}`` -> ``"greedy"``."""
    from voxloop.distill.student.said_codes import RECORDED

    if RECORDED in way:
        return f"recorded ({way[RECORDED]})"
    parts = [f"pace {way['pace']:g}"] if way.get("pace", 1.0) != 1.0 else []
    if way.get("remembered", True) is False:
        parts.append("predicted lengths")
    if way.get("temperature"):
        parts.append(f"sampled at {way['temperature']:g}, seed {way.get('seed', 0)}")
    return ", ".join(parts) or "greedy"


def choose_sayings(folder: str | Path, settings: SayingSettings = SayingSettings(),
                   progress: bool = True) -> dict:
    """Judge every answer the student in ``folder`` remembers, say the misheard ones other
    ways, and write the clearest sayings as its ``said_codes.safetensors``. Returns the
    report: a summary and, per answer, every saying tried (its way, transcript, WER)."""
    import torch
    from tqdm import tqdm

    from voxloop.distill.data.synth import CodecRunner
    from voxloop.distill.evals.renditions import Take, TakeJudge, summarize
    from voxloop.distill.student.codec import load_student_codec
    from voxloop.distill.student.model import load_student, student_folder
    from voxloop.distill.student.said_codes import (
        RECORDED,
        SaidCodes,
        save_said_codes,
        say_known,
        unlearned_answers,
    )
    from voxloop.distill.student.vocab import Tokenizer
    from voxloop.distill.teachers.asr import ASRSettings, load_asr
    from voxloop.distill.teachers.tts import ASSISTANT_VOICE
    from voxloop.models import weights_sha256

    if settings.samples and settings.temperature <= 0:
        raise VoxloopError("--temperature must be above 0 for sampled sayings (or --samples 0)")
    if settings.recorded_takes < 0:
        raise VoxloopError(f"--recorded-takes {settings.recorded_takes}: 0 or more")
    if settings.listens < 0:
        raise VoxloopError(f"--listens {settings.listens}: 0 or more")
    torch.set_num_threads(settings.threads)
    folder = student_folder(folder)
    weights = weights_sha256(folder)
    again = misheard_in(settings.again_from, weights) if settings.again_from else None
    model, vocab = load_student(folder)
    mouth = model.mouth
    if mouth is None or not len(mouth.known_words):
        raise VoxloopError(f"{folder} has no mouth that remembers answers: nothing to say")
    now = mouth.said_codes or say_known(mouth, progress)
    tokenizer = Tokenizer(vocab)
    take_judge = TakeJudge(load_student_codec(None, vocab, settings.decoder),
                           load_asr(ASRSettings(threads=settings.threads)), model.config.k_out,
                           settings.listens, settings.listen_snr_db)
    answers, chosen, chosen_ways, report = [], [], [], []

    def keep(words, text: str, candidates: list, ways: list[dict], judged: list) -> None:
        """Keep the candidate judged clearest, and report every one tried."""
        best = min(range(len(judged)), key=lambda i: judged[i].rank())
        answers.append(list(words))
        chosen.append(candidates[best])
        chosen_ways.append(ways[best])
        report.append({"text": text, "chosen": best, "recorded": RECORDED in ways[best],
                       "ways": [way_name(w) for w in ways],
                       "takes": [asdict(t) for t in judged]})

    recorded_now = {tuple(words): codes for words, codes in now.items()
                    if RECORDED in now.way(words)}  # judged again below, with new takes
    for words, codes in tqdm([item for item in now.items() if item[0] not in recorded_now],
                             desc="sayings", unit="answer", disable=not progress):
        text = tokenizer.decode_answer(words)
        if settings.recorded_only or (again is not None and text not in again):
            answers.append(list(words))
            chosen.append(codes)
            chosen_ways.append(now.way(words))
            continue
        candidates, ways = [codes], [now.way(words)]
        judged = [take_judge(codes.numpy(), text)]
        if settings.needs_others(judged[0]):
            row = torch.tensor([list(words)], device=mouth.pace.device)
            for way in settings.ways():
                said = mouth.say(row, **way)[0].cpu()
                candidates.append(said)
                ways.append(way)
                judged.append(take_judge(said.numpy(), text))
                if not settings.needs_others(judged[-1]):
                    break
        keep(words, text, candidates, ways, judged)
    # each answer the mouth never learned: its take now (if any) judged first, and where
    # there is none or it is misheard, new takes
    unlearned = [words for words in unlearned_answers(model, tokenizer)
                 if tuple(words) in recorded_now or settings.recorded_takes]
    runner = CodecRunner(vocab["codec"]["name"]) if unlearned else None
    for words in tqdm(unlearned, desc="recorded", unit="answer", disable=not progress):
        text = tokenizer.decode_answer(words)
        takes = [recorded_now[tuple(words)]] if tuple(words) in recorded_now else []
        judged = [take_judge(codes.numpy(), text) for codes in takes]
        if not judged or settings.needs_others(judged[0]):
            takes += [recorded_take(text, runner, model.config.k_out)
                      for _ in range(settings.recorded_takes)]
            judged += [take_judge(codes.numpy(), text) for codes in takes[len(judged):]]
        if takes:
            keep(words, text, takes, [{RECORDED: ASSISTANT_VOICE}] * len(takes), judged)
    save_said_codes(SaidCodes(answers, chosen, chosen_ways), folder)
    remembered = [r for r in report if not r["recorded"]]
    recorded = [r for r in report if r["recorded"]]
    tried = [r for r in remembered if len(r["takes"]) > 1]
    summary = {**(summarize(tried) if tried else {}),  # its "answers": the ones tried
               "answers": len(remembered), "answers_said_other_ways": len(tried),
               "answers_kept_unjudged": len(now) - len(recorded_now) - len(remembered),
               "answers_recorded": len(recorded),
               "recorded_right": sum(r["takes"][r["chosen"]]["correct"] for r in recorded),
               "right_now": sum(r["takes"][0]["correct"] for r in remembered),
               "right_chosen": sum(r["takes"][r["chosen"]]["correct"] for r in remembered),
               "steady_now": sum(Take(**r["takes"][0]).steady for r in remembered),
               "steady_chosen": sum(Take(**r["takes"][r["chosen"]]).steady
                                    for r in remembered),
               "chosen_ways": dict(Counter(r["ways"][r["chosen"]] for r in tried)
                                   .most_common())}
    return {"folder": str(folder), "model_sha256": weights, "settings": asdict(settings),
            "summary": summary, "answers": report}


def recorded_take(text: str, runner, codebooks: int):
    """One take of ``text`` in the assistant's voice through ``runner``'s codec (a
    ``CodecRunner``): codes ``[codebooks, F]`` (int64), as the mouth learned its answers
    (piper draws its noise anew every call, so takes differ)."""
    import torch

    from voxloop.distill.data.synth import voice_take
    from voxloop.distill.teachers.tts import ASSISTANT_VOICE

    codes = runner.encode(voice_take(text, ASSISTANT_VOICE))
    return torch.from_numpy(codes[:codebooks].astype("int64"))


def write_report(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
