"""A student's mouth says the answers it remembers once, when the student is saved: the
engine reads their codes instead of running the mouth, so they must be what it says."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from tests.distill.student.fixtures import (
    tiny_config,
    tiny_examples,
    tiny_packed,
    tiny_student_with_mouth,
)
from voxloop.cli import main
from voxloop.distill.student.model import Student, load_student, save_student
from voxloop.distill.student.said_codes import RECORDED, SAID_CODES_FILE, unlearned_answers
from voxloop.distill.student.vocab import Tokenizer
from voxloop.errors import VoxloopError
from voxloop.models import save_model_folder


def _said_without_table(mouth, words: torch.Tensor, **way) -> list[torch.Tensor]:
    table, mouth.said_codes = mouth.said_codes, None
    try:
        return mouth.say(words, **way)
    finally:
        mouth.said_codes = table


def test_the_bundled_students_table_holds_what_its_mouth_says():
    model, vocab = load_student("voxloop-student")
    mouth = model.mouth
    pad = mouth.config.pad_word
    unlearned = unlearned_answers(model, Tokenizer(vocab))
    assert mouth.said_codes is not None
    assert len(mouth.said_codes) == len(mouth.known_words) + len(unlearned)
    rows = mouth.known_words.long()[::151]  # 14 answers from across the table
    assert all(mouth.said_codes.get(row, pad) is not None for row in rows)
    looked_up = mouth.say(rows)
    for row, codes in zip(rows, looked_up, strict=True):
        words = row[row != pad]
        said = _said_without_table(mouth, words[None], **mouth.said_codes.way(words))[0]
        assert torch.equal(codes, said)
    # one answer said each way `distill sayings` chose (greedy, paced, predicted lengths,
    # sampled): the way says it again, code for code
    first_of_each = {str(mouth.said_codes.way(w)): w for w, _ in mouth.said_codes.items()
                     if RECORDED not in mouth.said_codes.way(w)}  # a take: no saying of it
    assert len(first_of_each) > 1
    for words in first_of_each.values():
        way = mouth.said_codes.way(words)
        said = _said_without_table(mouth, torch.tensor([words]), **way)[0]
        assert torch.equal(mouth.said_codes.get(torch.tensor(words)), said), way
    unknown = rows[:2].clone()
    unknown[0, 0], unknown[1, 0] = unknown[1, 0], unknown[0, 0]  # swapped first words
    unknown = unknown[[mouth.said_codes.get(row, pad) is None for row in unknown]]
    assert len(unknown)
    for codes, said in zip(mouth.say(unknown), _said_without_table(mouth, unknown), strict=True):
        assert torch.equal(codes, said)
    looked_up[0].numpy().fill(0)  # a caller's copy: the table keeps its codes
    assert not torch.equal(mouth.say(rows[:1])[0], looked_up[0])


def test_the_refusal_its_mouth_never_learned_is_a_recorded_take_the_engine_says():
    """The bundled student may say the domain's refusal, whose words its mouth never
    learned (it says them as noise): its table holds a take of the assistant's voice."""
    model, vocab = load_student("voxloop-student")
    tokenizer = Tokenizer(vocab)
    refusal = tokenizer.encode_answer(model.heard_intents.refusal)
    assert unlearned_answers(model, tokenizer) == [refusal]
    table = model.mouth.said_codes
    assert table.way(refusal) == {RECORDED: "piper:joe"}
    recorded = table.get(torch.tensor(refusal))
    assert recorded.shape[0] == model.config.k_out and recorded.shape[1] > 50
    assert torch.equal(model.mouth.say(torch.tensor([refusal]))[0], recorded)
    model.heard_intents = None  # nothing it says unwritten: nothing to record
    assert unlearned_answers(model, tokenizer) == []


def test_saying_a_table_again_says_that_its_recorded_answers_must_be_recorded_again(tmp_path):
    """A table written anew holds what the mouth says; its recorded takes (keyed by word ids
    a new vocabulary may number otherwise) are dropped with a warning that says how to
    record them again."""
    import shutil

    from voxloop.distill.student.model import student_folder
    from voxloop.distill.student.said_codes import write_said_codes

    folder = tmp_path / "student"
    shutil.copytree(student_folder("voxloop-student"), folder)
    with pytest.warns(UserWarning, match="held 1 recorded answers .* --recorded-only"):
        said = write_said_codes(folder)
    model, vocab = load_student(folder)
    assert said == len(model.mouth.said_codes) == len(model.mouth.known_words)


