"""The server's address as people write it, and what a failed connection says.

``--url`` takes the forms the OpenAI SDK does: the base ``ws://host:port`` or
``ws://host:port/v1`` as well as the full ``ws://host:port/v1/realtime``. A
refused handshake shows the HTTP status and the server's own reason (a wrong key,
a full server); only a connection nobody answers asks whether the server runs.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from voxloop.errors import VoxloopError

REALTIME_PATH = "/v1/realtime"
_BODY_CHARS = 300  # of the server's answer, in an error message
_HINTS = {401: " Pass the server's key with --api-key or $VOXLOOP_API_KEY.",
          403: " Pass the server's key with --api-key or $VOXLOOP_API_KEY.",
          404: f" The realtime websocket is at {REALTIME_PATH}."}


def realtime_url(url: str) -> str:
    """The full websocket URL of ``url`` (``ws://h:p`` and ``ws://h:p/v1`` get
    ``/v1/realtime``); a one-line error for http://, a bad port or no host."""
    parts = urlsplit(url.strip())
    if parts.scheme in ("http", "https"):
        scheme = "ws" if parts.scheme == "http" else "wss"
        raise VoxloopError(f"--url {url}: the realtime API is a websocket; use "
                           f"{scheme}://{parts.netloc}{REALTIME_PATH} ({parts.scheme}:// serves "
                           "only the web pages, /healthz and /metrics)")
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise VoxloopError(f"--url {url!r}: expected ws://HOST:PORT, ws://HOST:PORT/v1 or "
                           f"ws://HOST:PORT{REALTIME_PATH}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise VoxloopError(f"--url {url}: the port must be a number from 1 to 65535")
    path = parts.path.rstrip("/")
    if path in ("", "/v1"):
        path = REALTIME_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def refused_status(exc: BaseException) -> int | None:
    """The HTTP status of a refused websocket handshake, else None."""
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def connect_error(url: str, exc: BaseException) -> VoxloopError:
    """What to tell the user when connecting to ``url`` failed with ``exc``."""
    status = refused_status(exc)
    if status is not None:
        response = exc.response
        body = (response.body or b"").decode(errors="replace").strip()[:_BODY_CHARS]
        reason = f": {body}" if body else ""
        return VoxloopError(f"{url} refused the connection: HTTP {status} "
                            f"{response.reason_phrase}{reason}.{_HINTS.get(status, '')}")
    if isinstance(exc, TimeoutError):
        return VoxloopError(f"{url} did not finish the websocket handshake in time: is it a "
                            "voxloop (or OpenAI Realtime) server?")
    if isinstance(exc, OSError):
        return VoxloopError(f"cannot connect to {url}: {exc.strerror or exc}. "
                            "Is `voxloop serve` running there?")
    return VoxloopError(f"cannot connect to {url}: {exc}")
