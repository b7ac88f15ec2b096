"""``voxloop eval codec`` on a tiny held-out set, and the bundled codec end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from voxloop.audio import read_wav, write_wav
from voxloop.codecs.config import CodecConfig
from voxloop.codecs.io import save_codec
from voxloop.codecs.registry import load_codec, random_codec
from voxloop.distill.evals.codec import CodecEvalSettings, evaluate_codec, format_report
from voxloop.distill.teachers.tts import synthesize
from voxloop.models import DEFAULT_CODEC, models_dir

pytestmark = pytest.mark.slow  # the codec evaluation CLI and the bundled codec


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for i, (text, voice) in enumerate([("What is seven plus five?", "flite:slt"),
                                       ("How many legs does a spider have?", "flite:awb")]):
        samples, rate_hz = synthesize(text, voice)
        from voxloop.audio import resample

        write_wav(root / "heldout" / f"h{i}.wav", resample(samples, rate_hz, 16000), 16000)
        rows.append({"uid": f"h{i}", "text": text, "voice": voice, "split": "heldout",
                     "augmentation": None})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _decoder_data(codec, corpus, folder):
    """The tiny corpus's clips as decoder data (held out), coded by ``codec``."""
    from voxloop.codecs.decoder_data import Clip, write_clips

    clips = []
    for row in map(json.loads, (corpus / "manifest.jsonl").read_text().splitlines()):
        samples, _ = read_wav(corpus / "heldout" / f"{row['uid']}.wav")
        codes = codec.encode(torch.from_numpy(samples).view(1, 1, -1))[0].numpy()
        clips.append(Clip(row["text"], row["voice"], row["uid"],
                          (samples * 32767).astype(np.int16), codes.astype(np.int16)))
    for split in ("train", "heldout"):
        write_clips(folder / f"{split}.npz", clips, {"name": "random", "sha256": ""})
    return folder


def test_eval_writes_metrics_and_plot(tiny_corpus, tmp_path):
    torch.manual_seed(0)
    codec = random_codec(CodecConfig(n_filters=8, dimension=32, num_codebooks=4, cardinality=64))
    out = tmp_path / "report"
    joe = _decoder_data(codec, tiny_corpus, tmp_path / "joe")
    metrics = evaluate_codec(codec, CodecEvalSettings(corpus=str(tiny_corpus), out=str(out),
                                                      codebooks=(2, 4), joe=str(joe)))
    held = metrics["assistant_voice"]
    assert held["clips"] == 2 and held["whisper_wer_original"] <= 0.2
    assert held["decoders"]["seanet"]["by_codebooks"]["4"]["stoi_mean"] < 0.5
    assert held["decoders"]["seanet"]["decode_rtf_1_frames"]["cpu_median"] > 0
    assert metrics["decode_rtf_one_thread_cpu_median"] > 0
    assert "held-out sentences" in format_report(metrics)
    assert metrics["utterances"] == 2
    assert metrics["whisper_wer_original"] <= 0.2  # the originals are clear speech
    random_stoi = metrics["by_codebooks"]["4"]["stoi_mean"]
    assert random_stoi < 0.5  # an untrained codec destroys speech, and STOI says so
    assert metrics["by_codebooks"]["4"]["bitrate_kbps"] == pytest.approx(0.6)
    assert metrics["streaming_rtf_one_thread_median"] > 0
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "spectrograms.png").stat().st_size > 10_000
    assert "STOI" in format_report(metrics)


