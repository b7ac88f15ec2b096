"""``voxloop eval compare``: two evaluations of the same turns, paired turn by turn."""

from __future__ import annotations

import json

import pytest

from voxloop.cli import main
from voxloop.distill.evals.compare import (
    Comparison,
    compare,
    format_table,
    load_turns,
    mcnemar_p,
)
from voxloop.errors import VoxloopError


def _write(folder, outcomes: dict[str, tuple[str, bool, bool]]) -> str:
    """outcomes: id -> (split, right out loud, words right)."""
    folder.mkdir()
    rows = [{"id": i, "split": split, "correct_intended": loud, "text_exact": words}
            for i, (split, loud, words) in outcomes.items()]
    (folder / "turns.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder)


def test_mcnemar_matches_the_binomial_tail():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(18, 7) == pytest.approx(0.0433, abs=5e-4)  # 2 * P(X <= 7), X ~ B(25, 1/2)
    assert mcnemar_p(7, 18) == mcnemar_p(18, 7)
    assert mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(6, 0) == pytest.approx(2 / 64)


def test_turns_are_paired_by_id_per_split_and_measure(tmp_path):
    before = _write(tmp_path / "a", {"v1": ("heldout_voice", True, True),
                                     "v2": ("heldout_voice", False, True),
                                     "p1": ("heldout_phrasing", True, False),
                                     "p2": ("heldout_phrasing", False, False)})
    after = _write(tmp_path / "b", {"p2": ("heldout_phrasing", True, True),
                                    "p1": ("heldout_phrasing", False, True),
                                    "v2": ("heldout_voice", True, True),
                                    "v1": ("heldout_voice", True, True)})
    rows = {(r.split, r.measure): r for r in compare(load_turns(before), load_turns(after))}
    loud = rows[("all", "out loud")]
    assert (loud.turns, loud.before_pct, loud.after_pct, loud.gained, loud.lost) == (
        4, 50.0, 75.0, 2, 1)
    voice = rows[("heldout_voice", "out loud")]
    assert (voice.gained, voice.lost, voice.after_pct) == (1, 0, 100.0)
    words = rows[("heldout_phrasing", "words")]
    assert (words.before_pct, words.after_pct, words.gained, words.lost) == (0.0, 100.0, 2, 0)


def test_different_turns_or_no_folder_exit_with_a_message(tmp_path, capsys):
    before = _write(tmp_path / "a", {"v1": ("heldout_voice", True, True)})
    after = _write(tmp_path / "b", {"v2": ("heldout_voice", True, True)})
    with pytest.raises(VoxloopError, match="same --data"):
        compare(load_turns(before), load_turns(after))
    assert main(["eval", "compare", before, after, "--out", str(tmp_path / "c.json")]) != 0
    assert main(["eval", "compare", before, str(tmp_path / "nowhere")]) != 0
    assert "eval student --out" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_runs_on_other_builds_or_without_intended_answers_are_refused(tmp_path):
    """The same ids, other questions (a rebuilt dataset); a turn with no intended answer;
    no turns at all: each a one-line error, not a traceback."""
    rows = {"v1": ("heldout_voice", True, True)}
    before, after = _write(tmp_path / "a", rows), _write(tmp_path / "b", rows)
    for folder, question in ((before, "what is 2 plus 2"), (after, "what is 3 plus 3")):
        row = {**json.loads((tmp_path / folder / "turns.jsonl").read_text()),
               "prompt_text": question, "voice": "flite:slt"}
        (tmp_path / folder / "turns.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(VoxloopError, match="another question or voice"):
        compare(load_turns(before), load_turns(after))
    (tmp_path / "b" / "turns.jsonl").write_text(
        json.dumps({"id": "v1", "split": "heldout_voice", "text_exact": True}) + "\n")
    with pytest.raises(VoxloopError, match=r"turns without \['correct_intended'\]"):
        load_turns(after)
    (tmp_path / "b" / "turns.jsonl").write_text("")
    with pytest.raises(VoxloopError, match="holds no turns"):
        load_turns(after)


def test_the_command_prints_and_saves_the_table(tmp_path, capsys):
    folder = _write(tmp_path / "a", {"v1": ("heldout_voice", True, False)})
    out = tmp_path / "compare.json"
    assert main(["eval", "compare", folder, folder, "--out", str(out)]) == 0
    assert "| all | out loud | 1 | 100.0 | 100.0 | 0 | 0 | 1.000 |" in capsys.readouterr().out
    assert "| 29 | 4 | <0.001 |" in format_table([Comparison("all", "out loud", 483, 65.8,
                                                             71.0, 29, 4, mcnemar_p(29, 4))],
                                                 "a", "b")
    saved = json.loads(out.read_text())
    assert {r["measure"] for r in saved["rows"]} == {"out loud", "words"}
