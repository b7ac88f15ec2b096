"""The mouth: the answer's words -> all its frames at once, trained on aligned answers, given
to a student, and what the student's generation does with it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.distill.student.fixtures import pointer_packed, tiny_config, tiny_examples, tiny_packed
from voxloop.cli import main
from voxloop.distill.student.confidence import Routing, read_routing, write_routing
from voxloop.distill.student.config import MouthConfig, MouthTrainSettings
from voxloop.distill.student.generate import StudentStepper
from voxloop.distill.student.model import Student, load_student, save_student
from voxloop.distill.student.mouth import Mouth, word_lengths
from voxloop.distill.student.mouth_files import HEAD_FILES, give_mouth, with_measured_heads
from voxloop.distill.student.mouth_train import (
    answer_batch,
    answer_draws,
    at_own_lengths,
    distinct_answers,
    fit_pace,
    remember_lengths,
    resample_words,
    train_mouth,
)
from voxloop.distill.student.retaken import write_retaken
from voxloop.distill.student.rows import Phase, TurnProgress
from voxloop.distill.student.train import StudentTrainSettings, train
from voxloop.distill.student.vocab import EOT, Tokenizer
from voxloop.errors import VoxloopError


def test_word_lengths_give_the_first_word_the_lead_and_the_last_the_tail():
    lengths = word_lengths(torch.tensor([3, 5, 9]), 14)
    assert lengths.tolist() == [5, 4, 5] and int(lengths.sum()) == 14


def test_answers_are_drawn_once_each_with_their_turn_counts():
    data = tiny_packed(tiny_examples(7) + tiny_examples(3, seed=1, split="valid"))
    rows, turns = distinct_answers(data, "train")
    assert rows.tolist() == [0, 1, 2, 3] and turns.tolist() == [2, 2, 2, 1]  # ANSWERS[i % 4]
    assert distinct_answers(data, "valid")[0].tolist() == [7, 8, 9]


def test_answers_renditions_gave_a_new_take_are_drawn_more_often(tmp_path):
    data = tiny_packed(tiny_examples(8))
    rows, turns = distinct_answers(data, "train")
    texts = [str(data.answer_text[r]) for r in rows]
    settings = MouthTrainSettings(data=str(tmp_path / "pack.npz"), answer_balance=1.0)
    assert np.allclose(answer_draws(data, rows, turns, settings), 0.25)
    weighted = dataclasses.replace(settings, retaken_weight=5.0)
    with pytest.raises(VoxloopError, match="run `voxloop distill renditions`"):
        answer_draws(data, rows, turns, weighted)
    report = {"answers": [{"text": texts[1], "chosen": 3}, {"text": texts[2], "chosen": 0}]}
    write_retaken(settings.data, report)
    draws = answer_draws(data, rows, turns, weighted)
    assert np.allclose(draws, np.array([1, 5, 1, 1]) / 8)  # only the re-taken one
    write_retaken(settings.data, {"answers": [{"text": texts[3], "chosen": 1}]})
    draws = answer_draws(data, rows, turns, weighted)  # a second run keeps the first's
    assert np.allclose(draws, np.array([1, 5, 1, 5]) / 12)
    for bad in (0.0, -1.0):
        with pytest.raises(VoxloopError, match="must be above 0"):
            answer_draws(data, rows, turns, dataclasses.replace(settings, retaken_weight=bad))
    write_retaken(tmp_path / "other.npz", {"answers": [{"text": "Not said here.", "chosen": 1}]})
    with pytest.raises(VoxloopError, match="another pack"):
        answer_draws(data, rows, turns, dataclasses.replace(
            weighted, data=str(tmp_path / "other.npz")))


def _mouth(**changes) -> Mouth:
    torch.manual_seed(0)
    values = dict(text_vocab=12, k_out=4, d_model=32, word_layers=1, frame_blocks=2,
                  dropout=0.0)
    mouth = Mouth(MouthConfig(**{**values, **changes})).eval()
    mouth.set_spelling([f"w{i}" for i in range(mouth.config.text_vocab)])
    return mouth


def test_each_row_is_said_as_if_alone_and_as_long_as_its_words_last():
    mouth, pad = _mouth(), 12
    with torch.no_grad():
        mouth.duration.weight.zero_()
        mouth.duration.bias.fill_(float(np.log1p(3.0)))  # 3 frames a word
    alone = [mouth.say(torch.tensor([w]))[0] for w in ([3, 4, 5, 6], [7, 8])]
    both = mouth.say(torch.tensor([[3, 4, 5, 6], [7, 8, pad, pad]]))
    for a, b in zip(alone, both, strict=True):
        torch.testing.assert_close(a, b)
    assert [s.shape for s in both] == [(4, 12), (4, 6)]
    assert len(mouth.say(torch.tensor([[3, 4]]), pace=2.0)[0][0]) == 12  # slower: 6 a word


def test_letters_are_read_packed_as_they_would_be_in_every_slot():
    """The letter layers run on the real letters only; each letter's state is what the
    layers give it among every word's padded letter slots (padding is masked as keys)."""
    mouth, pad = _mouth().eval(), 12
    words = torch.tensor([[3, 4, 5, 6, 7], [8, 9, pad, pad, pad]])
    mouth.spell({3: "a", 4: "bb", 5: "ccccc", 6: "", 7: "seven", 8: "x", 9: "yz"})
    with torch.no_grad():
        letters = mouth.encode(words).letters  # [B, W, L, D]
        chars = mouth.spelling[words]
        pos = mouth.word_pos(torch.arange(words.shape[1]))
        x = mouth.char_embed(chars) + mouth.char_pos.weight[None, None] + pos[None, :, None]
        every = mouth.chars(x.flatten(1, 2), src_key_padding_mask=(chars == 0).flatten(1))
        every = every.view(letters.shape) * (chars > 0)[..., None]
    torch.testing.assert_close(letters, every, atol=1e-5, rtol=1e-5)
    assert letters[0, 3].abs().sum() == 0 and letters[1, 1, 2:].abs().sum() == 0
    assert (letters[0, 4, :5].abs().sum(-1) > 0).all()


