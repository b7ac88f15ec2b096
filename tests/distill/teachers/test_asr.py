"""ASR backends on real speech, and the pinned-model checks."""

from __future__ import annotations

import shutil

import pytest

from voxloop.distill.evals.metrics import word_error_rate
from voxloop.distill.teachers.asr import ASRSettings, WhisperASR, bundled_whisper_dir, load_asr
from voxloop.distill.teachers.tts import synthesize
from voxloop.errors import ModelIntegrityError, VoxloopError
from voxloop.models import verify_sha256

TEXT = "How many legs does a spider have?"


@pytest.mark.slow
def test_whisper_transcribes_real_speech(whisper):
    samples, rate_hz = synthesize(TEXT, "festival:slt-hts")
    assert word_error_rate([TEXT], [whisper.transcribe(samples, rate_hz)]) <= 0.15


@pytest.mark.slow
def test_pocketsphinx_fallback_hears_most_words():
    samples, rate_hz = synthesize(TEXT, "flite:slt")
    text = load_asr(ASRSettings(backend="pocketsphinx")).transcribe(samples, rate_hz)
    assert word_error_rate([TEXT], [text]) <= 0.5, text


def test_hash_mismatch_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"not the model")
    with pytest.raises(ModelIntegrityError, match="expected 1a5afae0.*Reinstall"):
        verify_sha256(bad, "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                      "Whisper tiny.en model.bin", "Reinstall it.")


def test_bundled_model_passes_its_hash():
    assert (bundled_whisper_dir() / "model.bin").is_file()


@pytest.mark.slow
def test_model_by_path(tmp_path, whisper):
    folder = tmp_path / "my-whisper"
    shutil.copytree(bundled_whisper_dir(), folder)
    asr = WhisperASR(ASRSettings(model=str(folder)))
    samples, rate_hz = synthesize("Hello there.", "flite:slt")
    assert "hello" in asr.transcribe(samples, rate_hz).lower()


def test_folder_without_model_is_refused(tmp_path):
    with pytest.raises(VoxloopError, match="not a CTranslate2 Whisper model folder"):
        WhisperASR(ASRSettings(model=str(tmp_path)))


def test_unknown_backend_is_refused():
    with pytest.raises(VoxloopError, match="unknown ASR backend"):
        load_asr(ASRSettings(backend="nope"))


@pytest.mark.slow
def test_whisper_is_deterministic_on_hard_audio(whisper):
    """A short word through pitch shift and reverb made whisper's default temperature
    fallback sample, so a resumed dataset job could disagree with its first run."""
    from voxloop.distill.data.augment import Augmentation, augment

    samples, rate_hz = synthesize("hi", "flite:slt")
    recipe = Augmentation(speed=0.9047, pitch_semitones=-1.78, snr_db=None,
                          reverb_rt60_s=0.206)
    hard = augment(samples, rate_hz, recipe, seed=43329950)
    heard = {whisper.transcribe(hard, rate_hz) for _ in range(6)}
    assert len(heard) == 1, heard


@pytest.mark.slow
def test_whisper_says_how_sure_it_is(whisper):
    """The mean token log-probability: high for a clear question, lower for the same words
    under heavy noise; the text is transcribe's. Pocketsphinx does not say."""
    import numpy as np

    from voxloop.distill.data.augment import add_noise

    samples, rate_hz = synthesize(TEXT, "festival:slt-hts")
    text, sure = whisper.transcribe_scored(samples, rate_hz)
    assert text == whisper.transcribe(samples, rate_hz) and -0.5 < sure <= 0
    noisy = add_noise(samples, -5.0, np.random.default_rng(0), "white")
    assert whisper.transcribe_scored(noisy, rate_hz)[1] < sure - 0.2
    pocketsphinx = load_asr(ASRSettings(backend="pocketsphinx"))
    assert pocketsphinx.transcribe_scored(samples, rate_hz)[1] is None
