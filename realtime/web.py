"""The browser client's files and the one JSON document the page asks for.

``voxloop serve`` hands out a small web app at ``/``: ``index.html`` and the
scripts, styles and AudioWorklets under ``/static/``, read from the package's
``static/`` folder (no build step, nothing from a CDN). ``/client.json`` tells the
page which engine answers, whether the server wants an API key and whether the key
the page holds (sent as ``Authorization: Bearer KEY``) is the right one: a browser
cannot read why a websocket handshake failed, so the page asks here.

Every URL the page uses is relative, so the app also works mounted under a path
prefix behind a reverse proxy.
"""

from __future__ import annotations

import email.utils
import json
import re
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from voxloop.realtime.auth import authorized

STATIC_DIR = Path(__file__).with_name("static")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
                 ".png": "image/png", ".json": "application/json"}
# one flat folder of plain names: nothing else can be asked for (no "..", no subfolders)
_STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(html|js|css|svg|png)$")
# no inline script or style and nothing from another origin; the websocket is same-origin
CSP = ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'")


@dataclass(frozen=True)
class PageInfo:
    """What ``/client.json`` tells the page about this server."""

    engine: str
    api_key: str | None
    sessions: int
    max_sessions: int
    stopping: bool


def is_page_path(path: str) -> bool:
    """Whether ``path`` (query stripped, trailing ``/`` removed) belongs to the web app."""
    return path in ("", "/index.html", "/client.json") or path.startswith("/static/")


def page_response(path: str, request: Request, info: PageInfo) -> Response:
    """The answer to a GET of one of the app's paths (see :func:`is_page_path`)."""
    if path == "/client.json":
        return _client_json(request, info)
    name = "index.html" if path in ("", "/index.html") else path.removeprefix("/static/")
    body = _static_file(name)
    if body is None:
        return http_response(HTTPStatus.NOT_FOUND, f"no such file: {path}\n".encode(),
                             "text/plain; charset=utf-8")
    return http_response(HTTPStatus.OK, body, CONTENT_TYPES[Path(name).suffix])


def http_response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    """A complete HTTP response (the connection closes after it, as websockets does)."""
    headers = Headers([("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
                       ("Content-Length", str(len(body))), ("Content-Type", content_type),
                       ("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff"),
                       ("Referrer-Policy", "no-referrer")])
    if content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = CSP
    return Response(status.value, status.phrase, headers, body)


def _client_json(request: Request, info: PageInfo) -> Response:
    accepted = authorized(request, info.api_key) if info.api_key else None
    body = {"engine": info.engine, "realtime_path": "v1/realtime",
            "api_key_required": bool(info.api_key), "api_key_accepted": accepted,
            "sessions": info.sessions, "max_sessions": info.max_sessions,
            "stopping": info.stopping}
    return http_response(HTTPStatus.OK, (json.dumps(body) + "\n").encode(), "application/json")


def _static_file(name: str) -> bytes | None:
    """The bytes of ``static/NAME``; None for a name that is not served."""
    if not _STATIC_NAME.match(name):
        return None
    path = STATIC_DIR / name
    return path.read_bytes() if path.is_file() else None
