"""The browser client's files and client.json as the server hands them out, and the API key
through the websocket subprotocol a browser uses (a real server on a scripted engine)."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request

import pytest
import websockets

from tests.helpers.server import servers_of
from tests.realtime.fakes import FakeEngine
from voxloop.realtime.web import STATIC_DIR

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def make():
    with servers_of(FakeEngine()) as make:
        yield make


@pytest.fixture(scope="module")
def open_server(make):
    return make()


@pytest.fixture(scope="module")
def keyed_server(make):
    return make(api_key=KEY)


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_page_and_every_file_it_names_are_served(open_server):
    status, headers, body = get(open_server.http + "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-cache"
    html = body.decode()
    assert "<script" not in html.replace('<script type="module" src="static/app.js">', "")
    named = set(re.findall(r'(?:href|src)="static/([^"]+)"', html))
    for js in STATIC_DIR.glob("*.js"):  # module imports and worklet modules
        named |= set(re.findall(r'from "\./([^"]+)"', js.read_text()))
        named |= set(re.findall(r'new URL\("([^"]+)", import\.meta\.url\)', js.read_text()))
    assert {"app.js", "style.css", "capture-worklet.js", "playback-worklet.js"} <= named
    for name in named:
        status, headers, body = get(f"{open_server.http}/static/{name}")
        assert status == 200 and body == (STATIC_DIR / name).read_bytes(), name
        expected = "text/javascript" if name.endswith(".js") else "text/css"
        assert headers["Content-Type"].startswith(expected)
    assert get(open_server.http + "/?autostart=1")[0] == 200


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/../server.py", "/static/..%2fweb.py",
                                  "/static/.hidden.js", "/static/sub/app.js", "/static/"])
def test_nothing_else_is_served(open_server, path):
    status, _, body = get(open_server.http + path)
    assert status == 404
    assert b"def " not in body


def test_unknown_paths_name_the_page(open_server):
    status, _, body = get(open_server.http + "/nowhere")
    assert status == 404 and b"the browser client at /" in body


def test_client_json_without_a_key(open_server):
    status, headers, body = get(open_server.http + "/client.json")
    info = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert info["engine"] == "fake" and info["realtime_path"] == "v1/realtime"
    assert info["api_key_required"] is False and info["api_key_accepted"] is None
    assert info["max_sessions"] == 16 and info["stopping"] is False


@pytest.mark.parametrize("offered, accepted", [(None, False), ("wrong", False), (KEY, True)])
def test_client_json_checks_the_key(keyed_server, offered, accepted):
    headers = {"Authorization": f"Bearer {offered}"} if offered else {}
    info = json.loads(get(keyed_server.http + "/client.json", headers)[2])
    assert info["api_key_required"] is True and info["api_key_accepted"] is accepted
    assert KEY not in json.dumps(info)


def test_the_page_needs_no_key(keyed_server):
    """The page itself is public: it holds no secret and asks for the key."""
    assert get(keyed_server.http + "/")[0] == 200


@pytest.mark.parametrize("protocols, status", [
    (["realtime", f"openai-insecure-api-key.{KEY}"], 101),
    ([f"openai-insecure-api-key.{KEY}", "realtime"], 101),
    (["realtime", "openai-insecure-api-key.wrong"], 401),
    (["realtime"], 401),
])
def test_the_key_as_a_browser_sends_it(keyed_server, protocols, status):
    """A browser offers the key as a subprotocol beside ``realtime``; the server answers
    with ``realtime`` alone (never echoing the key)."""
    async def run():
        try:
            ws = await websockets.connect(keyed_server.url, subprotocols=protocols)
        except websockets.InvalidStatus as exc:
            return exc.response.status_code, None
        chosen = ws.subprotocol
        await ws.close()
        return 101, chosen

    got, chosen = asyncio.run(run())
    assert got == status
    if status == 101:
        assert chosen == "realtime"
