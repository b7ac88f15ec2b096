"""Student training: a tiny model overfits a tiny set and reproduces it; resume is exact."""

from __future__ import annotations

import numpy as np
import torch

from tests.distill.student_fixtures import tiny_config, tiny_examples, tiny_packed
from voxloop.distill.generate import SamplingOptions, generate
from voxloop.distill.student import load_student
from voxloop.distill.student_text import Tokenizer, answer_words
from voxloop.distill.train_student import StudentTrainSettings, export_student, train


def _settings(tmp_path, **changes) -> StudentTrainSettings:
    values = dict(data="unused.npz", out=str(tmp_path / "run"), steps=6, batch_size=4, lr=3e-3,
                  warmup_steps=2, eval_every=3, ckpt_every=3, threads=1, device="cpu")
    values.update(changes)
    return StudentTrainSettings(**values)


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
    whole = train(_settings(tmp_path / "a"), config, data=data)
    part = train(_settings(tmp_path / "b"), config, data=data, stop_at=3)
    assert torch.load(part / "checkpoint.pt", weights_only=False)["step"] == 3
    part = train(_settings(tmp_path / "b"), config, data=data)
    a = torch.load(whole / "checkpoint.pt", weights_only=False)
    b = torch.load(part / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 6
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    first = train(_settings(tmp_path / "c", steps=3), config, data=data)
    c = torch.load(first / "checkpoint.pt", weights_only=False)
    assert any(not torch.equal(v, c["model"][k]) for k, v in a["model"].items())


DDP_SCRIPT = """
import sys
from tests.distill.student_fixtures import tiny_config, tiny_examples, tiny_packed
from voxloop.distill.student_config import StudentTrainSettings
from voxloop.distill.train_student import train
data = tiny_packed(tiny_examples(6) + tiny_examples(2, seed=1, split="valid"))
train(StudentTrainSettings(data="unused.npz", out=sys.argv[1], steps=4, batch_size=2,
                           eval_every=2, ckpt_every=2, threads=1, device="cpu"),
      tiny_config(), data=data)
"""


def test_torchrun_ddp_on_cpu(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                    str(script), str(tmp_path / "run")], check=True, env=env, cwd=root,
                   capture_output=True, timeout=240)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 4 and (tmp_path / "run" / "best.pt").is_file()
