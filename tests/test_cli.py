"""The ``voxloop`` command as a user runs it: subprocesses, exit codes, messages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from voxloop.audio import read_wav, write_wav


def voxloop(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxloop", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_help_lists_commands_and_examples():
    out = voxloop("--help")
    assert out.returncode == 0
    for command in ("tts", "asr", "llm", "demo"):
        assert command in out.stdout
    assert "examples:" in out.stdout


@pytest.mark.parametrize("command", ["tts", "asr", "llm", "demo"])
def test_every_subcommand_help_has_an_example(command):
    out = voxloop(command, "--help")
    assert out.returncode == 0, out.stderr
    assert "example:" in out.stdout and f"voxloop {command}" in out.stdout


@pytest.mark.slow
def test_tts_then_asr_then_llm(tmp_path):
    wav = tmp_path / "q.wav"
    out = voxloop("tts", "--voice", "festival:slt-hts", "--text",
                  "What is the capital of Italy?", "--out", str(wav))
    assert out.returncode == 0, out.stderr
    samples, rate_hz = read_wav(wav)
    assert rate_hz == 16000 and len(samples) > rate_hz
    heard = voxloop("asr", str(wav))
    assert heard.returncode == 0, heard.stderr
    assert "capital of italy" in heard.stdout.lower()
    answer = voxloop("llm", heard.stdout.strip())
    assert answer.stdout.strip() == "The capital of Italy is Rome."


def test_list_voices():
    out = voxloop("tts", "--list-voices")
    assert out.returncode == 0
    assert re.search(r"^piper:joe\s+assistant", out.stdout, re.M)
    assert len(out.stdout.splitlines()) >= 10


@pytest.mark.slow
def test_demo_prints_four_lines_and_timings(tmp_path):
    wav = tmp_path / "answer.wav"
    out = voxloop("demo", "--question", "How many legs does a spider have?", "--out", str(wav))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("question") and "spider" in lines[0]
    assert lines[1].startswith("transcript") and re.search(r"ASR \d+ ms", lines[1])
    assert lines[2].startswith("answer") and "A spider has eight legs." in lines[2]
    assert lines[3].startswith("speech") and re.search(r"TTS \d+ ms", lines[3])
    assert read_wav(wav)[1] == 22050


@pytest.mark.parametrize(("args", "message"), [
    (("asr", "/no/such.wav"), "audio file not found"),
    (("tts", "--voice", "bogus", "--text", "hi", "--out", "/tmp/x.wav"), "unknown voice"),
    (("tts", "--text", "hi"), "--text and --out are required"),
    (("llm", "hi", "--llm", "openai", "--llm-url", "http://127.0.0.1:9/v1",
      "--llm-timeout-s", "2"), "cannot reach LLM endpoint"),
    (("llm", "hi", "--llm", "openai", "--llm-url", "notaurl"), "is not an http(s) URL"),
    (("codec", "decode", "/no/such.npz", "/tmp/x.wav"), "codes file not found: /no/such.npz"),
])
def test_bad_input_exits_nonzero_with_a_message(args, message):
    out = voxloop(*args)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_a_bad_output_path_is_refused_before_any_work(tmp_path):
    """Each command checks where it will write first: a traceback after minutes of work
    (or none at all) is what this prevents."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    wav = tmp_path / "q.wav"
    write_wav(wav, np.zeros(1600, np.float32), 16000)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "turns.jsonl").write_text("{not json\n")
    cases = [
        (("tts", "--text", "hi", "--out", str(tmp_path / "speech")), "ending in .wav"),
        (("tts", "--text", "hi", "--out", str(blocker / "x.wav")), "cannot write into"),
        (("demo", "--out", str(tmp_path)), "is a folder"),
        (("codec", "encode", str(wav), str(blocker / "codes.npz")), "cannot write into"),
        (("codec", "semantic", str(wav), str(blocker / "tokens")), "cannot write into"),
        (("eval", "student", "--out", str(blocker)), "is a file"),
        (("eval", "compare", str(tmp_path), str(tmp_path), "--out", str(blocker / "c.json")),
         "cannot write into"),
        (("eval", "compare", str(tmp_path / "run"), str(tmp_path / "run")),
         "is not the JSON lines"),
        (("distill", "export", str(tmp_path / "none.pt"), str(tmp_path / "m")), "not found"),
        (("distill", "export", str(blocker), str(tmp_path / "m")), "is not a student checkpoint"),
    ]
    for args, message in cases:
        out = voxloop(*args)
        assert out.returncode == 1 and "Traceback" not in out.stderr, (args, out.stderr)
        assert message in out.stderr, (args, out.stderr)
    assert not (tmp_path / "speech").exists() and not (tmp_path / "m").exists()


def test_codec_decode_given_audio_says_so(tmp_path):
    write_wav(tmp_path / "q.wav", np.zeros(1600, np.float32), 16000)
    out = voxloop("codec", "decode", str(tmp_path / "q.wav"), str(tmp_path / "out.wav"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "is audio, not codes" in out.stderr and "voxloop codec encode" in out.stderr


@pytest.mark.slow  # the bundled codec
def test_codec_encode_names_the_file_it_wrote(tmp_path):
    write_wav(tmp_path / "q.wav", np.zeros(16000, np.float32), 16000)
    out = voxloop("codec", "encode", str(tmp_path / "q.wav"), str(tmp_path / "qq"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"wrote {tmp_path / 'qq.npz'}:")  # numpy adds .npz
    assert (tmp_path / "qq.npz").is_file()


@pytest.mark.slow  # the bundled student
def test_eval_finds_the_repository_models_from_any_folder(tmp_path):
    """`voxloop eval student --model models/voxloop-student` run outside the repository:
    the relative model path resolves in the repository, so the next error is the data's."""
    out = subprocess.run([sys.executable, "-m", "voxloop", "eval", "student", "--model",
                          "models/voxloop-student", "--data", "no-such-dataset", "--out",
                          str(tmp_path / "eval")], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "no-such-dataset" in out.stderr and "no student model" not in out.stderr


def test_repository_paths_resolve_from_any_folder(tmp_path, monkeypatch):
    from voxloop.models import find_model, in_repo, repo_root

    monkeypatch.chdir(tmp_path)
    assert find_model("models/voxloop-student", "student", marker="vocab.json") == \
        repo_root() / "models" / "voxloop-student"
    assert in_repo("models/voxloop-codec-16k") == repo_root() / "models" / "voxloop-codec-16k"
    assert in_repo("not/there") == Path("not/there")  # the caller's own error follows
    (tmp_path / "models").mkdir()
    assert in_repo("models") == Path("models")  # what exists here wins


def test_not_a_wav_file(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio")
    out = voxloop("asr", str(junk))
    assert out.returncode == 1 and "cannot read" in out.stderr


def test_command_line_imports_no_torch():
    """Building the whole parser stays light: heavy imports happen only when a command runs."""
    code = ("import sys; from voxloop.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'encodec', 'faster_whisper') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