def test_a_remembered_answer_is_said_at_its_lengths_the_others_as_predicted():
    mouth, pad = _mouth(), 12
    with torch.no_grad():
        mouth.duration.weight.zero_()
        mouth.duration.bias.fill_(float(np.log1p(3.0)))  # 3 frames a word
    mouth.remember([[3, 4], [5, 6, 7]], [torch.tensor([2, 5]), np.array([1, 1, 4])])
    said = mouth.say(torch.tensor([[3, 4, pad], [3, 4, 5], [5, 6, 7], [4, 3, pad]]))
    assert [s.shape[1] for s in said] == [7, 9, 6, 6]  # remembered, a longer answer, 3 a word
    assert mouth.say(torch.tensor([[3, 4]]), pace=2.0)[0].shape[1] == 14
    alone = mouth.say(torch.tensor([[3, 4]]))[0]
    torch.testing.assert_close(said[0], alone)  # said as if alone, as unremembered rows are
    with pytest.raises(ValueError, match="2 words but 3 word lengths"):
        mouth.remember([[3, 4]], [[1, 2, 3]])


def test_what_a_mouth_remembers_is_saved_with_it_and_old_mouths_remember_nothing(tmp_path):
    mouth = _mouth()
    mouth.remember([[3, 4], [5]], [[2, 5], [9]])
    other = _mouth()
    other.load_state_dict(mouth.state_dict())
    assert other.known_words.tolist() == [[3, 4], [5, 12]]
    assert other.known_frames.tolist() == [[2, 5], [9, 0]]
    assert other.say(torch.tensor([[5]]))[0].shape[1] == 9
    old = {k: v for k, v in mouth.state_dict().items() if not k.startswith("known_")}
    other.load_state_dict(old)  # a mouth saved before mouths remembered lengths
    assert other.known_words.shape == (0, 0)
    assert other.say(torch.tensor([[5]]))[0].shape[1] != 9


