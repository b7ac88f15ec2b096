"""Conversation items: what was said, by whom, as audio and text.

Audio is kept as pcm16 bytes at 24 kHz. An assistant item also remembers when
each transcript piece started in its audio, so ``conversation.item.truncate``
can cut the transcript where the listener stopped hearing it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from voxloop.realtime.wire.protocol import BYTES_PER_MS, ProtocolError, audio_ms, decode_audio


@dataclass
class Item:
    id: str
    role: str  # "user" | "assistant" | "system"
    audio: bytearray | None = None  # pcm16 24 kHz, or None for a text message
    text: str = ""  # the transcript of the audio, or the message text
    status: str = "completed"
    pieces: list[tuple[int, str]] = field(default_factory=list)  # (audio byte offset, text)

    @property
    def audio_ms(self) -> int:
        return audio_ms(len(self.audio)) if self.audio is not None else 0

    def add_piece(self, text: str) -> None:
        """Record ``text`` as starting at the current end of the audio."""
        self.pieces.append((len(self.audio or b""), text))
        self.text += text

    def truncate(self, audio_end_ms: int, event_id: str | None) -> None:
        """Cut the audio at ``audio_end_ms`` and the transcript at the matching word."""
        if self.role != "assistant" or self.audio is None:
            raise ProtocolError("invalid_value", "only assistant audio items can be truncated",
                                event_id, "item_id")
        if audio_end_ms > self.audio_ms:
            raise ProtocolError("invalid_value", f"audio_end_ms {audio_end_ms} is past the end of "
                                f"the item's audio ({self.audio_ms} ms)", event_id, "audio_end_ms")
        cut = audio_end_ms * BYTES_PER_MS
        kept_pieces = []
        for i, (start, piece) in enumerate(self.pieces):
            if start >= cut:
                break
            end = self.pieces[i + 1][0] if i + 1 < len(self.pieces) else len(self.audio)
            if end > cut:  # partly heard: keep the share of words that was played (as the
                # piece's text too, so a later, earlier cut measures against what is left)
                words = piece.split()
                kept = int(len(words) * (cut - start) / max(1, end - start))
                piece = (" " if piece.startswith(" ") else "") + " ".join(words[:kept])
            kept_pieces.append((start, piece))
        del self.audio[cut:]
        self.pieces = kept_pieces
        self.text = "".join(piece for _, piece in kept_pieces).rstrip()

    def history_message(self) -> dict | None:
        return {"role": self.role, "content": self.text} if self.text else None

    def wire(self, beta: bool, with_audio: bool = False) -> dict:
        """The item as the API shows it; its audio (base64 pcm16) only ``with_audio``
        (``conversation.item.retrieve``): the other events would echo it for nothing."""
        if self.role == "assistant":
            kind = "audio" if beta else "output_audio"
            content = [{"type": kind, "transcript": self.text}] if self.audio is not None else \
                [{"type": "text" if beta else "output_text", "text": self.text}]
        elif self.audio is not None:
            content = [{"type": "input_audio", "transcript": self.text or None}]
        else:
            content = [{"type": "input_text", "text": self.text}]
        if with_audio and self.audio is not None:
            content[0]["audio"] = base64.b64encode(bytes(self.audio)).decode("ascii")
        return {"id": self.id, "object": "realtime.item", "type": "message", "role": self.role,
                "status": self.status, "content": content}


def item_from_client(item: dict, item_id: str, event_id: str | None) -> Item:
    """A conversation item sent by ``conversation.item.create``."""
    if item.get("type", "message") != "message":
        raise ProtocolError("unsupported_value", f"item type {item.get('type')!r} is not "
                            "supported; only 'message' items", event_id, "item.type")
    role = item.get("role")
    if role not in ("user", "assistant", "system"):
        raise ProtocolError("invalid_value", "item.role must be 'user', 'assistant' or 'system'",
                            event_id, "item.role")
    content = item.get("content")
    if not isinstance(content, list) or not content or not all(isinstance(c, dict)
                                                               for c in content):
        raise ProtocolError("invalid_value", "item.content must be a non-empty list of objects",
                            event_id, "item.content")
    out = Item(item_id, role)
    for part in content:
        kind = part.get("type")
        if kind in ("input_text", "text", "output_text"):
            if not isinstance(part.get("text"), str):
                raise ProtocolError("invalid_type", f"a {kind} part needs a string 'text'",
                                    event_id, "item.content.text")
            out.text += part["text"]
        elif kind == "input_audio" and role == "user":
            if not isinstance(part.get("audio"), str):
                raise ProtocolError("invalid_type", "an input_audio part needs base64 'audio'",
                                    event_id, "item.content.audio")
            out.audio = bytearray(decode_audio(part["audio"], event_id, "item.content.audio"))
        else:
            raise ProtocolError("unsupported_value", f"content type {kind!r} is not supported "
                                f"in a {role} item", event_id, "item.content.type")
    return out
