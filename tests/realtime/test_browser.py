"""The browser client in a real Chromium against ``voxloop serve`` on loopback, every engine.

Chromium runs headless with a fake microphone that plays a spoken question (a wav
made with the offline TTS) once each time the page opens the microphone. The page
is opened with ``?autostart=1``; the test reads what it shows through the DevTools
protocol (``window.voxloop.snapshot()`` and the DOM) and saves screenshots under
out/browser/. Talking over an answer: the test presses Mute and Unmute while the
answer plays, so the page opens the microphone again and the question is spoken
again over the answer.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.browser import DESCRIBE, INSTALL_HINT, SNAPSHOT, Chromium, Page, chromium_path
from voxloop.realtime.semantic_turns import RESUMES_WITHIN_MS
from voxloop.realtime.server_process import ServerProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out" / "browser"
QUESTION, VOICE = "What can you do?", "festival:slt-hts"
CASCADE_HEARD, CASCADE_ANSWER = "what can you do", "simple math"
LEAD_S = 0.5  # silence before the question in the microphone's file
WAIT_S = 180.0  # for anything the server does: a loaded 2-core machine is slow


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory) -> Path:
    from voxloop.audio import write_wav
    from voxloop.distill.teachers.tts import synthesize

    samples, rate_hz = synthesize(QUESTION, VOICE)
    lead, tail = np.zeros(int(LEAD_S * rate_hz), np.float32), np.zeros(rate_hz, np.float32)
    return write_wav(tmp_path_factory.mktemp("browser") / "question.wav",
                     np.concatenate([lead, samples, tail]), rate_hz)


@pytest.fixture(scope="module", params=["cascade", "native", "hybrid"])
def served(request):
    """(engine, ServerProcess): ``voxloop serve`` as a user runs it, engine named."""
    if chromium_path() is None:
        pytest.skip(INSTALL_HINT)
    with ServerProcess(["--engine", request.param], 300) as server:
        yield request.param, server


def run_page(folder: Path, wav: Path, server: ServerProcess, scenario) -> dict:
    """Open the server's page (autostarted) in a fresh Chromium hearing ``wav``;
    ``await scenario(page)``. On a failure the server's last lines are printed."""
    async def main():
        browser = Chromium(folder, capture_wav=wav)
        try:
            await browser.connect()
            page = await browser.open(server.http + "/?autostart=1")
            page.describe = DESCRIBE
            return await scenario(page)
        finally:
            await browser.close()

    try:
        return asyncio.run(main())
    except BaseException:
        print("the server's last lines:\n" + "".join(server.lines[-40:]))
        raise


async def screenshot(page: Page, name: str, state: str) -> None:
    """Save the page once it shows ``state`` (it redraws ten times a second)."""
    await page.wait_for(f"document.getElementById('state').dataset.state === '{state}'",
                        WAIT_S, f"the page showing {state}")
    await page.screenshot(OUT / name)


async def wait_turn(page: Page, index: int, condition: str, what: str) -> dict:
    """Wait until turn ``index`` exists and ``condition`` (JS, on ``t`` and ``s``) holds."""
    js = (f"(() => {{ const s = {SNAPSHOT}; const t = s && s.turns[{index}];"
          f" return t && ({condition}) ? s : null; }})()")
    return await page.wait_for(js, WAIT_S, what)


# conditions on a turn ``t`` of snapshot ``s``, ``it`` its answer's playback (or undefined)
PLAYING = "it && it.played > 0"
ANSWERED = "t.status === 'completed' && t.userDone && it && it.complete && !s.stats.audible"


async def latest_turn(page: Page, after: int, condition: str, what: str,
                      every_s: float = 0.25) -> tuple[int, dict]:
    """Wait for a turn past index ``after`` for which ``condition`` holds (the latest such);
    return its index and the snapshot. (The VAD may cut a question in two: the tests do
    not count on turn numbers.)"""
    js = (f"(() => {{ const s = {SNAPSHOT}; if (!s || !s.stats) return null;"
          f" for (let i = s.turns.length - 1; i > {after}; i--) {{ const t = s.turns[i];"
          " const it = t.answerItemId ? s.stats.items[t.answerItemId] : undefined;"
          f" if ({condition}) return {{index: i, snap: s}}; }} return null; }})()")
    found = await page.wait_for(js, WAIT_S, what, every_s)
    return found["index"], found["snap"]


def played(snap: dict, item: str) -> dict:
    return snap["stats"]["items"][item]


def check_answer(engine: str, turn: dict, text: str) -> None:
    """The heard question and the answer are the expected ones, and the page shows them."""
    if engine == "cascade":
        assert CASCADE_HEARD in re.sub(r"[^a-z ]", "", turn["user"].lower())
        assert CASCADE_ANSWER in turn["assistant"].lower()
    else:  # the student (alone or in the hybrid) answers in its own words: any of them do;
        # the hybrid asks the cascade about a turn the student is unsure of, and then the
        # answer may be the cascade's LLM's to what its Whisper heard (the user's transcript)
        from voxloop.distill.teachers.llm import load_llm

        vocab = set(json.loads((ROOT / "models/voxloop-student/vocab.json").read_text())["text"])
        words = turn["assistant"].split()
        assert (words and set(words) <= vocab) or (
            engine == "hybrid" and turn["assistant"] == load_llm().reply([], turn["user"]))
    assert turn["assistant"] in text
    assert turn["user"] in text


