"""The browser client's failures in a real Chromium, against a server on a scripted engine:
the API key it asks for, a server that goes away and comes back, a denied microphone."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from tests.helpers.browser import DESCRIBE, INSTALL_HINT, SNAPSHOT, Chromium, Page, chromium_path
from tests.helpers.processes import gone_within, none_named_within, start_and_kill
from tests.helpers.server import ServerThread
from tests.realtime.fakes import FakeEngine

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium_path() is None, reason=INSTALL_HINT)]

KEY = "s3cret-key"
WAIT_S = 90.0


def run_page(folder: Path, url: str, scenario, mic: str = "fake"):
    """``mic``: 'fake' (a fake microphone, allowed), 'denied' (the user said no before) or
    'missing' (no fake device: a machine without a microphone)."""
    async def main():
        browser = Chromium(folder, allow_mic=mic != "denied", fake_mic=mic != "missing")
        try:
            await browser.connect()
            if mic == "denied":  # as a user who said no before
                await browser.call("Browser.setPermission", {
                    "permission": {"name": "microphone"}, "setting": "denied",
                    "origin": url.split("/?")[0].rstrip("/")})
            page = await browser.open(url)
            page.describe = DESCRIBE
            return await scenario(page)
        finally:
            await browser.close()

    return asyncio.run(main())


async def wait_snapshot(page: Page, condition: str, what: str) -> dict:
    return await page.wait_for(f"(() => {{ const s = {SNAPSHOT}; return s && ({condition})"
                               " ? s : null; })()", WAIT_S, what)


async def submit_key(page: Page, key: str) -> None:
    await page.evaluate(f"document.getElementById('key').value = {key!r}; "
                        "document.querySelector('#key-form button').click()")


def test_the_page_asks_for_the_key_and_sends_it_as_a_subprotocol(tmp_path):
    server = ServerThread(FakeEngine(), api_key=KEY)

    async def scenario(page: Page):
        asked = await wait_snapshot(page, "s.askKey", "the key form")
        await submit_key(page, "wrong")
        refused = await wait_snapshot(page, "s.message && /refused/.test(s.message.text)",
                                      "the wrong key refused")
        await submit_key(page, KEY)
        listening = await wait_snapshot(page, "s.state === 'listening'", "listening")
        return asked, refused, listening

    try:
        asked, refused, listening = run_page(tmp_path, server.http + "/?autostart=1", scenario)
    finally:
        server.stop()
    assert asked["state"] == "offline" and not asked["running"]
    assert refused["askKey"] and not refused["running"]
    assert listening["connection"].startswith("connected") and not listening["askKey"]


def test_the_page_reconnects_when_the_server_comes_back(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = FakeEngine()
    first = ServerThread(engine, port=port)
    second = None

    async def scenario(page: Page):
        nonlocal second
        await wait_snapshot(page, "s.state === 'listening'", "listening")
        await asyncio.to_thread(first.stop)
        gone = await wait_snapshot(page, "/not answering/.test(s.connection)",
                                   "the page saying the server is gone")
        second = await asyncio.to_thread(ServerThread, engine, port=port)
        back = await wait_snapshot(page, "s.state === 'listening' && s.reconnects >= 2",
                                   "listening again")
        return gone, back

    try:
        gone, back = run_page(tmp_path, first.http + "/?autostart=1", scenario)
    finally:
        for server in (first, second):
            if server is not None and server.thread.is_alive():
                server.stop()
    assert gone["state"] == "reconnecting" and "reconnecting in" in gone["connection"]
    assert back["connection"].startswith("connected") and back["message"] is None


@pytest.mark.parametrize("mic, message", [("denied", "Microphone access was denied"),
                                          ("missing", "No microphone was found")])
def test_a_microphone_problem_says_what_to_do(tmp_path, mic, message):
    server = ServerThread(FakeEngine())

    async def scenario(page: Page):
        snap = await wait_snapshot(page, "s.message", "a message")
        text = await page.wait_for("document.getElementById('message').innerText", WAIT_S)
        return snap, text

    try:
        snap, text = run_page(tmp_path, server.http + "/?autostart=1", scenario, mic=mic)
    finally:
        server.stop()
    assert snap["state"] == "failed" and not snap["running"]
    assert message in snap["message"]["text"] and message in text


def test_a_browser_whose_test_is_killed_closes(tmp_path):
    """A test run killed by a signal cannot close its Chromium: the browser gets SIGTERM
    when the process that started it is gone, and takes its own processes with it."""
    pid = start_and_kill(
        "import sys, time; from pathlib import Path; from tests.helpers.browser import Chromium; "
        "browser = Chromium(Path(sys.argv[1])); print(browser.proc.pid, flush=True); "
        "time.sleep(600)", str(tmp_path))
    assert gone_within(pid, 60), f"chromium (pid {pid}) outlived the process that started it"
    left = none_named_within(str(tmp_path / "profile"), 30)
    assert not left, f"chromium's processes outlived it: {left}"
