"""The API key a request offers, and whether it is the server's.

A client sends ``Authorization: Bearer KEY``; a browser, which cannot set headers
on a websocket, offers the subprotocol ``openai-insecure-api-key.KEY`` beside
``realtime`` (as OpenAI's API accepts from browsers). The server answers with the
``realtime`` subprotocol only, never echoing the key.
"""

from __future__ import annotations

import hmac

from websockets.http11 import Request

from voxloop.realtime.wire.protocol import API_KEY_SUBPROTOCOL


def header_values(request: Request, name: str) -> str:
    """Every ``name`` header joined by commas (a client may send one on several lines, as
    RFC 6455 allows for subprotocols); '' if none."""
    return ", ".join(request.headers.get_all(name))


def offered_key(request: Request) -> str:
    """The key in the Authorization header, else in the key subprotocol; '' if none."""
    for header in request.headers.get_all("Authorization"):
        if header.lower().startswith("bearer ") and header[7:].strip():
            return header[7:].strip()
    for proto in header_values(request, "Sec-WebSocket-Protocol").split(","):
        if proto.strip().startswith(API_KEY_SUBPROTOCOL):
            return proto.strip()[len(API_KEY_SUBPROTOCOL):]
    return ""


def authorized(request: Request, key: str) -> bool:
    offered = offered_key(request)
    # headers arrive decoded with surrogateescape: a non-ASCII key is a wrong key, not a 500
    return bool(offered) and hmac.compare_digest(offered.encode("utf-8", "surrogateescape"),
                                                 key.encode())