def test_page_answers_a_spoken_question(served, question_wav, tmp_path):
    engine, server = served

    async def scenario(page: Page):
        index, snap = await latest_turn(page, -1, ANSWERED, "an answer played to the end")
        text = await page.evaluate("document.getElementById('turns').innerText")
        info = await page.evaluate("document.querySelector('.info').innerText")
        await screenshot(page, f"{engine}-answer.png", "listening")
        return snap["turns"][index], snap, text, info

    turn, snap, text, info = run_page(tmp_path, question_wav, server, scenario)
    item = played(snap, turn["answerItemId"])
    print(f"\nbrowser {engine}: heard {turn['user']!r}, answered {turn['assistant']!r}, "
          f"latency {turn['latencyMs']} ms, played {item['played'] / 24000:.2f} s, "
          f"underruns {snap['underruns']}")
    assert snap["state"] == "listening" and snap["message"] is None
    assert turn["status"] == "completed" and turn["cutMs"] is None
    check_answer(engine, turn, text)
    assert item["played"] == item["received"] > 24000 // 2  # all of it, and it is speech
    assert turn["latencyMs"] is not None and turn["latencyMs"] > 0
    assert f"{engine}:" in info and "semantic_vad" in info  # the server's default


def test_talking_over_the_answer_cuts_it(served, question_wav, tmp_path):
    """Mute and Unmute while the answer plays: the question is spoken again over it, the
    page flushes playback at once and truncates the answer where it really stopped; the
    question is then answered again. An answer that ends before the interruption lands
    (the student's can be short) is not cut: the next answer is talked over instead."""
    engine, server = served

    async def reask(page: Page, turn: dict) -> None:
        # speech that starts within RESUMES_WITHIN_MS of the question's end goes on with
        # that question (one turn: the cut answer's turn leaves the page); this test wants
        # a new turn, so the question starts again (after LEAD_S) past that window
        since_end_s = (turn["latencyMs"] or 0) / 1000  # the answer has just begun to play
        await asyncio.sleep(max(0.0, RESUMES_WITHIN_MS / 1000 + 0.25 - LEAD_S - since_end_s))
        await page.evaluate("document.getElementById('mute').click()")
        await page.wait_for(f"{SNAPSHOT}.muted", 30, "muted")
        await page.evaluate("document.getElementById('mute').click()")

    async def scenario(page: Page):
        cut_index, last = None, -1
        for _ in range(4):
            index, snap = await latest_turn(page, last, PLAYING, "an answer playing",
                                            every_s=0.05)
            await reask(page, snap["turns"][index])
            outcome = await wait_turn(
                page, index, "t.cutMs !== null || (s.stats.items[t.answerItemId].complete && "
                "s.stats.items[t.answerItemId].played >= s.stats.items[t.answerItemId]"
                ".received)", f"turn {index}'s answer cut or finished")
            if outcome["turns"][index]["cutMs"] is not None:
                cut_index = index
                break
            last = index
        assert cut_index is not None, "no answer was long enough to talk over"
        await wait_turn(page, cut_index, "t.serverCutMs !== null", "the server's truncate")
        again_index, snap = await latest_turn(page, cut_index, ANSWERED,
                                              "the question asked again answered")
        text = await page.evaluate("document.getElementById('turns').innerText")
        await screenshot(page, f"{engine}-barge-in.png", "listening")
        return cut_index, again_index, snap, text

    cut_index, again_index, snap, text = run_page(tmp_path, question_wav, server,
                                                  scenario)
    turn, again = snap["turns"][cut_index], snap["turns"][again_index]
    item = played(snap, turn["answerItemId"])
    print(f"\nbrowser {engine} barge-in: answer {cut_index} cut at {turn['cutMs']} ms of "
          f"{item['received'] / 24:.0f} ms received; then {again['assistant']!r}")
    assert snap["bargeIns"] == 1
    assert turn["serverCutMs"] == turn["cutMs"] > 0  # the server truncated where the page said
    # nothing of the answer played after the cut (the flush answered with `played` then)
    assert turn["cutMs"] <= 1000 * item["played"] / 24000 < turn["cutMs"] + 1
    assert f"cut at {turn['cutMs'] / 1000:.2f} s" in text
    if engine == "cascade":  # the same answer again, whole (about 6 s): the cut was early
        assert turn["status"] == "cancelled" and turn["assistant"] == again["assistant"]
        assert turn["cutMs"] + 1000 < 1000 * played(snap, again["answerItemId"])["played"] / 24000
    assert again["status"] == "completed" and again["cutMs"] is None
    check_answer(engine, again, text)
