"""Whisper tiny.en's encoder in torch against CTranslate2 (the ASR teacher's own runtime),
and its log-mel front end against faster-whisper's, on real speech."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from voxloop.audio import MODEL_RATE_HZ, resample
from voxloop.codecs.whisper_encoder import (
    load_whisper_encoder,
    mel_filters,
    read_ctranslate2,
    whisper_log_mel,
)
from voxloop.errors import VoxloopError
from voxloop.models import bundled_whisper_folder

# float16 weights, float32 compute on both sides: what is left is summation order
MEL_MAX_ABS = 1e-4  # measured 2e-5 (features lie in about [-1.5, 1.5])
ENCODER_MAX_ABS = 2e-3  # measured 3.7e-4 on features up to about 11 in magnitude
ENCODER_RELATIVE = 1e-4  # |ours - ct2| / |ct2| over all frames; measured 3e-6
TEXT = "How many legs does a spider have? Eight, I think."


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from voxloop.distill.teachers.tts import synthesize

    samples, rate_hz = synthesize(TEXT, "piper:joe")
    return resample(samples, rate_hz, MODEL_RATE_HZ)


@pytest.fixture(scope="module")
def encoder():
    return load_whisper_encoder()


@pytest.fixture(scope="module")
def ct2_whisper():
    ctranslate2 = pytest.importorskip("ctranslate2")
    return ctranslate2.models.Whisper(str(bundled_whisper_folder()), device="cpu",
                                      compute_type="float32", intra_threads=1)


def ct2_encode(model, mel: np.ndarray) -> np.ndarray:
    import ctranslate2

    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, np.float32))
    return np.array(model.encode(features, to_cpu=True))


def test_model_file_parses_to_its_last_byte():
    spec, variables = read_ctranslate2(bundled_whisper_folder() / "model.bin")
    assert spec == "WhisperSpec"
    assert variables["encoder/layer_3/self_attention/linear_0/weight"].shape == (1152, 384)
    assert variables["encoder/layer_3/self_attention/linear_0/weight"].dtype == np.float16
    assert variables["encoder/position_encodings/encodings"].shape == (1500, 384)
    assert int(variables["encoder/num_heads"]) == 6
    assert any(name.startswith("decoder/") for name in variables)


def test_broken_model_file_is_a_clear_error(tmp_path):
    data = (bundled_whisper_folder() / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[:5000])
    with pytest.raises(VoxloopError, match="not a CTranslate2 model file"):
        read_ctranslate2(tmp_path / "model.bin")
    with pytest.raises(VoxloopError, match="not a CTranslate2 Whisper model folder"):
        load_whisper_encoder(tmp_path / "missing")


@pytest.mark.slow
def test_mel_matches_faster_whisper(speech):
    from faster_whisper.feature_extractor import FeatureExtractor

    extractor = FeatureExtractor()
    np.testing.assert_allclose(mel_filters(), extractor.mel_filters, atol=1e-7)
    theirs = extractor(speech, padding=0)  # unpadded: T // 160 frames, as ours
    ours = whisper_log_mel(torch.from_numpy(speech)[None])[0].numpy()
    assert ours.shape == theirs.shape == (80, len(speech) // 160)
    diff = np.abs(ours - theirs).max()
    print(f"\nlog-mel vs faster-whisper: max abs diff {diff:.2e}")
    assert diff < MEL_MAX_ABS


@pytest.mark.slow
def test_encoder_matches_ctranslate2(speech, encoder, ct2_whisper):
    mel = whisper_log_mel(torch.from_numpy(speech)[None])  # [1, 80, M], no 30 s padding
    with torch.no_grad():
        ours = encoder(mel)[0].numpy()
    theirs = ct2_encode(ct2_whisper, mel.numpy())[0]
    assert ours.shape == theirs.shape == ((mel.shape[-1] + 1) // 2, 384)
    max_abs = np.abs(ours - theirs).max()
    relative = np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    print(f"\nencoder vs ctranslate2 on {len(speech) / MODEL_RATE_HZ:.2f} s: max abs diff "
          f"{max_abs:.2e} (largest value {np.abs(theirs).max():.1f}), relative {relative:.2e}, "
          f"min cosine {cosine.min():.7f}")
    assert max_abs < ENCODER_MAX_ABS
    assert relative < ENCODER_RELATIVE


@pytest.mark.slow
def test_speed_on_one_thread(speech, encoder, ct2_whisper):
    """Prints the time for 3 s of audio; no assertion (the machine is shared)."""
    mel = whisper_log_mel(torch.from_numpy(np.resize(speech, 3 * MODEL_RATE_HZ))[None])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            ours = _best_ms(lambda: encoder(mel))
            mel_ms = _best_ms(lambda: whisper_log_mel(
                torch.from_numpy(np.resize(speech, 3 * MODEL_RATE_HZ))[None]))
    finally:
        torch.set_num_threads(threads)
    theirs = _best_ms(lambda: ct2_encode(ct2_whisper, mel.numpy()))
    print(f"\n3 s of audio on one thread: torch encoder {ours:.1f} ms (+ log-mel {mel_ms:.1f} ms), "
          f"ctranslate2 {theirs:.1f} ms")


def _best_ms(run, repeats: int = 7) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)
