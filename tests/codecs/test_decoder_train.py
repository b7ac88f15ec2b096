"""Decoder training on a tiny codec and tiny cached codes: the loss falls, a stopped run
resumes exactly, the export loads as a shipped decoder."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.codecs.helpers import assert_resume_is_exact
from voxloop.codecs.base import silence_codes
from voxloop.codecs.config import CodecConfig
from voxloop.codecs.decoder_config import DecoderTrainSettings, FrameDecoderConfig
from voxloop.codecs.decoder_data import Clip, read_clips, write_clips
from voxloop.codecs.io import save_codec
from voxloop.codecs.registry import random_codec
from voxloop.errors import VoxloopError
from voxloop.models import weights_sha256

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # training runs

SMALL = CodecConfig(n_filters=8, dimension=32, num_codebooks=4, cardinality=64)
TINY = FrameDecoderConfig(latent_dim=32, num_codebooks=4, frame_width=32, frame_blocks=1,
                          fine_width=16, fine_blocks=1, kernel=3, mlp_ratio=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny codec folder and decoder data: warbling tones, coded once by that codec."""
    root = tmp_path_factory.mktemp("decoder")
    torch.manual_seed(0)
    codec = random_codec(SMALL)
    folder = save_codec(codec, root / "codec")
    t = np.arange(9600) / 16000
    clips = {"train": [], "heldout": []}
    for i in range(6):
        tone = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) * (1 + 0.5 * np.sin(6 * t))
        audio = (tone * 32767).astype(np.int16)
        codes = codec.encode(torch.from_numpy(tone.astype(np.float32)).view(1, 1, -1))[0]
        clips["heldout" if i >= 4 else "train"].append(
            Clip(f"tone {i}", "synthetic", str(i), audio, codes.numpy().astype(np.int16)))
    sha = {"name": "codec", "sha256": weights_sha256(folder)}
    for split, items in clips.items():
        write_clips(root / "data" / f"{split}.npz", items, sha)
    return root


def _settings(root, out, steps, **overrides):
    values = dict(data=str(root / "data"), out=str(out), codec=str(root / "codec"), steps=steps,
                  batch_size=2, segment_frames=6, lr=3e-3, warmup_steps=2, eval_every=4,
                  threads=1, whisper_mel_weight=1.0)
    values.update(overrides)
    return DecoderTrainSettings(**values)


def test_clips_round_trip(data):
    clips, codec = read_clips(data / "data", "train")
    assert [c.text for c in clips] == ["tone 0", "tone 1", "tone 2", "tone 3"]
    assert clips[0].codes.shape == (4, 15) and clips[0].audio.shape == (9600,)
    assert codec["sha256"] == weights_sha256(data / "codec")


def test_resume_after_a_stop_is_exact(data, tmp_path):
    from voxloop.codecs.decoder_train import train_decoder

    assert_resume_is_exact(lambda out, stop_at: train_decoder(_settings(data, out, 6), TINY,
                                                              stop_at=stop_at),
                           tmp_path, 6, stop_at=3)


def test_loss_falls_and_the_export_decodes(data, tmp_path):
    from voxloop.codecs.decoder_io import load_frame_decoder
    from voxloop.codecs.decoder_train import (
        DecoderLosses,
        evaluate_decoder_loss,
        export_decoder,
        frozen_codebooks,
        train_decoder,
    )
    from voxloop.codecs.frame_decoder import FrameDecoder
    from voxloop.codecs.registry import load_codec

    settings = _settings(data, tmp_path / "run", 40)
    out = train_decoder(settings, TINY)
    held, codec_info = read_clips(data / "data", "heldout")
    books = frozen_codebooks(settings.codec, codec_info)
    with pytest.raises(VoxloopError, match="the data's codes were made by .*not by"):
        frozen_codebooks(settings.codec, {**codec_info, "sha256": "0" * 64})  # another's
    with pytest.raises(VoxloopError, match="give the decoder the codec's hop"):
        frozen_codebooks(settings.codec, codec_info, replace(TINY, upsample=2 * TINY.upsample))
    losses = DecoderLosses(settings, 16000)
    silence = silence_codes(load_codec(settings.codec, decoder="seanet"))
    torch.manual_seed(0)
    before = evaluate_decoder_loss(FrameDecoder(TINY), books, held, losses, 7, 640, silence)
    after = evaluate_decoder_loss(load_frame_decoder(out / "final"), books, held, losses, 7, 640,
                                  silence)
    assert after["mel"] < before["mel"]
    export_decoder(out / "checkpoint.pt", data / "codec" / "decoders" / "assistant")
    codec = load_codec(str(data / "codec"), decoder="assistant")
    assert codec.decode(torch.from_numpy(held[0].codes.astype(np.int64))[None]).shape == \
        (1, 1, 15 * 640)


