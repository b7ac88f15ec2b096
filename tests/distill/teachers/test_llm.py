"""The OpenAI-compatible LLM backend against a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from voxloop.distill.teachers.llm import LLMSettings, load_llm
from voxloop.errors import VoxloopError


class _ChatServer(ThreadingHTTPServer):
    """Answers /v1/chat/completions; remembers requests; ``status`` forces errors."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, dict, dict]] = []
        self.status = 200
        self.body: bytes | None = None


class _Handler(BaseHTTPRequestHandler):
    server: _ChatServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers["Content-Length"])
        payload = json.loads(self.rfile.read(length))
        self.server.requests.append((self.path, dict(self.headers), payload))
        last = payload["messages"][-1]["content"]
        body = self.server.body or json.dumps({
            "id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": f" You said: {last} "}}],
        }).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    srv = _ChatServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _llm(server, **kw):
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    return load_llm(LLMSettings(backend="openai", url=url, model="tiny-chat", timeout_s=5, **kw))


def test_reply_sends_history_model_and_key(server, monkeypatch):
    monkeypatch.setenv("VOXLOOP_LLM_API_KEY", "sk-test")
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert _llm(server).reply(history, "what is two plus two") == \
        "You said: what is two plus two"
    path, headers, payload = server.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    assert payload["model"] == "tiny-chat"
    assert [m["role"] for m in payload["messages"]] == ["system", "user", "assistant", "user"]


def test_no_key_sends_no_authorization(server, monkeypatch):
    monkeypatch.delenv("VOXLOOP_LLM_API_KEY", raising=False)
    _llm(server).reply([], "hello")
    assert "Authorization" not in server.requests[0][1]


def test_http_401_names_the_key_variable(server):
    server.status, server.body = 401, b'{"error": "bad key"}'
    with pytest.raises(VoxloopError, match=r"HTTP 401 \(is \$VOXLOOP_LLM_API_KEY set\?\)"):
        _llm(server).reply([], "hello")


def test_malformed_answer_is_a_clear_error(server):
    server.body = b'{"choices": []}'
    with pytest.raises(VoxloopError, match="no choices"):
        _llm(server).reply([], "hello")


def test_unreachable_endpoint_says_what_to_do():
    llm = load_llm(LLMSettings(backend="openai", url="http://127.0.0.1:9/v1", timeout_s=2))
    with pytest.raises(VoxloopError, match="cannot reach LLM endpoint.*--llm-url"):
        llm.reply([], "hello")
