"""Compare a codec's decoders on the same held-out clips: STOI, Whisper WER, decode speed.

The clips are the held-out split of a decoder data folder (``voxloop distill decoder-data``):
for the assistant voice, sentences that no decoder trained on. Their codes are the cached
frozen codes, so every decoder decodes exactly the same tokens (the first K codebooks).
Decode-only speed: the streaming decoder on one thread, fed ``chunk_frames`` codec frames
per call (1: 40 ms, the finest the engine sends; 5: what it decodes per call once an
answer is under way), wall clock and the thread's CPU time per second of audio.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from voxloop.distill.evals.metrics import word_error_rate

SPEED_CLIPS = 8
SPEED_CHUNK_FRAMES = (1, 5)


def decode_speed(codec, codes: np.ndarray, chunk_frames: int) -> tuple[float, float]:
    """(wall, CPU) seconds per second of audio: ``codes [K, F]`` streamed on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stream = codec.stream_decoder(1)
        tokens = torch.from_numpy(codes.astype(np.int64))[None]
        start_s, start_cpu_s = time.perf_counter(), time.thread_time()
        for i in range(0, tokens.shape[-1], chunk_frames):
            stream.push(tokens[..., i:i + chunk_frames])
        stream.flush()
        seconds = tokens.shape[-1] / codec.frame_rate
        return ((time.perf_counter() - start_s) / seconds,
                (time.thread_time() - start_cpu_s) / seconds)
    finally:
        torch.set_num_threads(threads)


def stoi_score(reference: np.ndarray, decoded: np.ndarray, rate_hz: int) -> float:
    """Classic STOI of ``decoded`` against ``reference`` (both ``[T]`` at ``rate_hz``)."""
    from pystoi import stoi

    return float(stoi(reference, decoded, rate_hz, extended=False))


def compare_decoders(codec_name: str, decoders: tuple[str, ...], data: str | Path,
                     codebooks: tuple[int, ...] = (4, 8), limit: int = 0) -> dict:
    """Metrics per decoder and K on the held-out clips of ``data`` (plus the originals' WER)."""
    from voxloop.codecs.decoder_data import check_codes_of, read_clips
    from voxloop.codecs.registry import load_codec
    from voxloop.distill.teachers.asr import load_asr

    check_codes_of(codec_name, read_clips(data, "heldout")[1])
    codecs = {name: load_codec(codec_name, decoder=name) for name in decoders}
    return held_out_metrics(codecs, data, load_asr(), codebooks, limit)


def held_out_metrics(codecs: dict, data: str | Path, asr, codebooks: tuple[int, ...] = (4, 8),
                     limit: int = 0) -> dict:
    """``codecs``: label -> one codec with its decoder chosen; each decodes the same cached
    codes of the held-out clips of ``data``; ``asr`` judges."""
    from voxloop.codecs.decoder_data import read_clips

    clips, _ = read_clips(data, "heldout")
    clips = clips[:limit] if limit else clips
    texts = [c.text for c in clips]
    originals = [c.audio.astype(np.float32) / 32768.0 for c in clips]
    first = next(iter(codecs.values()))
    rate_hz = first.sample_rate
    heard = [asr.transcribe(a, rate_hz) for a in tqdm(originals, desc="originals", unit="clip")]
    metrics = {"codec": first.name, "frame_rate_hz": float(first.frame_rate),
               "data": str(data), "clips": len(clips),
               "voices": sorted({c.voice for c in clips}),
               "seconds": sum(len(a) for a in originals) / rate_hz,
               "whisper_wer_original": word_error_rate(texts, heard), "decoders": {},
               "texts": texts, "heard_original": heard}
    for name, codec in codecs.items():
        result: dict = {"decoder": codec.decoder_name, "by_codebooks": {}}
        for k in codebooks:
            stoi, heard_k = [], []
            for clip, original in tqdm(list(zip(clips, originals, strict=True)),
                                       desc=f"{name} K={k}", unit="clip"):
                codes = torch.from_numpy(clip.codes[:k].astype(np.int64))[None]
                decoded = codec.decode(codes)[0, 0, :len(original)].numpy()
                stoi.append(stoi_score(original, decoded, rate_hz))
                heard_k.append(asr.transcribe(decoded, rate_hz))
            wer = word_error_rate(texts, heard_k)
            result["by_codebooks"][str(k)] = {
                "stoi_mean": float(np.mean(stoi)), "whisper_wer": wer,
                "wer_increase_points": 100 * (wer - metrics["whisper_wer_original"]),
                "heard": heard_k}
        speed_codes = [c.codes[:min(codebooks)] for c in clips[:SPEED_CLIPS]]
        decode_speed(codec, speed_codes[0], 1)  # warm-up
        for chunk in SPEED_CHUNK_FRAMES:
            rtf = np.array([decode_speed(codec, c, chunk) for c in speed_codes])
            result[f"decode_rtf_{chunk}_frames"] = {"wall_median": float(np.median(rtf[:, 0])),
                                                    "cpu_median": float(np.median(rtf[:, 1]))}
        metrics["decoders"][name] = result
    return metrics


def chunks_ms(chunks_frames, frame_rate_hz: float) -> str:
    """``(1, 5)`` frames at 25 Hz -> "40 ms / 200 ms"."""
    return " / ".join(f"{1000 * c / frame_rate_hz:g} ms" for c in chunks_frames)


def format_decoder_table(metrics: dict) -> str:
    """A markdown table: decoder, K, STOI, WER, +points over the originals, decode RTF."""
    lines = [f"{metrics['clips']} held-out clips ({metrics['seconds']:.0f} s, "
             f"{', '.join(metrics['voices'][:4])}{' ...' if len(metrics['voices']) > 4 else ''})"
             f"; Whisper WER of the originals {100 * metrics['whisper_wer_original']:.1f} %", "",
             "| decoder | K | STOI | WER | + points | decode RTF 1 thread, "
             f"{chunks_ms(SPEED_CHUNK_FRAMES, metrics.get('frame_rate_hz', 25.0))} chunks "
             "(CPU) |", "|---|---|---|---|---|---|"]
    for name, result in metrics["decoders"].items():
        speed = " / ".join(f"{result[f'decode_rtf_{c}_frames']['cpu_median']:.3f}"
                           for c in SPEED_CHUNK_FRAMES)
        for k, m in result["by_codebooks"].items():
            lines.append(f"| {name} | {k} | {m['stoi_mean']:.3f} | {100 * m['whisper_wer']:.1f} % "
                         f"| {m['wer_increase_points']:+.1f} | {speed} |")
    return "\n".join(lines)


def write_decoder_report(metrics: dict, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decoders.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "decoders.md").write_text(format_decoder_table(metrics) + "\n")
    return out