def test_a_saved_student_says_its_answers_and_refuses_a_table_of_other_weights(tmp_path):
    model, vocab, folder = tiny_student_with_mouth(tmp_path / "student")
    assert (folder / SAID_CODES_FILE).is_file()
    loaded, _ = load_student(folder)
    assert len(loaded.mouth.said_codes) == 2
    for words in ([3, 4, 5], [6, 7]):
        said = _said_without_table(loaded.mouth, torch.tensor([words]))[0]
        assert torch.equal(loaded.mouth.said_codes.get(torch.tensor(words)), said)
        assert said.shape[1] == {3: 9, 6: 6}[words[0]]  # at the remembered lengths
    state = model.state_dict()
    state["mouth.heads.0.bias"] = state["mouth.heads.0.bias"] + 1.0
    save_model_folder(folder, state, {"kind": "voxloop-student", **asdict(model.config)})
    with pytest.raises(VoxloopError, match="said by other weights.*said-codes"):
        load_student(folder)
    assert main(["distill", "said-codes", str(folder)]) == 0
    assert len(load_student(folder)[0].mouth.said_codes) == 2
    save_student(model, vocab, folder)  # saving again says them again (no stale table)
    assert len(load_student(folder)[0].mouth.said_codes) == 2


def test_a_student_without_a_mouth_gets_no_table(tmp_path, capsys):
    data = tiny_packed(tiny_examples(4))
    model = Student(tiny_config(text_vocab=len(data.vocab["text"]),
                                ctc_vocab=len(data.vocab["ctc"]))).eval()
    folder = save_student(model, data.vocab, tmp_path / "student")
    assert not (folder / SAID_CODES_FILE).exists()
    assert main(["distill", "said-codes", str(folder)]) == 0
    assert "nothing to say" in capsys.readouterr().out


def test_a_words_fine_tune_keeps_the_sayings_of_the_same_mouth(tmp_path, capsys):
    """``said-codes NEW --from OLD``: a student whose words changed and mouth did not keeps
    OLD's table, sayings chosen by ear included; a changed mouth is refused."""
    from voxloop.distill.student.said_codes import SaidCodes, load_said_codes, save_said_codes

    model, vocab, old = tiny_student_with_mouth(tmp_path / "old")
    table = load_said_codes(old)
    chosen = {(3, 4, 5): table.get(torch.tensor([3, 4, 5])).flip(1)}  # "said another way"
    save_said_codes(SaidCodes([list(w) for w, _ in table.items()],
                              [chosen.get(tuple(w), c) for w, c in table.items()],
                              [{"pace": 1.1} if tuple(w) in chosen else {}
                               for w, _ in table.items()]), old)
    state = model.state_dict()
    words_changed = {k: v + 0.5 if k == "embed.weight" else v for k, v in state.items()}
    new = save_model_folder(tmp_path / "new", words_changed,
                            {"kind": "voxloop-student", **asdict(model.config)})
    (new / "vocab.json").write_text((old / "vocab.json").read_text())
    assert main(["distill", "said-codes", str(new), "--from", str(old)]) == 0
    kept = load_student(new)[0].mouth.said_codes
    assert torch.equal(kept.get(torch.tensor([3, 4, 5])), chosen[(3, 4, 5)])
    assert kept.way([3, 4, 5]) == {"pace": 1.1} and kept.way([6, 7]) == {}
    mouth_changed = {k: v + 1.0 if k == "mouth.heads.0.bias" else v for k, v in state.items()}
    other = save_model_folder(tmp_path / "other", mouth_changed,
                              {"kind": "voxloop-student", **asdict(model.config)})
    (other / "vocab.json").write_text((old / "vocab.json").read_text())
    assert main(["distill", "said-codes", str(other), "--from", str(old)]) != 0
    assert "mouth or words are not" in capsys.readouterr().err
    assert not (other / SAID_CODES_FILE).exists()
