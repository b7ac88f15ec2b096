"""Student training: a tiny model overfits a tiny set and reproduces it; resume is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.distill.student.fixtures import ANSWERS, tiny_config, tiny_examples, tiny_packed
from voxloop.distill.student.generate import SamplingOptions
from voxloop.distill.student.model import load_student
from voxloop.distill.student.one_turn import generate
from voxloop.distill.student.train import StudentTrainSettings, export_student, train
from voxloop.distill.student.vocab import Tokenizer, answer_words
from voxloop.errors import VoxloopError


def _settings(tmp_path, **changes) -> StudentTrainSettings:
    values = dict(data="unused.npz", out=str(tmp_path / "run"), steps=6, batch_size=4, lr=3e-3,
                  warmup_steps=2, eval_every=3, ckpt_every=3, threads=1, device="cpu")
    values.update(changes)
    return StudentTrainSettings(**values)


@pytest.mark.slow
def test_tiny_student_overfits_and_generation_reproduces(tmp_path):
    examples = tiny_examples(4)
    data = tiny_packed(examples)
    settings = _settings(tmp_path, steps=150, lr=4e-3, warmup_steps=20, weight_decay=0.0,
                         augment=False, eval_every=1000, ckpt_every=1000)
    out = train(settings, tiny_config(d_model=96), data=data)
    model, vocab = load_student(export_student(out / "best.pt", tmp_path / "student"))
    tokenizer = Tokenizer(vocab)
    for i, ex in enumerate(examples):
        result = generate(model, tokenizer, ex.user_codes, SamplingOptions(),
                          chunk_frames=1 + i % 3)
        assert result.text_ids == data.text(i).tolist(), (i, result.text)
        assert np.array_equal(result.codes, ex.answer_codes[:4]), i
        assert answer_words(result.text) == answer_words(ex.answer_text)
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 150


def test_resume_is_exact(tmp_path):
    data = tiny_packed(tiny_examples(6) + tiny_examples(2, seed=1, split="valid"))
    config = tiny_config(dropout=0.1)
    whole = train(_settings(tmp_path / "a", ema=0.5), config, data=data)
    part = train(_settings(tmp_path / "b", ema=0.5), config, data=data, stop_at=3)
    assert torch.load(part / "checkpoint.pt", weights_only=False)["step"] == 3
    part = train(_settings(tmp_path / "b", ema=0.5), config, data=data)
    a = torch.load(whole / "checkpoint.pt", weights_only=False)
    b = torch.load(part / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 6
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    for name, value in a["ema"].items():  # the average resumes too
        assert torch.equal(value, b["ema"][name]), name
    assert any(not torch.equal(a["model"][k], v) for k, v in a["ema"].items())
    first = train(_settings(tmp_path / "c", steps=3, ema=0.5), config, data=data)
    c = torch.load(first / "checkpoint.pt", weights_only=False)
    assert any(not torch.equal(v, c["model"][k]) for k, v in a["model"].items())
    best = torch.load(first / "best.pt", weights_only=False)  # judged and kept: the average
    assert best["step"] == 3
    assert all(torch.equal(best["model"][k], v) for k, v in c["ema"].items())


def test_rerunning_a_finished_run_changes_nothing_and_no_valid_split_keeps_the_last(tmp_path):
    """The same command again: a run that stopped early (patience) trains no more; without
    a valid split, best.pt is the weights of the run that went furthest, not the first
    stop's."""
    config = tiny_config()
    with_valid = tiny_packed(tiny_examples(6) + tiny_examples(2, seed=1, split="valid"))
    early = _settings(tmp_path / "early", steps=30, eval_every=1, ckpt_every=1, patience=1,
                      lr=1e-9, warmup_steps=0)  # no progress: the second eval stops it
    stopped = torch.load(train(early, config, data=with_valid) / "checkpoint.pt",
                         weights_only=False)
    again = torch.load(train(early, config, data=with_valid) / "checkpoint.pt",
                       weights_only=False)
    assert stopped["step"] < 30 and again["step"] == stopped["step"]
    no_valid = tiny_packed(tiny_examples(6))
    run = _settings(tmp_path / "novalid")
    train(run, config, data=no_valid, stop_at=3)  # a first stop writes best.pt at step 3
    assert torch.load(tmp_path / "novalid" / "run" / "best.pt", weights_only=False)["step"] == 3
    train(run, config, data=no_valid)
    assert torch.load(tmp_path / "novalid" / "run" / "best.pt", weights_only=False)["step"] == 6