def test_trained_mouths_remember_their_train_answers_and_older_ones_can_learn_them(
        tmp_path, aligned):
    data, path, student = aligned
    rows, _ = distinct_answers(data, "train")
    out = train_mouth(_mouth_settings(tmp_path, path, student, steps=2, eval_every=2))
    model, _ = load_student(give_mouth(str(student), out / "best.pt", tmp_path / "trained"))
    words, frames, _ = answer_batch(data, rows, model.mouth.config)
    assert model.mouth.known_words.shape[0] == len(rows)
    assert [s.shape[1] for s in model.mouth.say(words)] == \
        [data.answer(i).shape[1] for i in rows]
    _mouth_checkpoint(tmp_path / "mouth.pt", data)  # remembers nothing
    forgetful = give_mouth(str(student), tmp_path / "mouth.pt", tmp_path / "forgetful")
    assert main(["distill", "remember-lengths", str(forgetful), str(path),
                 str(tmp_path / "remembers")]) == 0
    remembers, vocab = load_student(tmp_path / "remembers")
    assert torch.equal(remembers.mouth.known_frames, model.mouth.known_frames)
    assert torch.equal(remembers.mouth.known_words, model.mouth.known_words)
    assert (tmp_path / "remembers" / "model.safetensors").stat().st_size < \
        (tmp_path / "forgetful" / "model.safetensors").stat().st_size + 4 * frames.numel() + 1024
    # a head of these ears and words: a mouth's change carries it over (as remember-lengths
    # and give_mouth do); other weights saved over the folder drop it
    (tmp_path / "remembers" / HEAD_FILES[0]).write_bytes(b"a head")
    copy = with_measured_heads(tmp_path / "remembers",
                               lambda: save_student(remembers, vocab, tmp_path / "copy"))
    assert (copy / HEAD_FILES[0]).read_bytes() == b"a head"
    save_student(model, vocab, copy)
    assert not (copy / HEAD_FILES[0]).exists()
    with pytest.raises(VoxloopError, match="no mouth"):
        remember_lengths(student, path, tmp_path / "nope")


def test_a_mouth_trained_on_goes_on_remembering_what_its_pack_lacks(tmp_path, aligned):
    data, path, student = aligned
    rows, _ = distinct_answers(data, "train")
    first = train_mouth(_mouth_settings(tmp_path, path, student, steps=2, eval_every=2))
    model, vocab = load_student(give_mouth(str(student), first / "best.pt", tmp_path / "one"))
    words, frames = model.mouth.remembered_lengths()
    assert len(words) == len(rows)
    stale = [[n + 1 for n in f] for f in frames]  # lengths the pack's takes will replace
    model.mouth.remember(words + [[3, 4, 5]], stale + [[2, 7, 4]])
    knows_more = save_student(model, vocab, tmp_path / "knows-more")
    again = train_mouth(_mouth_settings(tmp_path, path, knows_more, steps=2, eval_every=2,
                                        out=str(tmp_path / "again")))
    trained, _ = load_student(give_mouth(str(knows_more), again / "best.pt", tmp_path / "two"))
    kept_words, kept_frames = trained.mouth.remembered_lengths()
    assert kept_words == words + [[3, 4, 5]]
    assert kept_frames == frames + [[2, 7, 4]]
    fresh = train_mouth(_mouth_settings(tmp_path, path, knows_more, steps=2, eval_every=2,
                                        fresh=True, out=str(tmp_path / "fresh")))
    forgot, _ = load_student(give_mouth(str(knows_more), fresh / "best.pt", tmp_path / "three"))
    assert len(forgot.mouth.remembered_lengths()[0]) == len(rows)


