"""Augmentation: noise colors at an SNR, rooms (RT60, direct-to-reverberant ratio,
pre-delay), level; deterministic per seed; v1 recipes still load and mean the same."""

from __future__ import annotations

import numpy as np
import pytest

from voxloop.distill.data import augment as aug
from voxloop.errors import VoxloopError

RATE_HZ = 16000


@pytest.fixture(scope="module")
def speech():
    from voxloop.distill.teachers.tts import synthesize

    return synthesize("What is seven times eight?", "flite:slt")


def _slope(noise: np.ndarray) -> float:
    """Log-log slope of the power spectrum between 100 Hz and 4 kHz."""
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(noise.size, 1 / RATE_HZ)
    band = (freqs > 100) & (freqs < 4000)
    return float(np.polyfit(np.log(freqs[band]), np.log(power[band]), 1)[0])


@pytest.mark.parametrize(("color", "slope"), [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_noise_colors_have_their_spectral_slope(color, slope):
    noise = aug.colored_noise(RATE_HZ * 4, np.random.default_rng(0), color)
    assert _slope(noise) == pytest.approx(slope, abs=0.15)
    assert np.sqrt(np.mean(noise**2)) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(VoxloopError, match="noise color"):
        aug.colored_noise(100, np.random.default_rng(0), "purple")


def test_every_noise_color_keeps_the_snr(speech):
    samples, _ = speech
    for color in aug.NOISE_EXPONENTS:
        noise = aug.add_noise(samples, 12.0, np.random.default_rng(1), color) - samples
        snr_db = 10 * np.log10(np.mean(samples**2) / np.mean(noise**2))
        assert snr_db == pytest.approx(12.0, abs=0.1), color


def test_rooms_differ_by_distance_and_size(speech):
    samples, rate_hz = speech
    impulse = np.zeros(rate_hz)
    impulse[0] = 1.0

    def room(drr_db, predelay_ms):
        return aug.add_reverb(impulse, rate_hz, 0.4, np.random.default_rng(2), drr_db,
                              predelay_ms)

    for drr_db in (-6.0, 0.0, 12.0):
        ir = room(drr_db, 10.0)
        assert 10 * np.log10(ir[0] ** 2 / np.sum(ir[1:] ** 2)) == pytest.approx(drr_db, abs=0.01)
    ir = room(3.0, 20.0)
    gap = np.abs(ir[1:int(0.02 * rate_hz)]).max()  # between direct sound and reflections
    assert gap < 1e-9 * abs(ir[0]) < np.abs(ir[int(0.02 * rate_hz):]).max()
    close = aug.add_reverb(samples, rate_hz, 0.5, np.random.default_rng(3), 12.0, 5.0)
    far = aug.add_reverb(samples, rate_hz, 0.5, np.random.default_rng(3), -6.0, 5.0)
    assert np.corrcoef(close, samples)[0, 1] > np.corrcoef(far, samples)[0, 1] + 0.2


def test_gain_lowers_the_level(speech):
    samples, rate_hz = speech
    quiet = aug.augment(samples, rate_hz, aug.Augmentation(gain_db=-6.0), seed=0)
    assert np.sqrt(np.mean(quiet**2)) / np.sqrt(np.mean(samples**2)) == pytest.approx(
        10 ** (-6 / 20), rel=1e-3)


def test_same_seed_same_audio_other_seed_other_noise(speech):
    samples, rate_hz = speech
    rng = np.random.default_rng(5)
    recipes = [aug.draw_augmentation(rng) for _ in range(40)]
    full = next(r for r in recipes if r.reverb_rt60_s and r.snr_db is not None)
    a = aug.augment(samples, rate_hz, full, seed=11)
    assert np.array_equal(a, aug.augment(samples, rate_hz, full, seed=11))
    assert not np.array_equal(a, aug.augment(samples, rate_hz, full, seed=12))
    assert aug.draw_augmentation(np.random.default_rng(5)) == recipes[0]


def test_v1_recipes_load_and_keep_their_meaning(speech):
    samples, rate_hz = speech
    v1 = {"speed": 1.0, "pitch_semitones": 0.0, "snr_db": 20.0, "reverb_rt60_s": 0.3}
    recipe = aug.Augmentation(**v1)
    assert (recipe.noise_color, recipe.reverb_drr_db, recipe.gain_db) == ("pink", None, 0.0)
    rng = np.random.default_rng(4)
    expected = aug.add_noise(aug.add_reverb(samples, rate_hz, 0.3, rng), 20.0, rng)
    out = aug.augment(samples, rate_hz, recipe, seed=4)
    peak = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(out, expected * min(1.0, 0.99 / peak), atol=1e-6)