DDP_SCRIPT = """
import sys
from tests.distill.student.fixtures import ANSWERS, tiny_config, tiny_examples, tiny_packed
from voxloop.distill.student.config import StudentTrainSettings
from voxloop.distill.student.train import train
data = tiny_packed(tiny_examples(6) + tiny_examples(2, seed=1, split="valid"))
train(StudentTrainSettings(data="unused.npz", out=sys.argv[1], steps=4, batch_size=2,
                           eval_every=2, ckpt_every=2, threads=1, device="cpu"),
      tiny_config(), data=data)
"""


@pytest.mark.slow
def test_torchrun_ddp_on_cpu(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    # --standalone: a free rendezvous port, so a busy 29500 (another job, another test
    # run) cannot fail it
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", str(script), str(tmp_path / "run")],
                          env=env, cwd=root, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 4 and (tmp_path / "run" / "best.pt").is_file()


def test_intended_targets_replace_misheard_answers(tmp_path):
    """A turn the teacher misheard trains on the intended answer: another turn's codes of
    it when there is one, else the assistant voice's speech of it, encoded (real piper
    and the bundled codec); the prompt's words become the CTC target."""
    from dataclasses import replace

    from voxloop.distill.data.targets import AnswerCodes, intended_targets

    right, misheard, unseen = tiny_examples(3)
    fallback = "Sorry, I can only help with simple math."
    examples = [
        replace(right, meta={"prompt_answer": right.answer_text}),
        replace(misheard, answer_text=fallback, asr_text="what is machine power",
                meta={"prompt_answer": right.answer_text}),
        replace(unseen, answer_text=fallback, meta={"prompt_answer": "Seven plus one is eight."}),
    ]
    out = intended_targets(examples, AnswerCodes(tmp_path, "voxloop-codec-16k", examples))
    assert [e.answer_text for e in out] == [right.answer_text, right.answer_text,
                                            "Seven plus one is eight."]
    assert np.array_equal(out[1].answer_codes, right.answer_codes)
    assert out[1].asr_text == misheard.prompt_text and out[1].meta["teacher_text"] == fallback
    codes = out[2].answer_codes
    assert codes.shape[0] == 8 and 25 <= codes.shape[1] <= 100  # 1-4 s of 25 Hz frames
    assert len(list((tmp_path / "answers").glob("*.npy"))) == 1  # cached for the next pack
    packed = tiny_packed(out)
    assert packed.teacher_text.tolist() == [right.answer_text, fallback, fallback]
    assert packed.intended_text.tolist() == [e.answer_text for e in out]
    with pytest.raises(VoxloopError, match="--targets teacher"):
        intended_targets([right], AnswerCodes(tmp_path, "voxloop-codec-16k", [right]))


def test_fine_tune_starts_from_the_given_model(tmp_path):
    data = tiny_packed(tiny_examples(6) + tiny_examples(2, seed=1, split="valid"))
    first = train(_settings(tmp_path / "a"), tiny_config(), data=data)
    folder = export_student(first / "best.pt", tmp_path / "student")
    start, _ = load_student(folder)
    tuned = train(_settings(tmp_path / "b", steps=1, lr=1e-12, warmup_steps=1,
                            init_from=str(folder)), tiny_config(d_model=96), data=data)
    weights = torch.load(tuned / "checkpoint.pt", weights_only=False)["model"]
    for name, value in start.state_dict().items():  # d_model 96 was ignored: the model's config
        torch.testing.assert_close(weights[name], value, atol=1e-6, rtol=0), name
    other = tiny_packed(tiny_examples(6, seed=5) + tiny_examples(2, seed=1, split="valid"))
    other.vocab = {**other.vocab, "text": other.vocab["text"][:-1]}
    with pytest.raises(VoxloopError, match="--keep-words-of"):
        train(_settings(tmp_path / "c", init_from=str(folder)), data=other)


def test_corpus_questions_become_training_turns(tmp_path):
    """Questions of a codec corpus's train split become turns (encoded by the real codec,
    answered by the scripted teacher); its answers and held-out utterances do not."""
    import json
    from dataclasses import replace

    from voxloop.audio import write_wav
    from voxloop.distill.data.targets import AnswerCodes, corpus_turns

    paris = replace(tiny_examples(2)[1], meta={"prompt_answer": ANSWERS[1]})
    rows = [("train-a-0000", "what is the capital of france", "train"),
            ("train-a-0001", ANSWERS[1], "train"),
            ("train-a-0002", "After Sunday comes Monday.", "train"),  # an answer read aloud,
            ("heldout-a-0000", "what's the capital of france", "heldout")]
    rng = np.random.default_rng(0)
    for uid, _, split in rows:
        write_wav(tmp_path / "corpus" / split / f"{uid}.wav",
                  0.1 * rng.standard_normal(24000).astype(np.float32), 16000)
    (tmp_path / "corpus" / "manifest.jsonl").write_text("".join(
        json.dumps({"uid": u, "text": t, "voice": "flite:slt", "split": s}) + "\n"
        for u, t, s in rows))
    turns = corpus_turns(tmp_path / "corpus",
                         AnswerCodes(tmp_path, "voxloop-codec-16k", [paris]))
    assert [t.prompt_text for t in turns] == ["what is the capital of france"]
    turn = turns[0]
    assert turn.split == "train" and turn.answer_text == ANSWERS[1] and turn.intent == "capital"
    assert np.array_equal(turn.answer_codes, paris.answer_codes)
    assert turn.user_codes.shape == (8, 38)  # 1.5 s at 25 Hz, the last frame zero-padded
    with pytest.raises(VoxloopError, match="voxloop distill corpus"):
        corpus_turns(tmp_path, AnswerCodes(tmp_path, "voxloop-codec-16k", [paris]))


def test_training_with_the_codec_latent_reads_the_data_codec(tmp_path):
    from voxloop.codecs.registry import load_codec

    data = tiny_packed(tiny_examples(4))
    with pytest.raises(VoxloopError, match="names no codec"):
        train(_settings(tmp_path / "a", steps=1), tiny_config(user_latent_dim=128), data=data)
    data.vocab = {**data.vocab, "codec": {"name": "voxloop-codec-16k"}}
    out = train(_settings(tmp_path / "b", steps=2), tiny_config(user_latent_dim=128), data=data)
    books = torch.load(out / "checkpoint.pt", weights_only=False)["model"]["user_codebooks"]
    codec = load_codec("voxloop-codec-16k")
    assert torch.equal(books[:1024], codec.quantizer.vq.layers[0]._codebook.embed)


def test_answer_balance_draws_rare_answers_more_often():
    from voxloop.distill.student.train_data import answer_weights

    data = tiny_packed(tiny_examples(8) + tiny_examples(1, seed=3))  # answer 0 three times
    rows = data.indices("train")
    assert answer_weights(data, rows, 0.0) is None
    p = answer_weights(data, rows, 1.0)  # every answer alike: its turns share its weight
    by_answer = {a: p[data.answer_text[rows] == a].sum() for a in set(data.answer_text[rows])}
    np.testing.assert_allclose(sorted(by_answer.values()), [0.25] * 4)
    assert p.sum() == pytest.approx(1.0)


def test_refusal_share_draws_the_refused_turns_that_often():
    from voxloop.distill.student.train_data import answer_weights
    from voxloop.distill.teachers.domain.data import load_domain

    data = tiny_packed(tiny_examples(8) + tiny_examples(1, seed=3))
    rows = data.indices("train")
    with pytest.raises(VoxloopError, match="--outside-questions"):  # no refusal to draw
        answer_weights(data, rows, 0.5, refusal_share=0.1)
    refused = np.isin(np.arange(len(data.answer_text)), rows[:2])
    data.answer_text = np.where(refused, load_domain()["fallback"], data.answer_text)
    before = answer_weights(data, rows, 0.5)
    p = answer_weights(data, rows, 0.5, refusal_share=0.1)
    is_refusal = data.answer_text[rows] == load_domain()["fallback"]
    np.testing.assert_allclose(p[is_refusal], [0.05, 0.05])
    np.testing.assert_allclose(p[~is_refusal] / p[~is_refusal].sum(),  # the rest as before
                               before[~is_refusal] / before[~is_refusal].sum())
    assert p.sum() == pytest.approx(1.0)


def _untrained_model_and_batch():
    """A tiny untrained student and a batch of four tiny turns (no augmentation)."""
    from voxloop.distill.student.model import Student
    from voxloop.distill.student.pack import make_batch

    data = tiny_packed(tiny_examples(4))
    torch.manual_seed(0)
    model = Student(tiny_config(text_vocab=len(data.vocab["text"]),
                                ctc_vocab=len(data.vocab["ctc"]))).eval()
    return model, make_batch(model.config, data, np.arange(4), None, np.random.default_rng(0))


def test_first_codebook_weight_changes_what_training_minimizes_not_the_reported_loss():
    from voxloop.distill.student.train import compute_losses

    model, batch = _untrained_model_and_batch()
    plain = compute_losses(model, batch, StudentTrainSettings())
    heavy = compute_losses(model, batch, StudentTrainSettings(first_codebook_weight=3.0))
    assert heavy["audio"].item() == pytest.approx(plain["audio"].item())
    assert heavy["total"].item() != pytest.approx(plain["total"].item())


def test_self_feed_replaces_fed_back_codes_with_the_models_own():
    from voxloop.distill.student.train import self_fed

    model, batch = _untrained_model_and_batch()
    same = self_fed(model, batch, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(same.ids, batch.ids)
    fed = self_fed(model, batch, 1.0, torch.Generator().manual_seed(0))
    k, offset = model.config.k_out, model.config.audio_offset
    predicted = model(batch.ids).audio[:, :-1, :, :1024].argmax(-1)
    target = batch.audio_target[:, :-1]
    real = (target >= 0) & (target < 1024)
    codes = fed.ids[:, 1:, :k] - offset - 1025 * torch.arange(k)
    assert torch.equal(codes[real], predicted[real])  # every real code is the model's own
    assert torch.equal(fed.ids[:, 1:, :k][~real], batch.ids[:, 1:, :k][~real])  # the rest
    assert torch.equal(fed.audio_target, batch.audio_target)  # targets stay the teacher's
    assert (codes[real] != (batch.ids[:, 1:, :k] - offset - 1025 * torch.arange(k))[real]).any()


def test_words_only_training_ends_turns_after_the_words_and_leaves_the_audio_head(tmp_path):
    from tests.distill.student.fixtures import pointer_packed
    from voxloop.distill.student.pack import make_batch

    data = pointer_packed()  # a word-pointer student: its boundary loss has nothing to say
    config = tiny_config(text_vocab=len(data.vocab["text"]), ctc_vocab=len(data.vocab["ctc"]),
                         word_pointer=True)
    rows = np.arange(4)
    batch = make_batch(config, data, rows, None, np.random.default_rng(0), words_only=True)
    full = make_batch(config, data, rows, None, np.random.default_rng(0))
    for b, i in enumerate(rows):
        end = data.user(i).shape[1] + len(data.text(i)) + 1  # up to the last answer word
        assert int((batch.text_target[b] != -100).sum()) == len(data.text(i)) + 1  # + <eot>
        assert torch.equal(batch.ids[b, :end], full.ids[b, :end])
        assert torch.equal(batch.ids[b, end:], torch.full_like(batch.ids[b, end:],
                                                               config.null_id))
    assert batch.ids.shape[1] < full.ids.shape[1] and (batch.audio_target == -100).all()

    torch.manual_seed(0)
    first = train(_settings(tmp_path / "a", steps=1), config, data=data)
    folder = export_student(first / "best.pt", tmp_path / "student")
    start, _ = load_student(folder)
    tuned = train(_settings(tmp_path / "b", steps=3, init_from=str(folder), words_only=True,
                            select_on="text"), data=data)
    state = torch.load(tuned / "checkpoint.pt", weights_only=False)
    weights = state["model"]
    valid = torch.load(tuned / "best.pt", weights_only=False)["valid"]
    assert np.isfinite(valid["total"]) and valid["audio"] == 0, valid
    assert torch.equal(weights["audio_head.weight"], start.audio_head.weight)
    assert torch.equal(weights["boundary_head.weight"], start.boundary_head.weight)
    assert not torch.equal(weights["text_head.weight"], start.text_head.weight)
    with pytest.raises(VoxloopError, match="--words-only"):
        train(_settings(tmp_path / "c", words_only=True, self_feed=0.5), data=data)


def test_a_file_that_is_not_a_pack_is_a_clear_error(tmp_path):
    from voxloop.distill.student.pack import PackedData

    with pytest.raises(VoxloopError, match="packed dataset not found.*voxloop distill pack"):
        PackedData.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_text("not an archive")
    np.savez(tmp_path / "other.npz", tokens=np.zeros(3))  # an npz of something else
    (tmp_path / "damaged.npz").write_bytes(b"PK\x03\x04 and no archive after it")
    for name in ("junk.npz", "other.npz", "damaged.npz"):
        with pytest.raises(VoxloopError, match="is not a packed dataset.*voxloop distill pack"):
            PackedData.load(tmp_path / name)
