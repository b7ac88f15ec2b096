"""When each answer word starts in the assistant's audio: forced alignment by the ASR teacher.

The student speaks an answer by writing its words, then its codec frames. Without
knowing which word a frame belongs to, the audio steps must find their place in the
words by attention alone, which the student learned per sentence: it says the fixed
answers it heard a hundred times and drifts after the first word of a composed one.
With the start frame of every word (``word_frames``, aligned with the pack's ``text_ids``),
each audio step can be told the word being spoken (``layout``'s word pointer).

Alignment: Whisper tiny.en (the pinned ASR teacher, through CTranslate2's ``align``: DTW
over its alignment heads' cross-attention) is forced to the answer's own words, and a word
starts at the first audio frame its first token jumps to. Every distinct answer is aligned
once, from the dataset's answer cache (the audio its codes were encoded from).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxloop.errors import VoxloopError

WHISPER_FRAMES_PER_S = 50  # Whisper's encoder output: one frame per 20 ms


class WordAligner:
    """Word start times (seconds) of known words in 16 kHz speech."""

    def __init__(self, model_folder: str | Path | None = None, threads: int = 1) -> None:
        try:
            import ctranslate2
            from faster_whisper.feature_extractor import FeatureExtractor
            from tokenizers import Tokenizer
        except ImportError as exc:
            from voxloop.errors import MissingDependencyError

            raise MissingDependencyError("pip install faster-whisper") from exc
        from voxloop.models import bundled_whisper_folder

        folder = Path(model_folder) if model_folder else bundled_whisper_folder()
        self.model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="int8",
                                                intra_threads=threads)
        self.features = FeatureExtractor(feature_size=self.model.n_mels)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        token = self.tokenizer.token_to_id
        self.prompt = [token("<|startoftranscript|>"), token("<|notimestamps|>")]

    def word_starts_s(self, pcm: np.ndarray, words: list[str]) -> np.ndarray:
        """``pcm`` (int16 or float ``[T]`` at 16 kHz) saying ``words`` -> each word's start
        ``[len(words)]`` in seconds, non-decreasing."""
        import ctranslate2

        if not words:
            return np.zeros(0)
        audio = np.asarray(pcm, dtype=np.float32)
        if pcm.dtype == np.int16:
            audio = audio / 32768.0
        mel = self.features(audio)  # [n_mels, frames of 10 ms]
        n_frames = min(mel.shape[1], 3000)
        padded = np.zeros((mel.shape[0], 3000), dtype=np.float32)
        padded[:, :n_frames] = mel[:, :n_frames]
        encoded = self.model.encode(ctranslate2.StorageView.from_array(padded[None]))
        spoken = [w.capitalize() if i == 0 else w for i, w in enumerate(words)]
        pieces = [self.tokenizer.encode(" " + w, add_special_tokens=False).ids for w in spoken]
        tokens = [t for p in pieces for t in p] + self.tokenizer.encode(
            ".", add_special_tokens=False).ids
        result = self.model.align(encoded, self.prompt, [tokens], n_frames,
                                  median_filter_width=7)[0]
        pairs = np.asarray(result.alignments)  # (token index, time index), monotone
        first_time = np.full(len(tokens) + 1, -1)
        for text_index, time_index in pairs[::-1]:  # the first time each token is reached
            if 0 <= text_index <= len(tokens):
                first_time[text_index] = time_index
        starts = np.cumsum([0] + [len(p) for p in pieces[:-1]])
        times = first_time[starts].astype(np.float64)
        times = np.maximum.accumulate(np.where(times < 0, 0, times))
        return times / WHISPER_FRAMES_PER_S


def ordered_starts(frames: np.ndarray, n_frames: int) -> np.ndarray:
    """Word start frames ``[W]`` made usable as a pointer in an answer of ``n_frames``
    frames: word 0 starts at 0 (the leading silence belongs to it), every later word at
    least one frame after the one before, none past the last frame. int64 ``[W]``."""
    frames = np.asarray(frames, dtype=np.int64).copy()
    if len(frames):
        frames[0] = 0
    for i in range(1, len(frames)):
        frames[i] = max(frames[i], frames[i - 1] + 1)
    return np.minimum(frames, max(0, n_frames - 1))


def word_frames(starts_s: np.ndarray, n_frames: int, frame_rate_hz: float) -> np.ndarray:
    """Word starts (seconds) -> start frames ``int16 [W]`` (``ordered_starts``)."""
    frames = np.round(np.asarray(starts_s) * frame_rate_hz)
    return ordered_starts(frames, n_frames).astype(np.int16)


def align_pack(pack_path: str | Path, dataset: str | Path, frame_rate_hz: float = 25.0,
               threads: int = 1, progress: bool = True) -> dict[str, int]:
    """Add ``word_frames`` (the start frame of every answer word, aligned with ``text_ids``)
    to a pack made from ``dataset`` (whose answer cache holds the audio of its answers).
    Each distinct answer is aligned once; returns how many answers and words."""
    from tqdm import tqdm

    from voxloop.distill.data.synth import AnswerCache
    from voxloop.distill.student.pack import PackedData
    from voxloop.distill.student.vocab import answer_words

    data = PackedData.load(pack_path)
    texts = [str(t) for t in data.answer_text]
    cache = AnswerCache(Path(dataset) / "answers")
    if not cache.folder.is_dir():
        raise VoxloopError(f"{dataset} has no answer cache (answers/): pass the dataset folder "
                           "the pack was made from")
    aligner = WordAligner(threads=threads)
    by_text: dict[str, np.ndarray] = {}
    for text in tqdm(sorted(set(texts)), desc="align answers", unit="answer",
                     disable=not progress):
        by_text[text] = aligner.word_starts_s(cache.get(text)[0], answer_words(text))
    frames = []
    for i, text in enumerate(texts):
        n_words = data.text_offsets[i + 1] - data.text_offsets[i]
        starts = by_text[text]
        if len(starts) != n_words:
            raise VoxloopError(f"turn {data.id[i]}: {n_words} answer words in the pack, "
                               f"{len(starts)} in {text!r}: was it packed from {dataset}?")
        n_frames = data.answer_offsets[i + 1] - data.answer_offsets[i]
        frames.append(word_frames(starts, int(n_frames), frame_rate_hz))
    data.arrays["word_frames"] = np.concatenate(frames) if frames else np.zeros(0, np.int16)
    data.save(pack_path)
    return {"answers": len(by_text), "words": int(sum(len(f) for f in frames))}
