"""The synth job: speech1 = augment(TTS(user voice)) -> text1 = ASR -> text2 = LLM ->
speech2 = TTS(assistant) -> codes of both, written shard by shard. Turns planned
without ASR (``SynthSettings.asr_splits``, by default every training turn) skip the
slowest stage: text1 is the prompt and text2 the LLM's answer to it, the intended one.

A shard is done iff its file exists, so a killed job started again redoes at most
the shard it was writing. Answers repeat a lot, so speech2 is cached by text2 in
``answers/`` of the dataset folder (first writer wins): every example with the
same answer text gets the same audio, across restarts and ranks, although piper
samples its prosody. When the codec's weights change, ``recode`` recomputes the
codes from the stored audio without running the teachers again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from voxloop.audio import MODEL_RATE_HZ, from_pcm16, resample, to_pcm16
from voxloop.distill.data.augment import Augmentation, augment
from voxloop.distill.data.dataset import (
    FORMAT_VERSION,
    MANIFEST,
    DialogueExample,
    read_shard,
    remove_stale_tmp,
    shard_path,
    write_manifest,
    write_shard,
)
from voxloop.distill.data.plan import (
    SynthItem,
    SynthSettings,
    my_shards,
    parse_share,
    plan,
    plan_sha256,
    shards,
)
from voxloop.distill.teachers.asr import ASRSettings, load_asr
from voxloop.distill.teachers.domain.data import canonical_question
from voxloop.distill.teachers.llm import LLMSettings, load_llm
from voxloop.distill.teachers.tts import ASSISTANT_VOICE, synthesize
from voxloop.errors import VoxloopError
from voxloop.training import temp_path

log = logging.getLogger(__name__)
PEAK = 0.95  # user speech is attenuated to this peak, as in the codec corpus


def voice_take(text: str, voice: str) -> np.ndarray:
    """A new rendition of ``text`` by ``voice`` (piper draws its noise anew every call):
    int16 ``[T]`` at MODEL_RATE_HZ."""
    samples, rate_hz = synthesize(text, voice)
    return to_pcm16(resample(samples, rate_hz, MODEL_RATE_HZ))


class CodecRunner:
    """The codec by name or folder, with the fingerprint stored next to its codes."""

    def __init__(self, name_or_dir: str) -> None:
        from voxloop.codecs.registry import codec_sha256, load_codec

        self.codec = load_codec(name_or_dir)
        sha = codec_sha256(name_or_dir) or self.codec.name  # encodec_24khz: its name
        self.info = {"name": self.codec.name, "sha256": sha,
                     "frame_rate_hz": float(self.codec.frame_rate),
                     "num_codebooks": int(self.codec.num_codebooks),
                     "sample_rate_hz": int(self.codec.sample_rate)}

    def encode(self, pcm16: np.ndarray) -> np.ndarray:
        """int16 ``[T]`` at MODEL_RATE_HZ -> int16 codes ``[K, F]``."""
        import torch

        wav = resample(from_pcm16(pcm16), MODEL_RATE_HZ, self.codec.sample_rate)
        codes = self.codec.encode(torch.from_numpy(wav)[None, None])
        return codes[0].numpy().astype(np.int16)


class AnswerCache:
    """speech2 by text2, as int16 at MODEL_RATE_HZ files in ``folder``; first writer wins."""

    def __init__(self, folder: Path, voice: str = ASSISTANT_VOICE) -> None:
        self.folder, self.voice = folder, voice

    def path(self, text: str) -> Path:
        key = hashlib.sha256(f"{self.voice}\n{text}".encode()).hexdigest()[:24]
        return self.folder / f"{key}.npy"

    def get(self, text: str) -> tuple[np.ndarray, bool]:
        """(int16 ``[T]``, whether it was cached)."""
        path = self.path(text)
        if path.is_file():
            return np.load(path), True
        pcm = self.take(text)
        tmp = self._write_tmp(path, pcm)
        try:
            os.link(tmp, path)  # fails if another process got there first
        except FileExistsError:
            pcm = np.load(path)
        finally:
            tmp.unlink()
        return pcm, False

    def take(self, text: str) -> np.ndarray:
        """A new rendition of ``text`` (``voice_take``), not cached."""
        return voice_take(text, self.voice)

    def replace(self, text: str, pcm: np.ndarray) -> None:
        """Make ``pcm`` the cached speech of ``text`` (``voxloop distill renditions``)."""
        path = self.path(text)
        os.replace(self._write_tmp(path, pcm), path)

    @staticmethod
    def _write_tmp(path: Path, pcm: np.ndarray) -> Path:
        buffer = io.BytesIO()
        np.save(buffer, pcm)
        tmp = temp_path(path)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(buffer.getvalue())
        return tmp


class Teachers:
    """ASR, LLM, assistant TTS and codec: one example from a planned item."""

    def __init__(self, folder: Path, asr: ASRSettings, llm: LLMSettings,
                 codec: CodecRunner) -> None:
        self.asr, self.llm = load_asr(asr), load_llm(llm)
        self.names = {"asr": f"{asr.backend}:{asr.model}", "llm": llm.backend if
                      llm.backend == "scripted" else f"{llm.backend}:{llm.model}@{llm.url}"}
        self.answers = AnswerCache(folder / "answers")
        self.codec = codec
        self.answer_codes: dict[str, np.ndarray] = {}  # text2 -> codes of its cached speech2

    def user_speech(self, item: SynthItem) -> np.ndarray:
        """speech1: int16 ``[T]`` at MODEL_RATE_HZ, augmented and peak-limited."""
        samples, rate_hz = synthesize(item.prompt_text, item.user_voice)
        if item.augmentation:
            samples = augment(samples, rate_hz, Augmentation(**item.augmentation), item.seed)
        samples = resample(samples, rate_hz, MODEL_RATE_HZ)
        peak = float(np.max(np.abs(samples))) if samples.size else 0.0
        return to_pcm16(samples * min(1.0, PEAK / peak) if peak > 0 else samples)

    def __call__(self, item: SynthItem, keep_audio: bool) -> DialogueExample:
        ms, t = {}, time.perf_counter()

        def tick(stage: str) -> None:
            nonlocal t
            now = time.perf_counter()
            ms[stage], t = round(1000 * (now - t), 1), now

        speech1 = self.user_speech(item)
        tick("tts_user")
        text1 = self.asr.transcribe(from_pcm16(speech1), MODEL_RATE_HZ) if item.asr \
            else item.prompt_text
        tick("asr")
        text2 = self.llm.reply([], text1)
        tick("llm")
        if not text2.strip():
            raise VoxloopError(f"the LLM gave an empty answer to {text1!r} ({item.id})")
        speech2, cached = self.answers.get(text2)
        tick("tts_answer")
        codes1 = self.codec.encode(speech1)
        if text2 not in self.answer_codes:  # one answer, one audio (the cache): one encoding
            self.answer_codes[text2] = self.codec.encode(speech2)
        codes2 = self.answer_codes[text2]
        tick("codec")
        meta = {"template": item.template, "fill": item.fill, "slots": dict(item.slots),
                "augmentation": item.augmentation, "augment_seed": item.seed,
                "timing_ms": ms, "answer_cached": cached, "asr": item.asr,
                "teachers": self.names if item.asr else {**self.names, "asr": "skipped"},
                "duration_s": {"user": len(speech1) / MODEL_RATE_HZ,
                               "answer": len(speech2) / MODEL_RATE_HZ},
                "codec": {"name": self.codec.info["name"], "sha256": self.codec.info["sha256"]}}
        if hasattr(self.llm, "match"):  # the scripted teacher: which intent it answered,
            meta["answer_intent"] = self.llm.match(text1).intent  # and the intended answer
            meta["prompt_answer"] = self.llm.reply([], canonical_question(
                item.intent, item.slots, item.prompt_text))
        return DialogueExample(
            item.id, item.split, item.intent, item.user_voice, item.prompt_text, text1, text2,
            codes1, codes2, meta, speech1 if keep_audio else None,
            speech2 if keep_audio else None)


def _manifest(settings: SynthSettings, items: list[SynthItem],
              planned: dict[str, list[SynthItem]], codec: dict) -> dict:
    splits = {}
    for name, its in planned.items():
        info = splits.setdefault(its[0].split, {"examples": 0, "shards": {}})
        info["examples"] += len(its)
        info["shards"][name] = len(its)
    return _with_codec({
        "format_version": FORMAT_VERSION, "audio_rate_hz": MODEL_RATE_HZ,
        "keep_audio": settings.keep_audio, "assistant_voice": ASSISTANT_VOICE,
        "settings": settings.plan_key(), "plan_sha256": plan_sha256(items),
        "examples": len(items), "splits": splits}, codec)


def _with_codec(manifest: dict, codec: dict) -> dict:
    return {**manifest, "codec": {k: codec[k] for k in ("name", "sha256")},
            "frame_rate_hz": codec["frame_rate_hz"], "num_codebooks": codec["num_codebooks"],
            "codec_sample_rate_hz": codec["sample_rate_hz"]}


def _shard_codec_sha(path: Path) -> str:
    import json

    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data["codec"]))["sha256"]


def recode_shards(folder: Path, names: list[str], codec: CodecRunner) -> int:
    """Re-encode finished shards whose codes are not the current codec's; returns how many."""
    stale = [n for n in names if shard_path(folder, n).is_file()
             and _shard_codec_sha(shard_path(folder, n)) != codec.info["sha256"]]
    info = {"name": codec.info["name"], "sha256": codec.info["sha256"]}
    for name in tqdm(stale, desc="recode", unit="shard", disable=not stale):
        examples, _ = read_shard(shard_path(folder, name))
        if any(ex.user_audio is None or ex.answer_audio is None for ex in examples):
            raise VoxloopError(f"{name} was written with --no-keep-audio: its codes cannot be "
                               "recomputed; synthesize the dataset again into a new folder")
        examples = [replace(ex, user_codes=codec.encode(ex.user_audio),
                            answer_codes=codec.encode(ex.answer_audio),
                            meta={**ex.meta, "codec": info}) for ex in examples]
        write_shard(shard_path(folder, name), examples, info)
    return len(stale)


