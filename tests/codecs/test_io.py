"""Codec folders, the loader's errors, and the token files of the CLI."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from voxloop.codecs.config import CodecConfig
from voxloop.codecs.io import load_codec_folder, save_codec
from voxloop.codecs.registry import load_codec, load_encodec_24khz, random_codec
from voxloop.errors import VoxloopError

SMALL = CodecConfig(n_filters=8, dimension=32, num_codebooks=4, cardinality=64)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(1)
    codec = random_codec(SMALL)
    save_codec(codec, tmp_path / "c", card="# test\n")
    loaded = load_codec_folder(tmp_path / "c")
    assert loaded.config == SMALL
    assert (tmp_path / "c" / "README.md").read_text() == "# test\n"
    for key, value in codec.state_dict().items():
        if value.is_floating_point():  # float16 on disk
            torch.testing.assert_close(loaded.state_dict()[key], value, atol=2e-3, rtol=2e-3)
    wav = torch.randn(1, 1, 8000) * 0.3
    assert (loaded.encode(wav) == codec.encode(wav)).float().mean() > 0.95
    assert load_codec(str(tmp_path / "c")).config == SMALL


def test_not_a_codec_folder(tmp_path):
    with pytest.raises(VoxloopError, match="needs config.json and model.safetensors"):
        load_codec_folder(tmp_path)


def test_unknown_codec_name():
    with pytest.raises(VoxloopError,
                       match=r"no codec at 'nope': .* bundled codecs .*, or encodec_24khz"):
        load_codec("nope")


def test_a_student_folder_is_not_a_codec():
    """Students and semantic tokenizers also hold model.safetensors: config.json's kind
    tells them apart, so neither is offered or loaded as a codec."""
    with pytest.raises(VoxloopError, match=r"bundled codecs \['voxloop-codec-16k'\]"):
        load_codec("voxloop-student")


def test_encodec_offline_names_the_alternatives(monkeypatch, tmp_path):
    def no_internet(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_internet)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(VoxloopError, match="needs the internet.*voxloop-codec-16k") as caught:
        load_codec("encodec_24khz")
    # ways the command line takes: a folder as --codec, or torch's hub cache
    assert "--codec FOLDER" in str(caught.value)
    assert str(tmp_path / "hub" / "checkpoints") in str(caught.value)


def test_encodec_local_repository_is_checked(tmp_path):
    torch.save({"not": "weights"}, tmp_path / "encodec_24khz-d7cc33bc.th")
    with pytest.raises(VoxloopError, match=f"from {tmp_path}"):
        load_encodec_24khz(repository=tmp_path)
    # a folder holding the checkpoint is a codec name too: offline, as the advice says
    with pytest.raises(VoxloopError, match=f"from {tmp_path}"):
        load_codec(str(tmp_path))


def test_token_files_round_trip_and_mismatch(tmp_path):
    from voxloop.audio import write_wav
    from voxloop.codecs.tokens import decode_file, encode_file

    torch.manual_seed(2)
    save_codec(random_codec(SMALL), tmp_path / "small")
    other = CodecConfig(n_filters=8, dimension=32, num_codebooks=4, cardinality=32)
    save_codec(random_codec(other), tmp_path / "other")
    t = np.arange(24000) / 24000
    write_wav(tmp_path / "in.wav", 0.3 * np.sin(2 * np.pi * 220 * t), 24000)
    info = encode_file(tmp_path / "in.wav", tmp_path / "x.npz", str(tmp_path / "small"))
    assert "25 frames x 4 codebooks" in info
    assert decode_file(tmp_path / "x.npz", tmp_path / "out.wav", str(tmp_path / "small")) == 1.0
    with pytest.raises(VoxloopError, match="decode it with the same --codec"):
        decode_file(tmp_path / "x.npz", tmp_path / "bad.wav", str(tmp_path / "other"))
    save_codec(random_codec(SMALL), tmp_path / "twin")  # the same shapes, other weights
    with pytest.raises(VoxloopError, match=r"was made by codec .*small \(weights"):
        decode_file(tmp_path / "x.npz", tmp_path / "bad.wav", str(tmp_path / "twin"))
    assert load_codec(str(tmp_path / "small"), decoder="seanet").name == \
        str((tmp_path / "small").resolve())  # a folder outside models/ is named by its path
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(VoxloopError, match="not a voxloop codes file .not an .npz.*codec encode"):
        decode_file(tmp_path / "junk.npz", tmp_path / "bad.wav", str(tmp_path / "small"))
    (tmp_path / "damaged.npz").write_bytes(b"PK\x03\x04 and no archive after it")
    with pytest.raises(VoxloopError, match="not a voxloop codes file: "):
        decode_file(tmp_path / "damaged.npz", tmp_path / "bad.wav", str(tmp_path / "small"))
    with np.load(tmp_path / "x.npz") as x:  # the same codes, said to be at another rate
        np.savez(tmp_path / "rate.npz", **{**dict(x), "frame_rate_hz": 50.0})
    with pytest.raises(VoxloopError, match="50 frames/s.*decode it with the same --codec"):
        decode_file(tmp_path / "rate.npz", tmp_path / "bad.wav", str(tmp_path / "small"))
    write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32), 24000)
    with pytest.raises(VoxloopError, match="holds no audio"):
        encode_file(tmp_path / "empty.wav", tmp_path / "e.npz", str(tmp_path / "small"))
    codec = load_codec(str(tmp_path / "small"), decoder="seanet")  # no frames: no samples
    assert codec.decode(torch.zeros(1, 4, 0, dtype=torch.long)).shape == (1, 1, 0)
    np.savez(tmp_path / "other.npz", tokens=np.zeros(3))  # an .npz, but not of codes
    with pytest.raises(VoxloopError, match="not a voxloop codes file: .*codes"):
        decode_file(tmp_path / "other.npz", tmp_path / "bad.wav", str(tmp_path / "small"))
