"""A fake OpenAI-compatible chat endpoint on loopback (``POST /v1/chat/completions``).

It answers every request with ``pieces``: as one JSON body, or with ``stream: true`` as
server-sent events, one chunk per piece. With ``hold_after`` set, the stream stops after
that many pieces until ``release`` is set (or ``hold_s`` passes), so a test can check
what the client did with the first pieces while the rest of the reply does not exist yet.
A JSON answer waits for ``release`` too: it is the whole reply. Requests are recorded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, pieces: tuple[str, ...], hold_after: int | None = None,
                 hold_s: float = 60.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pieces, self.hold_after, self.hold_s = pieces, hold_after, hold_s
        self.release = threading.Event()
        self.requests: list[dict] = []  # the JSON bodies, in order
        self.held_out = False  # a reply waited the whole hold_s for release
        self.stream_body: bytes | None = None  # replaces the streamed events when set
        self.ignores_stream = False  # answer stream requests with one JSON body

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def wait_release(self) -> None:
        if self.hold_after is not None and not self.release.wait(self.hold_s):
            self.held_out = True


class _Handler(BaseHTTPRequestHandler):
    server: FakeChatServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        if body.get("stream") and not self.server.ignores_stream:
            self._stream()
        else:
            self._whole()

    def _whole(self) -> None:
        self.server.wait_release()
        payload = json.dumps({"id": "x", "object": "chat.completion", "choices": [{
            "index": 0, "message": {"role": "assistant",
                                    "content": "".join(self.server.pieces)}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.server.stream_body is not None:
            self.wfile.write(self.server.stream_body)
            return
        self._event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        for n, piece in enumerate(self.server.pieces):
            if n == self.server.hold_after:
                self.server.wait_release()
            self._event({"choices": [{"index": 0, "delta": {"content": piece}}]})
        self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _event(self, chunk: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self.wfile.flush()

    def log_message(self, *args) -> None:
        pass


@contextmanager
def fake_chat_server(pieces: tuple[str, ...], **kwargs) -> Iterator[FakeChatServer]:
    server = FakeChatServer(pieces, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