def test_eval_cli_missing_corpus_is_a_clear_error(tmp_path):
    save_codec(random_codec(CodecConfig(n_filters=8, dimension=32, num_codebooks=4,
                                        cardinality=64)), tmp_path / "c")
    done = subprocess.run([sys.executable, "-m", "voxloop", "eval", "codec", "--codec",
                           str(tmp_path / "c"), "--corpus", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "voxloop distill corpus" in done.stderr
    done = subprocess.run([sys.executable, "-m", "voxloop", "eval", "codec", "--codec",
                           str(tmp_path / "c"), "--codebooks", "8", "16"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "--codebooks 8 16:" in done.stderr and \
        "has 1 to 4 codebooks" in done.stderr


bundled = pytest.mark.skipif(not (models_dir() / DEFAULT_CODEC).is_dir(),
                             reason="no bundled codec yet")


@bundled
def test_bundled_codec_round_trips_through_the_cli(tmp_path, whisper):
    """Size, CLI round trip, and a STOI floor. Not the issue's intelligibility target: the
    bundled codec misses it (see its card), so this guards against regressions only."""
    from voxloop.distill.evals.codec import _quality

    folder = models_dir() / DEFAULT_CODEC
    assert (folder / "model.safetensors").stat().st_size <= 20_000_000
    assert "STOI" in (folder / "README.md").read_text()
    codec = load_codec()
    samples, rate_hz = synthesize("What is the capital of France?", "piper:joe")
    write_wav(tmp_path / "q.wav", samples, rate_hz)
    for args in (["encode", str(tmp_path / "q.wav"), str(tmp_path / "q.npz")],
                 ["decode", str(tmp_path / "q.npz"), str(tmp_path / "r.wav")]):
        done = subprocess.run([sys.executable, "-m", "voxloop", "codec", *args],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert np.load(tmp_path / "q.npz")["codes"].shape[0] == codec.num_codebooks
    recon, recon_hz = read_wav(tmp_path / "r.wav")
    from voxloop.audio import resample

    original = resample(samples, rate_hz, recon_hz)
    assert recon_hz == codec.sample_rate and abs(len(recon) - len(original)) <= 1
    stoi, pesq = _quality(original, recon[:len(original)], recon_hz)
    print(f"\nbundled codec on piper: STOI {stoi:.3f}, PESQ {pesq:.2f}, Whisper heard "
          f"{whisper.transcribe(recon, recon_hz)!r}")
    assert stoi >= 0.75  # measured 0.827 here; 0.852 on held-out piper speech (card)


@bundled
def test_bundled_assistant_decoder_beats_seanet_on_the_assistant_voice(tmp_path):
    """The shipped ``assistant`` decoder through the CLI (K = 4), against the SEANet decoder
    on the same codes: a regression guard (its card: STOI 0.924 vs 0.866 held out)."""
    from voxloop.codecs.decoder_io import shipped_decoders
    from voxloop.distill.evals.codec import _quality

    assert "assistant" in shipped_decoders(models_dir() / DEFAULT_CODEC)
    samples, rate_hz = synthesize("A spider has eight legs, and an insect has six.", "piper:joe")
    write_wav(tmp_path / "a.wav", samples, rate_hz)
    stoi = {}
    for decoder in ("seanet", "assistant"):
        for args in (["encode", str(tmp_path / "a.wav"), str(tmp_path / "a.npz"),
                      "--codebooks", "4"],
                     ["decode", str(tmp_path / "a.npz"), str(tmp_path / f"{decoder}.wav"),
                      "--decoder", decoder]):
            done = subprocess.run([sys.executable, "-m", "voxloop", "codec", *args],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
        recon, recon_hz = read_wav(tmp_path / f"{decoder}.wav")
        from voxloop.audio import resample

        original = resample(samples, rate_hz, recon_hz)
        stoi[decoder] = _quality(original, recon[:len(original)], recon_hz)[0]
    print(f"\nSTOI on piper:joe at K = 4: {stoi}")
    assert np.load(tmp_path / "a.npz")["codes"].shape[0] == 4
    assert stoi["assistant"] >= 0.87 and stoi["assistant"] > stoi["seanet"]  # 0.897 vs 0.868


def test_the_decoder_table_names_its_chunks_in_the_codecs_own_milliseconds():
    from voxloop.distill.evals.codec_decoders import format_decoder_table

    cell = {"cpu_median": 0.01, "wall_median": 0.01}
    metrics = {"clips": 1, "seconds": 2.0, "voices": ["flite:slt"], "whisper_wer_original": 0.1,
               "frame_rate_hz": 12.5, "decoders": {"general": {
                   "decode_rtf_1_frames": cell, "decode_rtf_5_frames": cell,
                   "by_codebooks": {"8": {"stoi_mean": 0.9, "whisper_wer": 0.12,
                                          "wer_increase_points": 2.0}}}}}
    table = format_decoder_table(metrics)
    assert "80 ms / 400 ms chunks" in table and "40 ms" not in table
    assert "| general | 8 | 0.900 | 12.0 % | +2.0 | 0.010 / 0.010 |" in table
