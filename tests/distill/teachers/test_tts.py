"""TTS catalog and backends (real synthesizers), augmentation, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from voxloop.audio import write_wav
from voxloop.distill.data import augment as aug
from voxloop.distill.teachers.tts import ASSISTANT_VOICE, available_voices, list_voices, synthesize
from voxloop.errors import MissingDependencyError, VoxloopError

EXPECTED_VOICES = {"piper:joe", "festival:slt-hts", "festival:kal", "flite:slt", "flite:kal16",
                   "flite:awb", "flite:rms", "espeak:en-us", "espeak:en-us+f3", "espeak:en-gb"}


def test_catalog_lists_every_installed_voice():
    names = {v.name for v in available_voices()}
    assert names >= EXPECTED_VOICES, EXPECTED_VOICES - names
    assert [v.name for v in available_voices("assistant")] == [ASSISTANT_VOICE]


@pytest.mark.slow
@pytest.mark.parametrize("voice", sorted(v.name for v, ok, _ in list_voices() if ok))
def test_every_voice_speaks(voice):
    samples, rate_hz = synthesize("The quick brown fox.", voice)
    seconds = len(samples) / rate_hz
    assert samples.dtype == np.float32
    assert 0.5 < seconds < 5.0, seconds
    assert 0.05 < float(np.abs(samples).max()) <= 1.0


BASE_VOICES = ["piper:joe", "festival:slt-hts", "festival:kal", "flite:slt", "flite:kal16",
               "flite:awb", "flite:rms", "espeak:en-us", "espeak:en-us+f3", "espeak:en-gb",
               "espeak:en-gb-scotland+m3", "espeak:en-029+f2"]


def test_variant_voices_add_speakers_and_keep_the_base_catalog():
    from voxloop.distill.teachers.heldout import HELDOUT_VOICES

    assert [v.name for v in available_voices()] == BASE_VOICES  # corpus and evals use these
    users = [v.name for v in available_voices("user", variants=True)]
    assert len(users) >= 100 and len(set(users)) == len(users)
    assert {"espeak:en-gb-x-rp+f2", "espeak:en-us-nyc+klatt", "espeak:en-gb-x-gbcwmd+m7",
            "piper:joe@ls1.2", "piper:joe@ns0.3"} <= set(users)
    assert set(HELDOUT_VOICES) <= set(users)
    assert [u for u in users if "scotland" in u] == ["espeak:en-gb-scotland+m3"]


@pytest.mark.slow
def test_piper_variants_change_speed():
    # Piper draws its durations at random (noise_w), so one take of each varies by
    # about +-5 %: compare the medians of three. Silences do not scale with the length,
    # so 1.35 / 0.85 comes out near 1.38 (1.30-1.46 over 15 pairs), not 1.59.
    def median_samples(voice: str) -> float:
        return float(np.median([len(synthesize("What is the capital of France?", voice)[0])
                                for _ in range(3)]))

    assert median_samples("piper:joe@ls1.35") > 1.2 * median_samples("piper:joe@ls0.85")


def test_cli_lists_the_variant_voices():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "voxloop", "tts", "--list-voices"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert names[0] == "piper:joe" and set(BASE_VOICES) <= set(names)
    assert {"piper:joe@ls1.2", "espeak:en-029+klatt2", "flite:rms"} <= set(names)
    assert len(names) == len(list_voices())


def test_unknown_voice_names_the_known_ones():
    with pytest.raises(VoxloopError, match="known voices: .*flite:slt"):
        synthesize("hi", "nobody:nothing")


def test_missing_program_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(VoxloopError, match="apt-get install flite"):
        synthesize("hi", "flite:slt")
    missing = [(v.name, fix) for v, ok, fix in list_voices(include_missing=True) if not ok]
    assert any("festival" in fix for _, fix in missing)


def test_empty_text_is_refused():
    with pytest.raises(VoxloopError, match="empty"):
        synthesize("  ", "flite:slt")


@pytest.fixture(scope="module")
def speech():
    return synthesize("Testing one two three.", "flite:slt")


def test_augmentation_is_deterministic(speech):
    samples, rate_hz = speech
    recipe = aug.draw_augmentation(np.random.default_rng(7))
    a = aug.augment(samples, rate_hz, recipe, seed=11)
    b = aug.augment(samples, rate_hz, recipe, seed=11)
    np.testing.assert_array_equal(a, b)


def test_speed_changes_duration(speech):
    samples, rate_hz = speech
    fast = aug.augment(samples, rate_hz, aug.Augmentation(speed=1.25), seed=0)
    assert abs(len(fast) - len(samples) / 1.25) < 0.01 * len(samples)


def test_pitch_keeps_duration_and_changes_the_signal(speech):
    samples, rate_hz = speech
    shifted = aug.augment(samples, rate_hz, aug.Augmentation(pitch_semitones=3.0), seed=0)
    assert abs(len(shifted) - len(samples)) < 0.02 * len(samples)
    n = min(len(shifted), len(samples))
    assert np.corrcoef(shifted[:n], samples[:n])[0, 1] < 0.9


def test_noise_is_added_at_the_requested_snr(speech):
    samples, rate_hz = speech
    noisy = aug.add_noise(samples, 10.0, np.random.default_rng(0))
    noise = noisy - samples
    snr_db = 10 * np.log10(np.mean(samples**2) / np.mean(noise**2))
    assert abs(snr_db - 10.0) < 0.1


def test_reverb_adds_a_tail_but_keeps_level(speech):
    samples, rate_hz = speech
    wet = aug.add_reverb(samples, rate_hz, 0.4, np.random.default_rng(0))
    assert wet.shape == samples.shape
    assert abs(np.sqrt(np.mean(wet**2)) / np.sqrt(np.mean(samples**2)) - 1.0) < 0.01
    assert not np.allclose(wet, samples)


def test_bad_speed_is_refused(speech):
    with pytest.raises(VoxloopError, match="speed factor"):
        aug.change_speed(speech[0], 5.0)


def test_missing_sox_is_a_clear_error(speech, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingDependencyError, match="apt-get install sox"):
        aug.shift_pitch(speech[0], speech[1], 2.0)


class _Hangs:
    """A synthesizer program that hangs on its first ``hangs`` calls, then copies ``wav``."""

    @staticmethod
    def backend(tmp_path, hangs: int):
        from voxloop.distill.teachers.tts_backends import CommandBackend

        wav = write_wav(tmp_path / "said.wav", np.linspace(-0.5, 0.5, 1600, dtype=np.float32),
                        16000)
        calls = tmp_path / "calls"

        class Hangs(CommandBackend):
            name, program, timeout_s = "hangs", "bash", 2.0
            voice_table = {"x": ("x", 16000, "a test voice")}

            def command(self, text_path, engine_voice, out_path):
                return ["bash", "-c", f'echo >> {calls}; [ "$(wc -l < {calls})" -gt {hangs} ] '
                        f'&& cp {wav} {out_path} || exec sleep 30']

        return Hangs(), calls


def test_a_synthesizer_that_hangs_once_is_asked_again(tmp_path, caplog):
    """On a loaded machine one call of a long synth can pass the timeout: it is made once
    more rather than ending the job; twice is a clear error."""
    backend, calls = _Hangs.backend(tmp_path / "once", hangs=1)
    samples = backend.synthesize("hello", backend.voices()[0])
    assert len(samples) == 1600 and calls.read_text().count("\n") == 2
    assert "event=tts_timeout" in caplog.text
    backend, calls = _Hangs.backend(tmp_path / "always", hangs=9)
    with pytest.raises(VoxloopError, match="took over 2 s twice for voice hangs:x"):
        backend.synthesize("hello", backend.voices()[0])
    assert calls.read_text().count("\n") == 2