def test_pace_makes_the_said_answers_as_long_as_the_training_ones():
    data = pointer_packed()
    mouth = _mouth(text_vocab=len(data.vocab["text"]))
    rows = data.indices("train")
    words, frames, _ = answer_batch(data, rows, mouth.config)
    with torch.no_grad():  # one frame a word too short, on average
        mouth.duration.weight.zero_()
        mouth.duration.bias.fill_(float(torch.log1p(frames[frames > 0].float().mean() - 1)))
    short = sum(s.shape[1] for s in mouth.say(words))
    pace = fit_pace(mouth, data, rows)
    assert pace > 1 and float(mouth.pace) == pace
    assert abs(sum(s.shape[1] for s in mouth.say(words)) - int(frames.sum())) \
        < abs(short - int(frames.sum()))


def _student_folder(tmp_path, data, **changes):
    config = tiny_config(text_vocab=len(data.vocab["text"]), ctc_vocab=len(data.vocab["ctc"]),
                         **changes)
    torch.manual_seed(0)
    return save_student(Student(config).eval(), data.vocab, tmp_path / "student")


def _mouth_settings(tmp_path, data_path, student, **changes) -> MouthTrainSettings:
    values = dict(data=str(data_path), student=str(student), out=str(tmp_path / "mouth"),
                  d_model=32, steps=6, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=3,
                  ckpt_every=3, threads=1)
    return MouthTrainSettings(**{**values, **changes})


@pytest.fixture
def aligned(tmp_path):
    data = pointer_packed()
    data.save(tmp_path / "pack.npz")
    return data, tmp_path / "pack.npz", _student_folder(tmp_path, data)


def test_words_resampled_keep_their_own_frames_in_order():
    codes = torch.tensor([[7, 7, 7, 1, 2, 3, 4, 5]]).repeat(4, 1)
    frames = torch.tensor([6, 2])
    same = resample_words(codes, frames, frames)
    assert torch.equal(same, codes)
    longer = resample_words(codes, frames, torch.tensor([7, 3]))
    assert longer[0].tolist() == [7, 7, 7, 1, 1, 2, 3, 4, 5, 5]
    shorter = resample_words(codes, frames, torch.tensor([4, 1]))
    assert shorter[0].tolist() == [7, 7, 1, 3, 5]


def test_answers_picked_are_trained_at_the_mouths_own_lengths(aligned):
    data, _, _ = aligned
    config = MouthConfig(text_vocab=len(data.vocab["text"]), k_out=data.answer_codes.shape[0],
                         d_model=32)
    mouth = Mouth(config)
    mouth.set_spelling(data.vocab["text"])
    rows = np.arange(3)
    words, frames, codes = answer_batch(data, rows, config)
    pick = np.array([True, False, True])
    w, f, c = at_own_lengths(mouth, words, frames, codes, pick)
    said = mouth.eval().word_frames(words, mouth.encode(words).log_frames)
    assert torch.equal(w, words) and torch.equal(f[1], frames[1]) and torch.equal(f[0], said[0])
    for b in range(3):
        n = int(f[b].sum())
        assert (c[b, :, :n] >= 0).all() and (c[b, :, n:] < 0).all()  # IGNORE past the end
    assert torch.equal(c[1, :, :int(frames[1].sum())], codes[1, :, :int(frames[1].sum())])


@pytest.mark.parametrize("changes", [{}, {"ema": 0.9, "snapshot_every": 2},
                                     {"own_lengths": 0.5}],
                         ids=["plain", "averaged-with-snapshots", "own-lengths"])
