"""``voxloop eval routing``: when the hybrid engine asks the cascade about a spoken turn,
and when it takes the cascade's refusal (:mod:`realtime.engines.hybrid`).

The student answers spoken questions of its domain better than the cascade on the whole,
but where it is unsure of its words (their log-probability under its own text head is
low) it is wrong far more often, and there the cascade (its Whisper hears the question
anew) may be right. The cascade's scripted LLM refuses what it cannot match: a question
Whisper misheard (then the student should answer after all) or one outside the domain
(where the student, which never learned to refuse, makes an answer up). Whisper's mean
token log-probability tells the two apart: it is low where it misheard.

For every turn of the splits this reads the user audio of a dataset, lets the student
answer it (heard as the engine's stream hears it) and the cascade (the ASR teacher, scored,
and the LLM). Both thresholds are chosen on one split (``choose_on``: by default valid,
never a held-out split): a refusal is taken where Whisper is surer than on
``refusal_quantile`` of the in-domain turns it refused there (all of them mishearings);
then the student's threshold is the one whose hybrid has the most intended answers while
it asks the cascade about at most ``max_asked_pct`` of that split's turns (a turn asked
about waits for the cascade's Whisper; one it answers takes the cascade's latency). Both
are then measured on every split, and on questions outside the domain
(:data:`OUT_OF_DOMAIN`, spoken by the held-out voices, augmented as the datasets are),
whose right answer is the refusal: the words, and (``out_loud``, off the choose-on split)
each answer heard by Whisper as it is said, the student's through the codec's answers
decoder and the cascade's by its TTS, judged as ``eval student`` judges.

Writes ``routing.json``, ``routing.md``, ``turns.jsonl`` and ``routing.png`` (hybrid
answers right against the share of turns the cascade is asked about, per split); with
``export``, the thresholds beside the student's weights (:mod:`distill.student.confidence`),
where the hybrid engine reads them. ``rescore`` reads an earlier run's ``turns.jsonl`` back
instead of answering the turns again (another cap or quantile in seconds, not 30 minutes);
``routing.md`` also shows the refusal rule's trade (never / always / as chosen).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

OUT_OF_DOMAIN_SPLIT = "out_of_domain"
OUT_OF_DOMAIN = (  # questions a user may ask that the domain does not answer
    "who won the football match last night", "can you book me a table for two",
    "what is the meaning of life", "play some music", "how do I fix my bicycle",
    "tell me about the roman empire", "what is the stock price of apple",
    "translate hello into french", "who is the president of brazil",
    "how tall is the eiffel tower", "set an alarm for seven", "what should I cook for dinner",
    "how do airplanes fly", "send a message to my mother", "what is quantum physics",
    "recommend a good book", "how far is the nearest hospital",
    "what movies are playing tonight", "remind me to buy milk", "turn off the lights",
    "what is the best programming language", "how old is the universe",
    "can you order a pizza", "who painted the mona lisa", "what are the lottery numbers",
    "how do I lose weight", "call a taxi for me", "what is my bank balance",
    "write a poem about the sea", "why do cats purr")


@dataclass(frozen=True)
class RoutingSettings:
    data: str = field(default="data/distill-v2", metadata={
        "help": "dataset folder (voxloop distill synth) whose turns kept their user audio"})
    splits: tuple[str, ...] = field(default=("valid", "heldout_voice", "heldout_phrasing"),
                                    metadata={"help": "splits to measure", "metavar": "SPLIT"})
    choose_on: str = field(default="valid", metadata={
        "help": "the split the thresholds are chosen on (keep the held-out ones out)"})
    max_asked_pct: float = field(default=10.0, metadata={
        "help": "the most turns of the choose-on split the cascade may be asked about (each "
                "waits for its Whisper and LLM, and those it answers take its latency)"})
    refusal_quantile: float = field(default=0.9, metadata={
        "help": "a refusal is taken where Whisper is surer than on this share of the "
                "choose-on split's turns the cascade refused (mishearings)"})
    out_of_domain: bool = field(default=True, metadata={
        "help": "also measure questions outside the domain (the held-out voices speak them)"})
    out_loud: bool = field(default=True, metadata={
        "help": "also judge every answer out loud on the splits the thresholds are not "
                "chosen on: the student's through the codec's answers decoder, the "
                "cascade's as its TTS says it, each heard by Whisper (as eval student)"})
    limit: int = field(default=0, metadata={"help": "turns per split (0: all)"})
    chunk_frames: int = field(default=5, metadata={"help": "prefill chunk (tokens)"})
    threads: int = field(default=1, metadata={"help": "torch threads"})
    out: str = field(default="out/routing-eval", metadata={
        "help": "folder for routing.json, routing.md, turns.jsonl and routing.png"})
    export: bool = field(default=False, metadata={
        "help": "keep the chosen thresholds beside the student's weights (routing.json), "
                "where the hybrid engine reads them"})
    rescore: bool = field(default=False, metadata={
        "help": "choose and measure again on the turns an earlier run saved in --out "
                "(turns.jsonl: no model runs; e.g. another --max-asked-pct)"})


def answered_by_cascade(row: dict, unsure_below: float, refusal_above: float | None) -> bool:
    """The hybrid engine's rule for one turn: the cascade answers where the student refuses,
    or where the student is unsure (its words score below ``unsure_below``) and the cascade
    does not refuse, or refuses having heard surely (Whisper's score at least
    ``refusal_above``; None: never)."""
    if row["student_refuses"]:
        return True
    if row["logprob"] >= unsure_below:
        return False
    heard = row["cascade_heard_logprob"]
    return not row["cascade_refuses"] or (refusal_above is not None and heard is not None
                                          and heard >= refusal_above)


def hybrid(rows: list[dict], unsure_below: float, refusal_above: float | None) -> dict:
    """% of turns the hybrid answers right, % it asks the cascade about (the student refuses
    or is unsure: those wait for its Whisper and LLM) and % the cascade answers."""
    asked = np.array([r["student_refuses"] or r["logprob"] < unsure_below for r in rows], bool)
    cascade = np.array([answered_by_cascade(r, unsure_below, refusal_above) for r in rows],
                       bool)
    right = np.where(cascade, [r["cascade_right"] for r in rows],
                     [r["student_right"] for r in rows])
    result = {"right_pct": 100 * float(right.mean()), "asked_pct": 100 * float(asked.mean()),
              "cascade_pct": 100 * float(cascade.mean())}
    if rows and all("student_out_loud" in r for r in rows):
        heard = np.where(cascade, [r["cascade_out_loud"] for r in rows],
                         [r["student_out_loud"] for r in rows])
        result["out_loud_pct"] = 100 * float(heard.mean())
    return result


def refusal_threshold(rows: list[dict], quantile: float) -> float | None:
    """Whisper's score above ``quantile`` of the in-domain ``rows`` the cascade refused (all
    mishearings: the domain answers every question of a dataset); None where it refused
    none."""
    heard = [r["cascade_heard_logprob"] for r in rows
             if r["cascade_refuses"] and r["cascade_heard_logprob"] is not None]
    return float(np.quantile(heard, quantile)) if heard else None


def choose_threshold(rows: list[dict], max_asked_pct: float = 100.0,
                     refusal_above: float | None = None) -> float:
    """Of the student's thresholds that ask the cascade about at most ``max_asked_pct`` of
    ``rows``, the one with the most hybrid answers right; of equals, the one that asks
    least. Each lies halfway between two turns' log-probabilities (or is ``-inf``: never
    ask; or 0: always)."""
    values = np.unique([r["logprob"] for r in rows])
    candidates = [-np.inf, *(values[:-1] + values[1:]) / 2, 0.0]
    results = {t: hybrid(rows, t, refusal_above) for t in candidates}
    allowed = [t for t in candidates if results[t]["asked_pct"] <= max_asked_pct] or [-np.inf]
    return float(max(allowed, key=lambda t: (results[t]["right_pct"], -results[t]["asked_pct"])))


def score(rows: list[dict], unsure_below: float, refusal_above: float | None,
          chosen_on: str = "") -> dict:
    """Per split and "all" (the in-domain splits the thresholds were not chosen on), at
    the two thresholds; "before" is the hybrid that asked the cascade only where the
    student refused."""
    out = {}
    measured = {r["split"] for r in rows} - {chosen_on, OUT_OF_DOMAIN_SPLIT}
    for split in [*dict.fromkeys(r["split"] for r in rows), "all"]:
        mine = [r for r in rows if r["split"] == split or (split == "all" and
                                                           r["split"] in measured)]
        if not mine:
            continue
        switched = [r for r in mine if answered_by_cascade(r, unsure_below, refusal_above)]
        at, before = hybrid(mine, unsure_below, refusal_above), hybrid(mine, -np.inf, None)
        out[split] = {
            "turns": len(mine),
            "student_pct": 100 * float(np.mean([r["student_right"] for r in mine])),
            "cascade_pct": 100 * float(np.mean([r["cascade_right"] for r in mine])),
            "hybrid_before_pct": before["right_pct"],
            "hybrid_pct": at["right_pct"], "asked_pct": at["asked_pct"],
            "answered_by_cascade_pct": at["cascade_pct"],
            "switched_student_right": sum(r["student_right"] for r in switched),
            "switched_cascade_right": sum(r["cascade_right"] for r in switched)}
        if "out_loud_pct" in at:
            out[split].update({
                "student_out_loud_pct":
                    100 * float(np.mean([r["student_out_loud"] for r in mine])),
                "hybrid_before_out_loud_pct": before["out_loud_pct"],
                "hybrid_out_loud_pct": at["out_loud_pct"]})
    return out


REFUSAL_TRADE = (("no refusal taken", None), ("every refusal taken", -np.inf))


def refusal_trade(rows: list[dict], unsure_below: float, refusal_above: float | None
                  ) -> dict:
    """Hybrid % right (its words) per split where the cascade's refusals are never taken,
    always, and at the chosen Whisper score: fewer taken answers more of the domain (a
    misheard question gets the student's answer) and refuses fewer questions outside it."""
    splits = [*dict.fromkeys(r["split"] for r in rows)]
    return {label: {split: hybrid([r for r in rows if r["split"] == split], unsure_below,
                                  above)["right_pct"] for split in splits}
            for label, above in (*REFUSAL_TRADE, ("chosen", refusal_above))}


def evaluate_routing(model_dir: str | Path, settings: RoutingSettings, progress=True) -> dict:
    """Answer every turn with both engines (or read them back: ``rescore``), choose the
    thresholds, measure them and write the reports (and, with ``export``, the thresholds)."""
    from voxloop.distill.data.semantic_job import HELDOUT_SPLITS
    from voxloop.distill.student.confidence import words_sha256
    from voxloop.distill.student.model import student_folder
    from voxloop.errors import VoxloopError

    if settings.choose_on in HELDOUT_SPLITS:
        raise VoxloopError(f"--choose-on {settings.choose_on}: a held-out split is measured "
                           "on, never chosen on (choose on valid)")
    if settings.choose_on not in settings.splits:
        raise VoxloopError(f"--choose-on {settings.choose_on} is not one of --splits "
                           f"{' '.join(settings.splits)}")
    words = words_sha256(student_folder(model_dir))
    if not settings.rescore:
        return route(_answer_turns(model_dir, settings, progress, words), model_dir, settings)
    rows, taken = [], Counter()
    for row in read_turns(Path(settings.out) / "turns.jsonl"):
        if row.get("words_sha256", words) != words:
            raise VoxloopError(f"{settings.out}'s turns were answered by other weights than "
                               f"{model_dir}'s: answer them again (no --rescore)")
        split = row["split"]
        if split == OUT_OF_DOMAIN_SPLIT:  # --limit: questions, each in every held-out voice
            if settings.out_of_domain and (not settings.limit or
                                           int(row["id"].split("-")[1]) < settings.limit):
                rows.append(row)
        elif split in settings.splits and (not settings.limit or taken[split] < settings.limit):
            taken[split] += 1
            rows.append(row)
    return route(rows, model_dir, settings)


def read_turns(path: Path) -> list[dict]:
    from voxloop.errors import VoxloopError

    if not path.is_file():
        raise VoxloopError(f"--rescore reads the turns of an earlier run, and {path} is "
                           "missing: run voxloop eval routing with this --out first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _answer_turns(model_dir: str | Path, settings: RoutingSettings, progress: bool,
                  words: str | None) -> list[dict]:
    import torch
    from tqdm import tqdm

    from voxloop.distill.data.dataset import spoken_turns
    from voxloop.distill.student.codec import load_student_codec
    from voxloop.distill.student.model import load_student
    from voxloop.distill.student.user_tokens import load_student_semantic
    from voxloop.distill.student.vocab import Tokenizer, answer_words
    from voxloop.distill.teachers.asr import load_asr
    from voxloop.distill.teachers.domain.data import load_domain
    from voxloop.distill.teachers.llm import load_llm
    from voxloop.errors import VoxloopError

    torch.set_num_threads(settings.threads)
    model, vocab = load_student(model_dir)
    if model.config.user_input != "semantic":
        raise VoxloopError(f"{model_dir} hears codec codes: routing is measured for a "
                           "semantic student")
    codec = load_student_codec(None, vocab) if settings.out_loud else None
    both = _Both(model, Tokenizer(vocab), load_student_semantic(None, vocab, model), load_asr(),
                 load_llm(), answer_words(load_domain()["fallback"]), settings.chunk_frames,
                 codec)
    rows = [both.answer(split, turn_id, audio, intended, out_loud=split != settings.choose_on)
            for split in settings.splits
            for turn_id, audio, intended in spoken_turns(settings.data, split, settings.limit,
                                                         progress, f"routing {split}")]
    if settings.out_of_domain:
        refusal = load_domain()["fallback"]
        rows += [both.answer(OUT_OF_DOMAIN_SPLIT, name, audio, refusal, out_loud=True)
                 for name, audio in tqdm(out_of_domain_turns(settings.limit),
                                         desc="routing out of domain", unit="turn",
                                         disable=not progress)]
    return [{**row, "words_sha256": words} for row in rows]  # what --rescore checks


def route(rows: list[dict], model_dir: str | Path, settings: RoutingSettings) -> dict:
    """Thresholds chosen on ``settings.choose_on``'s turns, measured on all of them; writes
    the reports into ``settings.out`` (and the thresholds beside the weights: ``export``)."""
    from voxloop.distill.evals.routing_report import format_routing, plot_routing
    from voxloop.errors import VoxloopError

    chooser = [r for r in rows if r["split"] == settings.choose_on]
    if not chooser:
        raise VoxloopError(f"no {settings.choose_on} turns to choose the thresholds on")
    refusal_above = refusal_threshold(chooser, settings.refusal_quantile)
    unsure_below = choose_threshold(chooser, settings.max_asked_pct, refusal_above)
    result = {"model": str(model_dir), "settings": asdict(settings),
              "min_words_logprob": unsure_below, "refusal_heard_logprob": refusal_above,
              "scores": score(rows, unsure_below, refusal_above, settings.choose_on),
              "refusal_trade": refusal_trade(rows, unsure_below, refusal_above)}
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "routing.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "routing.md").write_text(format_routing(result) + "\n")
    if not settings.rescore:
        with open(out / "turns.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    plot_routing(rows, refusal_above, unsure_below, out / "routing.png")
    if settings.export:
        from voxloop.distill.student.confidence import Routing, write_routing
        from voxloop.distill.student.model import student_folder

        write_routing(student_folder(model_dir), Routing(unsure_below, refusal_above), {
            "chosen_on": settings.choose_on, "max_asked_pct": settings.max_asked_pct,
            "refusal_quantile": settings.refusal_quantile,
            "command": f"voxloop eval routing --data {settings.data} --choose-on "
                       f"{settings.choose_on} --max-asked-pct {settings.max_asked_pct:g} "
                       f"--refusal-quantile {settings.refusal_quantile:g} --export"
                       + (" --rescore" if settings.rescore else ""),
            "scores": result["scores"]})
    return result


@dataclass
class _Both:
    """The student and the cascade on one turn's audio, as the hybrid hears it."""

    model: object
    tokenizer: object
    semantic: object
    asr: object
    llm: object
    refusal: list[str]
    chunk_frames: int
    codec: object | None  # the student's codec (with its answers decoder): out loud

    def answer(self, split: str, name: str, audio_16k: np.ndarray, intended: str,
               out_loud: bool) -> dict:
        from voxloop.distill.evals.judge import judge
        from voxloop.distill.evals.student import transcribe_codes
        from voxloop.distill.student.generate import SamplingOptions
        from voxloop.distill.student.one_turn import generate
        from voxloop.distill.student.user_tokens import as_frames, encode_clips
        from voxloop.distill.student.vocab import answer_words
        from voxloop.distill.teachers.tts import ASSISTANT_VOICE, synthesize

        tokens = encode_clips(self.semantic, [audio_16k])[0]
        said = generate(self.model, self.tokenizer, as_frames(tokens).astype(np.int64),
                        SamplingOptions(), self.chunk_frames)
        heard, heard_logprob = self.asr.transcribe_scored(audio_16k, 16_000)
        cascade = self.llm.reply([], heard)
        words, own = answer_words(intended), answer_words(said.text)
        row = {"split": split, "id": name, "intended": intended, "student": said.text,
               "logprob": said.text_logprob, "student_right": own == words,
               # no words at all: the engine asks the cascade as for a refusal
               "student_refuses": own == self.refusal or not own,
               "cascade_heard": heard, "cascade_heard_logprob": heard_logprob,
               "cascade": cascade, "cascade_right": answer_words(cascade) == words,
               "cascade_refuses": answer_words(cascade) == self.refusal}
        if out_loud and self.codec is not None:
            spoken, rate_hz = synthesize(cascade, ASSISTANT_VOICE)
            row["student_heard"] = transcribe_codes(self.codec, self.asr, said.codes)
            row["cascade_heard_back"] = self.asr.transcribe(spoken, rate_hz)
            row["student_out_loud"] = judge(intended, row["student_heard"])
            row["cascade_out_loud"] = judge(intended, row["cascade_heard_back"])
        return row


def out_of_domain_turns(limit: int = 0):
    """``(name, float32 16 kHz audio)`` of each :data:`OUT_OF_DOMAIN` question in each
    held-out voice, 70 % of them augmented as the datasets are (seeded: the same every run)."""
    from voxloop.distill.data.augment import spoken
    from voxloop.distill.teachers.heldout import HELDOUT_VOICES

    rng = np.random.default_rng(0)
    questions = OUT_OF_DOMAIN[:limit] if limit else OUT_OF_DOMAIN
    for voice in HELDOUT_VOICES:
        for k, question in enumerate(questions):
            yield f"ood-{k}-{voice}", spoken(question, voice, rng)