def _sync_codec(folder: Path, manifest: dict, names: list[str], codec: CodecRunner) -> None:
    """Point the manifest at the current codec once every finished shard uses it."""
    done = [n for n in names if shard_path(folder, n).is_file()]
    if all(_shard_codec_sha(shard_path(folder, n)) == codec.info["sha256"] for n in done):
        write_manifest(folder, manifest)


def recode_dataset(settings: SynthSettings) -> Path:
    """Re-encode this share of the finished shards with ``settings.codec``; no planning,
    so it works wherever the manifest and shards are (other voices installed or not)."""
    import json

    import torch

    torch.set_num_threads(max(1, settings.threads))
    folder = Path(settings.out)
    if not (folder / MANIFEST).is_file():
        raise VoxloopError(f"nothing to recode: {folder / MANIFEST} does not exist")
    old = json.loads((folder / MANIFEST).read_text())
    names = [name for info in old["splits"].values() for name in info["shards"]]
    codec = CodecRunner(settings.codec)
    recode_shards(folder, my_shards(names, parse_share(settings.shard)), codec)
    _sync_codec(folder, _with_codec(old, codec.info), names, codec)
    return folder


def run_synth(settings: SynthSettings, asr: ASRSettings | None = None,
              llm: LLMSettings | None = None) -> Path:
    """Make (or finish, or recode) this process's share of the dataset in ``settings.out``."""
    import json

    import torch

    if settings.recode:
        return recode_dataset(settings)
    asr, llm = asr or ASRSettings(), llm or LLMSettings()
    torch.set_num_threads(max(1, settings.threads))
    if asr.threads == 0:
        asr = replace(asr, threads=settings.threads)
    folder = Path(settings.out)
    items = plan(settings)
    if not items:
        raise VoxloopError("the plan is empty: check --intents and --user-voices")
    planned = shards(items, settings.examples_per_shard)
    names = list(planned)
    codec = CodecRunner(settings.codec)
    manifest = _manifest(settings, items, planned, codec.info)
    old_path = folder / MANIFEST
    if old_path.is_file():
        old = json.loads(old_path.read_text())
        if old["plan_sha256"] != manifest["plan_sha256"]:
            raise VoxloopError(
                f"{folder} holds another plan (settings {old['settings']}); use the same "
                "plan settings to resume, or another --out")
        held = old["settings"].get("examples_per_shard")
        if held != settings.examples_per_shard:  # the same items, cut into other shards
            raise VoxloopError(
                f"{folder}'s shards hold {held} examples each: resume with "
                f"--examples-per-shard {held}, or use another --out")
        if old["codec"]["sha256"] == codec.info["sha256"]:
            manifest = old  # keep the file as it is; nothing changed
    mine = my_shards(names, parse_share(settings.shard))
    for path in remove_stale_tmp(folder):
        log.warning("removed %s, left by a killed run", path)
    recode_shards(folder, mine, codec)
    _sync_codec(folder, manifest, names, codec)
    todo = [n for n in mine if not shard_path(folder, n).is_file()]
    teachers = Teachers(folder, asr, llm, codec)
    total = sum(len(planned[n]) for n in todo)
    with tqdm(total=total, desc=f"distill synth {settings.shard or 'all'}", unit="ex",
              dynamic_ncols=True, smoothing=0.05) as bar:
        for name in todo:
            examples = []
            for item in planned[name]:
                try:
                    examples.append(teachers(item, settings.keep_audio))
                except Exception as exc:  # say which example broke which teacher
                    raise VoxloopError(f"example {item.id} ({item.prompt_text!r}, shard "
                                       f"{name}) failed: {type(exc).__name__}: {exc}") from exc
                bar.update(1)
            write_shard(shard_path(folder, name), examples,
                        {"name": codec.info["name"], "sha256": codec.info["sha256"]})
            bar.set_postfix_str(name, refresh=False)
            log.info("wrote %s (%d examples)", name, len(examples))
    _sync_codec(folder, manifest, names, codec)
    return folder