def test_a_resumed_mouth_run_continues_exactly(tmp_path, aligned, changes):
    _, path, student = aligned
    whole = train_mouth(_mouth_settings(tmp_path / "a", path, student, **changes))
    split = _mouth_settings(tmp_path / "b", path, student, **changes)
    train_mouth(split, stop_at=3)
    train_mouth(split)
    a, b = (torch.load(run / "checkpoint.pt", weights_only=False) for run in
            (whole, tmp_path / "b" / "mouth"))
    assert a["step"] == b["step"] == 6
    for part in ("model", "ema"):
        for name, value in a[part].items():
            torch.testing.assert_close(b[part][name], value, atol=1e-6, rtol=0), name
    assert bool(a["ema"]) == ("ema" in changes)
    if "ema" in changes:  # what is kept is the average, not the last step's weights
        snapshots = sorted(p.name for p in (whole / "snapshots").iterdir())
        assert snapshots == ["step-000002.pt", "step-000004.pt", "step-000006.pt"]
        last = torch.load(whole / "snapshots" / snapshots[-1], weights_only=False)
        assert last["step"] == 6 and last["pace"] > 0 and last["valid"]["total"] > 0
        for name, value in a["ema"].items():
            torch.testing.assert_close(last["model"][name], value)
        assert any(not torch.equal(a["model"][k], v) for k, v in a["ema"].items())
        give_mouth(str(student), whole / "snapshots" / snapshots[0], tmp_path / "given")


def test_the_mouth_needs_word_times_and_the_students_words(tmp_path, aligned):
    data, path, student = aligned
    data.word_frames = None
    data.arrays.pop("word_frames")
    data.save(tmp_path / "unaligned.npz")
    with pytest.raises(VoxloopError, match="distill align"):
        train_mouth(_mouth_settings(tmp_path, tmp_path / "unaligned.npz", student))
    other = dict(data.vocab, text=data.vocab["text"] + ["zebra"])
    other_student = _student_folder(tmp_path / "other", type(data)(data.arrays, other))
    with pytest.raises(VoxloopError, match="--vocab-from"):
        train_mouth(_mouth_settings(tmp_path, path, other_student))


@pytest.mark.slow
def test_tiny_mouth_learns_its_answers_codes_and_lengths(tmp_path, aligned):
    data, path, student = aligned
    settings = _mouth_settings(tmp_path, path, student, steps=300, lr=3e-3, warmup_steps=20,
                               weight_decay=0.0, eval_every=1000, ckpt_every=1000)
    out = train_mouth(settings)
    folder = give_mouth(str(student), out / "best.pt", tmp_path / "with-mouth")
    model, _ = load_student(folder)
    rows = data.indices("train")
    words, frames, codes = answer_batch(data, rows, model.mouth.config)
    with torch.no_grad():
        out = model.mouth(words, frames, codes.clamp(min=0))
    known = codes != -100
    assert (out.logits.argmax(-1) == codes)[known].float().mean() > 0.95
    with torch.no_grad():  # its own lengths, not the ones it remembers
        said = model.mouth.word_frames(words, model.mouth.encode(words).log_frames)
    assert said.sum(1).tolist() == [data.answer(i).shape[1] for i in rows]


def _mouth_checkpoint(path, data, **changes) -> Mouth:
    """A mouth of the shape a student builds, saved as ``train_mouth`` saves one."""
    values = {**dict(word_layers=MouthConfig.word_layers, frame_blocks=MouthConfig.frame_blocks,
                     dropout=MouthConfig.dropout), **changes}
    mouth = _mouth(text_vocab=len(data.vocab["text"]), **values)
    torch.save({"model": mouth.state_dict(), "config": dataclasses.asdict(mouth.config)}, path)
    return mouth


