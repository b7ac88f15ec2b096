"""Evaluate a codec on held-out voices and texts: STOI, PESQ, Whisper WER, bitrate, RTF
(encode + decode streamed, and decode alone), and with ``joe`` the assistant voice's
held-out sentences (``codec_decoders``).

Writes ``metrics.json`` and ``spectrograms.png`` (original vs reconstruction)
into the output folder and returns the metrics.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from voxloop.audio import read_wav, resample
from voxloop.distill.evals.metrics import word_error_rate
from voxloop.errors import VoxloopError

if TYPE_CHECKING:
    from voxloop.codecs.model import NeuralCodec

log = logging.getLogger("voxloop.distill")
METRIC_RATE_HZ = 16000  # STOI and wide-band PESQ are computed at 16 kHz


@dataclass(frozen=True)
class CodecEvalSettings:
    corpus: str = field(default="data/codec-corpus", metadata={"help": "corpus folder"})
    out: str = field(default="out/codec-eval", metadata={"help": "where to write the report"})
    max_utterances: int = field(default=0, metadata={"help": "limit (0: all held-out)"})
    codebooks: tuple[int, ...] = field(default=(4, 8), metadata={
        "help": "evaluate decoding with these numbers of codebooks"})
    chunk_ms: float = field(default=40.0, metadata={
        "help": "chunk size for the RTF test (40 ms: one frame of a 25 Hz codec)"})
    joe: str = field(default="", metadata={
        "help": "also decode the held-out clips of this decoder data folder (voxloop distill "
                "decoder-data, e.g. data/decoder-joe: the assistant voice's held-out "
                "sentences, none in a decoder's training text) from their cached codes"})


def heldout_utterances(corpus: Path, limit: int = 0) -> list[dict]:
    manifest = corpus / "manifest.jsonl"
    if not manifest.is_file():
        raise VoxloopError(f"{manifest} not found: build the corpus with `voxloop distill corpus`")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["split"] == "heldout"
            and (corpus / "heldout" / f"{r['uid']}.wav").is_file()]
    return rows[:limit] if limit else rows


def reconstruct(codec: NeuralCodec, samples: np.ndarray, codebooks: int) -> np.ndarray:
    """Offline encode -> first ``codebooks`` codes -> decode; same length as the input."""
    import torch

    wav = torch.from_numpy(samples).view(1, 1, -1)
    codes = codec.encode(wav)[:, :codebooks]
    return codec.decode(codes)[0, 0, :len(samples)].numpy()


def streaming_rtf(codec: NeuralCodec, samples: np.ndarray, chunk_ms: float
                  ) -> tuple[float, float]:
    """Seconds of compute per second of audio for streaming encode + decode on one thread:
    (wall clock, the thread's CPU time). On a shared machine the wall clock also counts
    the time other processes hold the core; the CPU time does not."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        chunk = max(1, int(codec.sample_rate * chunk_ms / 1000))
        encoder, decoder = codec.stream_encoder(), codec.stream_decoder()
        wav = torch.from_numpy(samples).view(1, 1, -1)
        start_s, start_cpu_s = time.perf_counter(), time.thread_time()
        for i in range(0, wav.shape[-1], chunk):
            decoder.push(encoder.push(wav[..., i:i + chunk]))
        decoder.push(encoder.flush())
        seconds = len(samples) / codec.sample_rate
        return ((time.perf_counter() - start_s) / seconds,
                (time.thread_time() - start_cpu_s) / seconds)
    finally:
        torch.set_num_threads(threads)


def _decode_rtf(codec: NeuralCodec, samples: np.ndarray, settings: CodecEvalSettings
                ) -> tuple[float, float]:
    """Decode-only streaming RTF (wall, CPU) of one clip's first K codes, one thread."""
    import torch

    from voxloop.distill.evals.codec_decoders import decode_speed

    codes = codec.encode(torch.from_numpy(samples).view(1, 1, -1))[0, :min(settings.codebooks)]
    frames = max(1, round(settings.chunk_ms * codec.frame_rate / 1000))
    return decode_speed(codec, codes.numpy(), frames)


def _quality(ref: np.ndarray, deg: np.ndarray, rate_hz: int) -> tuple[float, float]:
    from pesq import pesq
    from pystoi import stoi

    ref16, deg16 = resample(ref, rate_hz, METRIC_RATE_HZ), resample(deg, rate_hz, METRIC_RATE_HZ)
    return (float(stoi(ref16, deg16, METRIC_RATE_HZ, extended=False)),
            float(pesq(METRIC_RATE_HZ, ref16, deg16, "wb")))


def evaluate_codec(codec: NeuralCodec, settings: CodecEvalSettings) -> dict:
    from tqdm import tqdm

    from voxloop.distill.teachers.asr import load_asr

    corpus, out = Path(settings.corpus), Path(settings.out)
    kept = tuple(k for k in settings.codebooks if 1 <= k <= codec.num_codebooks)
    if not kept:  # (more would be measured with all it has and reported as more)
        raise VoxloopError(f"--codebooks {' '.join(map(str, settings.codebooks))}: "
                           f"{codec.name} has 1 to {codec.num_codebooks} codebooks")
    if kept != tuple(settings.codebooks):
        log.warning("measuring K = %s only: %s has %d codebooks",
                    ", ".join(map(str, kept)), codec.name, codec.num_codebooks)
        settings = replace(settings, codebooks=kept)
    rows = heldout_utterances(corpus, settings.max_utterances)
    if not rows:
        raise VoxloopError(f"no held-out utterances under {corpus}")
    asr = load_asr()
    per_k: dict[int, dict[str, list]] = {k: {"stoi": [], "pesq": [], "heard": []}
                                         for k in settings.codebooks}
    texts, heard_original, voices, examples, rtf_clips = [], [], [], [], []
    for row in tqdm(rows, desc="codec eval", unit="utt"):
        samples, rate_hz = read_wav(corpus / "heldout" / f"{row['uid']}.wav")
        samples = resample(samples, rate_hz, codec.sample_rate)
        if len(rtf_clips) < 8:
            rtf_clips.append(samples)
        texts.append(row["text"])
        voices.append(row["voice"])
        heard_original.append(asr.transcribe(samples, codec.sample_rate))
        for k in settings.codebooks:
            recon = reconstruct(codec, samples, k)
            s, p = _quality(samples, recon, codec.sample_rate)
            per_k[k]["stoi"].append(s)
            per_k[k]["pesq"].append(p)
            per_k[k]["heard"].append(asr.transcribe(recon, codec.sample_rate))
            if len(examples) < 2 and k == max(settings.codebooks):
                examples.append((row, samples, recon))
    streaming_rtf(codec, rtf_clips[0], settings.chunk_ms)  # warm-up (allocator, caches)
    rtf = np.array([streaming_rtf(codec, clip, settings.chunk_ms) for clip in rtf_clips])
    wer_original = word_error_rate(texts, heard_original)
    decode_rtf = np.array([_decode_rtf(codec, clip, settings) for clip in rtf_clips])
    metrics = {
        "codec": codec.name, "sample_rate_hz": codec.sample_rate, "frame_rate_hz": codec.frame_rate,
        "cardinality": codec.cardinality, "utterances": len(rows),
        "voices": sorted(set(voices)), "whisper_wer_original": wer_original,
        "streaming_rtf_one_thread_median": float(np.median(rtf[:, 0])),
        "streaming_rtf_one_thread_cpu_median": float(np.median(rtf[:, 1])),
        "chunk_ms": settings.chunk_ms, "decoder": getattr(codec, "decoder_name", "seanet"),
        "decode_rtf_one_thread_cpu_median": float(np.median(decode_rtf[:, 1])),
        "by_codebooks": {},
    }
    if settings.joe:
        from voxloop.codecs.decoder_data import check_codes_of, read_clips
        from voxloop.distill.evals.codec_decoders import held_out_metrics

        made_by = read_clips(settings.joe, "heldout")[1]
        if made_by.get("name") != codec.name:  # another name: the same weights, or noise
            check_codes_of(codec.name, made_by)
        metrics["assistant_voice"] = held_out_metrics({metrics["decoder"]: codec}, settings.joe,
                                                      asr, settings.codebooks)
    for k, m in per_k.items():
        by_voice = {v: float(np.mean([s for s, vv in zip(m["stoi"], voices, strict=True)
                                      if vv == v])) for v in sorted(set(voices))}
        metrics["by_codebooks"][str(k)] = {
            "bitrate_kbps": codec.bitrate_bps_of(k) / 1000,
            "stoi_mean": float(np.mean(m["stoi"])), "pesq_wb_mean": float(np.mean(m["pesq"])),
            "whisper_wer_reconstruction": word_error_rate(texts, m["heard"]),
            "wer_increase_points": 100 * (word_error_rate(texts, m["heard"]) - wer_original),
            "stoi_by_voice": by_voice,
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_spectrograms(examples, codec.sample_rate, out / "spectrograms.png")
    return metrics


def plot_spectrograms(examples: list, rate_hz: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(examples), 2, figsize=(11, 3.2 * len(examples)), squeeze=False)
    for row_axes, (row, original, recon) in zip(axes, examples, strict=True):
        for ax, signal, label in zip(row_axes, (original, recon), ("original", "reconstruction"),
                                     strict=True):
            ax.specgram(signal, NFFT=512, Fs=rate_hz, noverlap=384, cmap="magma", vmin=-120)
            ax.set_title(f"{label}: {row['voice']} \"{row['text'][:40]}\"", fontsize=9)
            ax.set_xlabel("s")
            ax.set_ylabel("Hz")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def format_report(metrics: dict) -> str:
    lines = [f"codec {metrics['codec']}: {metrics['utterances']} held-out utterances, "
             f"{metrics['frame_rate_hz']:g} Hz frames, Whisper WER on originals "
             f"{100 * metrics['whisper_wer_original']:.1f} %, streaming RTF (1 thread, "
             f"{metrics['chunk_ms']:g} ms chunks) {metrics['streaming_rtf_one_thread_median']:.3f} "
             f"wall, {metrics.get('streaming_rtf_one_thread_cpu_median', float('nan')):.3f} CPU; "
             f"decoder {metrics.get('decoder', 'seanet')}, decode alone "
             f"{metrics.get('decode_rtf_one_thread_cpu_median', float('nan')):.3f} CPU",
             f"{'K':>3s} {'kbps':>6s} {'STOI':>6s} {'PESQ':>6s} {'WER %':>6s} {'+pts':>6s}"]
    for k, m in metrics["by_codebooks"].items():
        lines.append(f"{k:>3s} {m['bitrate_kbps']:6.2f} {m['stoi_mean']:6.3f} "
                     f"{m['pesq_wb_mean']:6.2f} {100 * m['whisper_wer_reconstruction']:6.1f} "
                     f"{m['wer_increase_points']:6.1f}")
    if "assistant_voice" in metrics:
        from voxloop.distill.evals.codec_decoders import format_decoder_table

        lines += ["", "assistant voice, held-out sentences:",
                  format_decoder_table(metrics["assistant_voice"])]
    return "\n".join(lines)