def test_init_from_starts_a_new_run_from_a_shipped_decoder(data, tmp_path):
    from dataclasses import replace

    from voxloop.codecs.decoder_io import save_frame_decoder
    from voxloop.codecs.decoder_train import train_decoder
    from voxloop.codecs.frame_decoder import FrameDecoder

    torch.manual_seed(1)
    start = FrameDecoder(TINY).eval()
    save_frame_decoder(start, tmp_path / "start")
    out = train_decoder(_settings(data, tmp_path / "run", 1, lr=0.0,
                                  init_from=str(tmp_path / "start")), TINY)
    trained = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    for key, value in start.state_dict().items():  # lr 0: still the start, up to float16
        torch.testing.assert_close(trained[key], value, atol=1e-3, rtol=1e-3)
    with pytest.raises(VoxloopError, match="another architecture"):
        train_decoder(_settings(data, tmp_path / "other", 1, init_from=str(tmp_path / "start")),
                      replace(TINY, frame_width=48))


def test_codes_of_another_codec_are_refused(data, tmp_path):
    from voxloop.codecs.decoder_train import train_decoder

    clips, _ = read_clips(data / "data", "train")
    for split in ("train", "heldout"):
        write_clips(tmp_path / "other" / f"{split}.npz", clips, {"name": "x", "sha256": "0" * 64})
    with pytest.raises(VoxloopError, match="codes were made by x"):
        train_decoder(_settings(data, tmp_path / "run", 2, data=str(tmp_path / "other")), TINY)


@pytest.mark.parametrize("encoder_weight", [0.0, 1.0])
def test_losses_vanish_on_the_target_and_pass_gradients(encoder_weight):
    """Mel, multi-resolution STFT and Whisper losses (log-mel; with weight, the frozen tiny.en
    encoder's features too) are zero on the target itself and give gradients otherwise."""
    from voxloop.codecs.decoder_train import DecoderLosses

    settings = DecoderTrainSettings(whisper_encoder_weight=encoder_weight)
    losses_of = DecoderLosses(settings, 16000)
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(2, 1, 6400, generator=gen) * 0.1
    same = losses_of(target, target)
    assert ("whisper_encoder" in same) == (encoder_weight > 0)
    assert all(value.item() < 1e-5 for value in same.values())
    estimate = (target + 0.05 * torch.randn(2, 1, 6400, generator=gen)).requires_grad_(True)
    different = losses_of(estimate, target)
    different["total"].backward()
    assert all(value.item() > 0 for value in different.values())
    assert estimate.grad is not None and estimate.grad.abs().sum() > 0


def test_clips_of_fewer_codebooks_than_the_codec_train_at_that_k(data, tmp_path):
    """Clips keeping only the first K = 2 of the codec's 4 codebooks (what a student speaks)
    train with ``--k-main 2 --k-main-fraction 1``, short crops padded with the silence codes
    of those codebooks."""
    from voxloop.codecs.decoder_train import sample_batch, train_decoder
    from voxloop.codecs.registry import load_codec

    for split in ("train", "heldout"):
        clips, codec_info = read_clips(data / "data", split)
        write_clips(tmp_path / "k2" / f"{split}.npz",
                    [Clip(c.text, c.voice, c.id, c.audio, c.codes[:2]) for c in clips], codec_info)
    settings = _settings(data, tmp_path / "run", 2, data=str(tmp_path / "k2"), k_main=(2,),
                         k_main_fraction=1.0)
    clips, _ = read_clips(tmp_path / "k2", "train")
    silence = silence_codes(load_codec(settings.codec, decoder="seanet"))
    codes, wav = sample_batch(clips, 3, 20, 640, silence, np.random.default_rng(0))
    assert codes.shape == (3, 2, 20) and wav.shape == (3, 1, 20 * 640)
    assert (codes[:, :, 15:] == torch.from_numpy(silence[:2, None].astype(np.int64))).all()
    assert (train_decoder(settings, TINY) / "final" / "model.safetensors").is_file()