def test_a_student_with_a_mouth_says_its_words_without_model_calls(tmp_path, aligned):
    data, _, student = aligned
    _mouth_checkpoint(tmp_path / "odd.pt", data, frame_blocks=1)
    with pytest.raises(VoxloopError, match="another shape"):
        give_mouth(str(student), tmp_path / "odd.pt", tmp_path / "nope")
    _mouth_checkpoint(tmp_path / "mouth.pt", data)
    with pytest.raises(VoxloopError, match="codebooks"):
        give_mouth(str(_student_folder(tmp_path / "k8", data, k_out=8)), tmp_path / "mouth.pt",
                   tmp_path / "nope")
    write_routing(student, Routing(-0.5, -0.3), {"chosen_on": "valid"})
    given = give_mouth(str(student), tmp_path / "mouth.pt", tmp_path / "with-mouth")
    assert read_routing(given) == Routing(-0.5, -0.3)  # measured on the same words
    assert read_routing(give_mouth(str(given), tmp_path / "mouth.pt", given)) == Routing(
        -0.5, -0.3)  # into its own folder
    (student / "routing.json").unlink()
    give_mouth(str(student), tmp_path / "mouth.pt", given)
    assert not (given / "routing.json").exists()  # measured on another student's words
    model, vocab = load_student(given)
    plain, _ = load_student(student)
    assert model.config.mouth_d_model == 32
    for name, value in plain.state_dict().items():  # the student itself is kept
        torch.testing.assert_close(model.state_dict()[name], value), name
    stepper = StudentStepper(model, Tokenizer(vocab))
    state = stepper.start(2)
    stepper.advance(state, [data.user(0), data.user(1)])
    stepper.end_turn(state)
    speaking = state.rows[0]
    speaking.turn = TurnProgress(phase=Phase.TEXT, text=[5, 6, 7])
    stepper._text_step(speaking.turn, torch.nn.functional.one_hot(torch.tensor(EOT), 400)
                       .float()[:len(vocab["text"])], None)
    said = model.mouth.say(torch.tensor([[5, 6, 7]]))[0].numpy()
    assert speaking.phase is Phase.SPEAK and np.array_equal(speaking.turn.said, said)
    length, other, frames = speaking.length, state.rows[1].length, []
    while speaking.phase is not Phase.DONE:
        frames.append(stepper.step(state).frames[0])
    assert np.array_equal(np.stack(frames, 1), said)
    assert speaking.length == length  # no position of the model was used to say it
    assert state.rows[1].length > other  # while the other row wrote its words


def test_fine_tuning_a_student_leaves_its_mouth_alone(tmp_path, aligned):
    data, path, student = aligned
    _mouth_checkpoint(tmp_path / "mouth.pt", data)
    folder = give_mouth(str(student), tmp_path / "mouth.pt", tmp_path / "with-mouth")
    start, _ = load_student(folder)
    settings = StudentTrainSettings(data=str(path), out=str(tmp_path / "tune"), steps=2,
                                    batch_size=4, lr=1e-2, warmup_steps=1, eval_every=2,
                                    ckpt_every=2, threads=1, device="cpu", init_from=str(folder))
    state = torch.load(train(settings, data=data) / "checkpoint.pt", weights_only=False)
    for name, value in start.mouth.state_dict().items():
        torch.testing.assert_close(state["model"][f"mouth.{name}"], value, atol=0, rtol=0), name
    assert not torch.equal(state["model"]["text_head.weight"], start.text_head.weight)


def test_mouth_training_goes_on_from_the_students_own_mouth_unless_fresh(tmp_path, aligned):
    data, path, student = aligned
    _mouth_checkpoint(tmp_path / "mouth.pt", data, d_model=32)
    folder = give_mouth(str(student), tmp_path / "mouth.pt", tmp_path / "with-mouth")
    start, _ = load_student(folder)
    still = dict(steps=1, lr=1e-12, warmup_steps=1, seed=1)  # a step that moves nothing
    for fresh in (False, True):
        out = train_mouth(_mouth_settings(tmp_path / str(fresh), path, folder, fresh=fresh,
                                          **still))
        weights = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
        same = torch.allclose(weights["word_embed.weight"],
                              start.mouth.word_embed.weight.float(), atol=1e-3)
        assert same != fresh
