"""The README tells the truth: its numbers are the measured ones (one number per
measurement), its links stay in the repository, its Python runs, and every error it
lists is one the code really gives."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SOURCE_FOLDERS = ("voxloop", "codecs", "distill", "realtime", "client", "bench")


def section(title: str) -> str:
    """The text of the README section whose heading is ``title``, up to the next one of
    its level or higher."""
    match = re.search(rf"^(#+) {re.escape(title)}\n", README, re.M)
    assert match, f"no section {title!r}"
    level = len(match.group(1))
    rest = README[match.end():]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[:end.start()] if end else rest


def bench_p50_ms(engine: str, sessions: int = 1) -> int:
    row = re.search(rf"^\| {engine} \| {sessions} \| (\d+) / \d+ \|", README, re.M)
    assert row, f"no bench row for {engine}, {sessions} session(s)"
    return int(row.group(1))


def test_the_design_overview_is_in_the_repository():
    assert (ROOT / "docs" / "DESIGN.md").is_file()
    assert "](docs/DESIGN.md)" in README
    outside = [t for t in re.findall(r"\]\(([^)]+)\)", README) if t.startswith("../")]
    assert not outside, outside


def test_the_headline_latency_is_the_measured_one():
    headline = README.split("\n\n")[1]  # the paragraph under the title
    assert f"{bench_p50_ms('native')} ms" in headline
    assert f"{bench_p50_ms('cascade')} ms" in headline
    assert "300 ms" not in headline  # the target, not what was measured


def test_one_number_per_measurement():
    held_out = set(re.findall(r"(\d+(?:\.\d+)?) % of held-out", README))
    measured = json.loads((ROOT / "models" / "voxloop-student" / "metrics.json").read_text())
    told = {f"{measured['all'][k]:.1f}" for k in ("correct_intended_pct", "teacher_intended_pct")}
    assert held_out == told, held_out  # the bundled student's eval, one number each
    for engine in ("native", "cascade"):
        block = re.search(rf"engine {engine} \(log.*?\nlatency +(\d+) ms", README, re.S)
        assert block, engine
        told = re.findall(r"(\d+) ms", README[block.end():block.end() + 1500])
        assert block.group(1) in told, (engine, block.group(1))
    assert "442 ms" not in README  # the demo measured 438


def test_reliability_suite_takes_one_number_of_minutes():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[:makefile.index("\ntest-reliability:")]
    make_says = re.findall(r"about (\d+) minutes", recipe.rsplit("\n\n", 1)[-1])
    readme_says = re.findall(r"about (\d+) minutes", section("Tests").split(
        "`make test-reliability`", 1)[1].split("\n\n", 1)[0])
    assert make_says and make_says == readme_says, (make_says, readme_says)


def _source_strings() -> set[str]:
    """Every string constant (and constant part of an f-string) in the source."""
    found: set[str] = set()
    for folder in SOURCE_FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.add(node.value)
    return found


def test_every_listed_error_is_one_the_code_gives():
    listed = re.findall(r"^- (?:``(.+?)``|`([^`]+)`)", section("Errors you may see"), re.M)
    assert len(listed) >= 15
    strings = _source_strings()
    missing = [a or b for a, b in listed
               if not all(any(part.strip() in s for s in strings)
                          for part in (a or b).split("…") if part.strip())]
    assert not missing, missing


@pytest.mark.slow  # the bundled student and codec
def test_the_student_streaming_snippet_runs_from_any_folder(tmp_path):
    """It used to prefill with a name it never defined, and a torch tensor from the codec
    where the student wants numpy; run outside the repository, its model path still
    resolves."""
    code = re.search(r"Streaming from Python:\n\n```python\n(.*?)```", README, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code + "\nprint('ran', state.done)\n"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ran True")
