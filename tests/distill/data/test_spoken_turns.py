"""`spoken_turns`: the held-out turns the evaluations replay, read from a dataset folder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.distill.student.semantic_fixtures import examples_with_audio, write_dataset
from voxloop.distill.data.dataset import spoken_turns
from voxloop.errors import VoxloopError


def with_answers(examples: list) -> list:
    return [dataclasses.replace(e, meta={**e.meta, "prompt_answer": f"answer {i}"})
            for i, e in enumerate(examples)]


def test_the_built_turns_of_a_split_with_their_audio_and_intended_answer(tmp_path):
    turns = with_answers(examples_with_audio(4, split="heldout_voice"))
    write_dataset(tmp_path, {"heldout_voice": turns}, {"heldout_voice": 3, "valid": 1})
    read = list(spoken_turns(tmp_path, "heldout_voice"))
    assert [t[0] for t in read] == [e.id for e in turns]  # the unbuilt third shard skipped
    assert [t[2] for t in read] == ["answer 0", "answer 1", "answer 2", "answer 3"]
    assert read[0][1].dtype == np.float32
    np.testing.assert_allclose(read[1][1], turns[1].user_audio / 32768.0)
    assert [t[0] for t in spoken_turns(tmp_path, "heldout_voice", limit=3)] == \
        [e.id for e in turns[:3]]
    with pytest.raises(VoxloopError, match="no valid turns built yet"):
        next(spoken_turns(tmp_path, "valid"))


def test_a_turn_without_its_audio_or_intended_answer_is_a_clear_error(tmp_path):
    turns = examples_with_audio(2, split="heldout_phrasing")  # no intended answer kept
    write_dataset(tmp_path, {"heldout_phrasing": turns}, {"heldout_phrasing": 1})
    with pytest.raises(VoxloopError, match="keeps no user audio or intended answer for ex0"):
        next(spoken_turns(tmp_path, "heldout_phrasing"))
