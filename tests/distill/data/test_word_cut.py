"""A one-breath cut on real TTS voices: the words before the cut, heard by the ASR
teacher, are the head's, and the rest are the tail's."""

from __future__ import annotations

import pytest

from voxloop.distill.data.turn_data import trim_speech
from voxloop.distill.data.word_cut import head_end_sample


@pytest.mark.slow  # TTS voices and Whisper
@pytest.mark.parametrize("voice", ["piper:joe@ls1.2", "flite:slt", "festival:kal"])
def test_the_cut_keeps_the_head_words_of_the_whole_utterance(voice):
    from voxloop.distill.teachers.asr import load_asr
    from voxloop.distill.teachers.tts import synthesize

    whole, rate_hz = synthesize("what is seven times three", voice)
    head, _ = synthesize("what is seven", voice)
    whole, head = trim_speech(whole), trim_speech(head)
    end = head_end_sample(whole, head, rate_hz)
    asr = load_asr()
    heard = asr.transcribe(whole[:end], rate_hz).lower()
    rest = asr.transcribe(whole[end:], rate_hz).lower()
    assert ("seven" in heard or "7" in heard) and "time" not in heard, heard
    assert "time" in rest and "seven" not in rest and "7" not in rest, rest
    assert end < len(head)  # the head said alone ends slower than inside the sentence
