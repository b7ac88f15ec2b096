"""A session's configuration: parsed from ``session.update`` (GA or beta shape),
rendered back in the shape the client speaks.

Standard library only. Fields the API does not define are ignored, as OpenAI does, and
so are its hints the engines have no use for (temperature, max_output_tokens, the
transcription's language and prompt); values that this server cannot honour (another
audio format, tools, a voice it does not have, a speech speed, noise reduction, a
transcription session) or spells wrong (an eagerness but low / medium / high / auto) are
a clear error, and the update is not applied. Turn detection is ``server_vad`` (Silero
and a fixed silence), ``semantic_vad`` (Silero and a wait set by the end-of-turn model)
or null.

Voices: each engine speaks one voice (``Engine.voice``: ``joe``, the assistant voice the
teachers speak and the student was distilled from, or the cascade's ``--cascade-voice``
without its backend). OpenAI's voice names are not mapped onto it: ``alloy`` is refused,
so a client never believes it chose a voice it does not hear. Instructions are stored and
echoed; only an engine that follows them uses them (the session says so once otherwise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from voxloop.realtime.wire.protocol import WIRE_RATE_HZ, ProtocolError, pcm_format


@dataclass(frozen=True)
class TurnDetection:
    """``server_vad`` parameters, with the meaning they have in the OpenAI API.

    ``silence_duration_ms`` defaults to 300 rather than OpenAI's 500: the product
    answers about 300 ms after the user stops, and Silero's 32 ms windows end a
    turn reliably after ~300 ms of silence on conversational speech.
    """

    threshold: float = 0.5  # speech probability that starts speech (Silero)
    prefix_padding_ms: int = 300  # audio kept before the detected onset
    silence_duration_ms: int = 300  # silence that ends the turn
    create_response: bool = True  # answer as soon as the turn ends
    interrupt_response: bool = True  # speech onset cancels an active response

    def wire(self) -> dict:
        return {"type": "server_vad", **asdict(self)}


EAGERNESS = ("low", "medium", "high", "auto")  # as the OpenAI types spell them
TURN_DETECTION_TYPES = ("server_vad", "semantic_vad")
SERVER_VAD_ONLY = ("threshold", "prefix_padding_ms", "silence_duration_ms")
SEMANTIC_VAD_ONLY = ("eagerness",)


@dataclass(frozen=True)
class SemanticVad:
    """``semantic_vad`` parameters, with the meaning they have in the OpenAI API: the
    turn ends after a silence that the end-of-turn model sets, up to 8 / 4 / 2 s for
    low / medium / high eagerness (auto is medium)."""

    eagerness: str = "auto"
    create_response: bool = True
    interrupt_response: bool = True
    # audio kept before the onset (the OpenAI type has no field for it: server_vad's default)
    PREFIX_PADDING_MS = TurnDetection.prefix_padding_ms

    def wire(self) -> dict:
        return {"type": "semantic_vad", **asdict(self)}


def default_turn_detection(kind: str) -> TurnDetection | SemanticVad:
    """The turn detection a new session starts with (``voxloop serve --turn-detection``)."""
    return SemanticVad() if kind == "semantic_vad" else TurnDetection()


@dataclass(frozen=True)
class SessionConfig:
    model: str = "voxloop"
    instructions: str = ""  # an engine that follows instructions gets them with each turn
    voice: str = "joe"
    turn_detection: TurnDetection | SemanticVad | None = field(default_factory=TurnDetection)
    transcription_model: str | None = None  # None: no input transcription events

    def wire(self, session_id: str, beta: bool) -> dict:
        """The ``session`` object of ``session.created`` / ``session.updated``."""
        td = self.turn_detection.wire() if self.turn_detection else None
        tr = {"model": self.transcription_model} if self.transcription_model else None
        if beta:
            # beta's ``model`` only admits OpenAI's model names, so it is left out there
            return {"id": session_id, "object": "realtime.session",
                    "modalities": ["text", "audio"], "instructions": self.instructions,
                    "voice": self.voice, "input_audio_format": "pcm16",
                    "output_audio_format": "pcm16", "input_audio_transcription": tr,
                    "turn_detection": td, "tools": [], "tool_choice": "auto"}
        return {"type": "realtime", "id": session_id, "object": "realtime.session",
                "model": self.model, "output_modalities": ["audio"],
                "instructions": self.instructions,
                "audio": {"input": {"format": pcm_format(), "turn_detection": td,
                                    "transcription": tr},
                          "output": {"format": pcm_format(), "voice": self.voice}}}

    def updated(self, session: dict, event_id: str | None = None) -> SessionConfig:
        """Apply a ``session.update`` payload (GA or beta shape) and return the result."""
        kind = session.get("type", "realtime")
        if kind != "realtime":
            raise ProtocolError("unsupported_value", f"session.type {kind!r} is not supported: "
                                "this server runs 'realtime' sessions only (a 'transcription' "
                                "session never answers; turn off create_response for that)",
                                event_id, "session.type")
        ga_audio = _object(session, "audio", "session.audio", event_id)
        audio_in = _object(ga_audio, "input", "session.audio.input", event_id)
        audio_out = _object(ga_audio, "output", "session.audio.output", event_id)
        speed = audio_out.get("speed", session.get("speed"))
        if speed is not None and speed != 1:
            raise ProtocolError("unsupported_value", f"speech speed {speed!r} is not supported: "
                                "answers are spoken at the voice's own pace (1.0)", event_id,
                                "session.audio.output.speed")
        reduction = audio_in.get("noise_reduction", session.get("input_audio_noise_reduction"))
        if reduction is not None:
            raise ProtocolError("unsupported_value", "input noise reduction is not available "
                                "here: leave noise_reduction out or send null", event_id,
                                "session.audio.input.noise_reduction")
        changes: dict = {}
        if "instructions" in session:
            changes["instructions"] = _string(session["instructions"], "instructions", event_id)
        if "model" in session:
            changes["model"] = _string(session["model"], "model", event_id)
        voice = audio_out.get("voice", session.get("voice"))
        if voice is not None:
            changes["voice"] = _string(voice, "voice", event_id)
        for fmt, name in ((audio_in.get("format"), "audio.input.format"),
                          (audio_out.get("format"), "audio.output.format"),
                          (session.get("input_audio_format"), "input_audio_format"),
                          (session.get("output_audio_format"), "output_audio_format")):
            _check_format(fmt, name, event_id)
        _check_no_tools(session, "session", event_id)
        _check_audio_answers(session, "session", event_id)
        for key, source in (("turn_detection", audio_in), ("turn_detection", session)):
            if key in source:
                changes["turn_detection"] = _turn_detection(source[key], self, event_id)
                break
        for key, source in (("transcription", audio_in), ("input_audio_transcription", session)):
            if key in source:
                tr = source[key]
                if tr is not None:
                    _check_dict(tr, key, event_id)
                changes["transcription_model"] = (tr or {}).get("model") or (
                    "whisper-1" if tr is not None else None)
                break
        return replace(self, **changes)


@dataclass(frozen=True)
class ResponseOptions:
    """What one ``response.create`` sets for its response alone (None: the session's)."""

    instructions: str | None = None
    voice: str | None = None
    metadata: dict | None = None  # echoed in the response's events


def response_options(response: dict | None, event_id: str | None = None) -> ResponseOptions:
    """The ``response`` object of ``response.create`` (GA or beta shape). A response here
    always answers the conversation's last user message, into the conversation, in audio:
    ``conversation: "none"``, ``input`` and text-only modalities are refused."""
    response = response or {}
    _check_no_tools(response, "response", event_id)
    _check_audio_answers(response, "response", event_id)
    if response.get("conversation", "auto") not in ("auto", None):
        raise ProtocolError("unsupported_value", "out-of-band responses are not supported: "
                            "every response joins the conversation (send conversation 'auto' "
                            "or leave it out)", event_id, "response.conversation")
    if response.get("input") is not None:
        raise ProtocolError("unsupported_value", "response.input is not supported: a response "
                            "answers the conversation's last user message (add the question "
                            "with conversation.item.create first)", event_id, "response.input")
    metadata = response.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise ProtocolError("invalid_type", "response.metadata must be an object of strings",
                            event_id, "response.metadata")
    instructions = response.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise ProtocolError("invalid_type", "response.instructions must be a string", event_id,
                            "response.instructions")
    audio = response.get("audio")
    audio_out = audio.get("output") if isinstance(audio, dict) else None
    voice = audio_out.get("voice") if isinstance(audio_out, dict) else None
    voice = response.get("voice") if voice is None else voice  # beta: response.voice
    if voice is not None and not isinstance(voice, str):
        raise ProtocolError("invalid_type", "response.voice must be a string", event_id,
                            "response.voice")
    return ResponseOptions(instructions, voice, metadata)


def check_voice(voice: str | None, available: str, event_id: str | None, where: str,
                beta: bool) -> None:
    """Refuse any voice but the engine's own (see the module docstring: no mapping);
    ``where``: "session" or "response", whose voice field the error names as the client
    spells it."""
    param = f"{where}.voice" if beta else f"{where}.audio.output.voice"
    if voice is not None and voice != available:
        raise ProtocolError("unsupported_value", f"voice {voice[:40]!r} is not available: this "
                            f"server speaks with {available!r} only (OpenAI's voices, such as "
                            f"'alloy', are not installed here). Send {available!r} or leave "
                            "the voice out", event_id, param)


def _check_no_tools(source: dict, where: str, event_id) -> None:
    tools = source.get("tools")
    if tools is not None and tools != []:
        raise ProtocolError("unsupported_value", "tools are not supported: the engines here "
                            "cannot call functions, so the model would never use them. Send "
                            "tools: [] or leave them out", event_id, f"{where}.tools")


def _check_audio_answers(source: dict, where: str, event_id) -> None:
    modalities = source.get("output_modalities", source.get("modalities"))
    if modalities is not None and not isinstance(modalities, list):
        raise ProtocolError("invalid_type", "output_modalities must be a list such as "
                            "['audio']", event_id, f"{where}.output_modalities")
    if modalities is not None and "audio" not in modalities:
        raise ProtocolError("unsupported_value", "this server always answers in audio (with "
                            "a transcript): output_modalities must include 'audio'",
                            event_id, f"{where}.output_modalities")


def _turn_detection(value, current: SessionConfig, event_id) -> TurnDetection | SemanticVad | None:
    if value is None:
        return None
    _check_dict(value, "turn_detection", event_id)
    now = current.turn_detection
    kind = value.get("type", now.wire()["type"] if now else "server_vad")
    if kind not in TURN_DETECTION_TYPES:
        raise ProtocolError("unsupported_value", f"turn_detection type {kind!r} is not "
                            "supported; use 'server_vad', 'semantic_vad' or null", event_id,
                            "turn_detection.type")
    if value.get("idle_timeout_ms") is not None:
        raise ProtocolError("unsupported_value", "turn_detection.idle_timeout_ms is not "
                            "supported: no engine here can prompt a silent user. Leave it out "
                            "or send null", event_id, "turn_detection.idle_timeout_ms")
    other = "server_vad" if kind == "semantic_vad" else "semantic_vad"
    for name in SERVER_VAD_ONLY if kind == "semantic_vad" else SEMANTIC_VAD_ONLY:
        if name in value:  # not silently dropped: the client meant the other type's
            raise ProtocolError(
                "invalid_value", f"turn_detection.{name} is a {other} parameter, not "
                f"{kind}'s (send type {other!r} to set it)", event_id, f"turn_detection.{name}")
    if kind == "semantic_vad":
        eagerness = value.get("eagerness")
        if eagerness is not None and eagerness not in EAGERNESS:
            raise ProtocolError("invalid_value", "turn_detection.eagerness must be one of "
                                f"{', '.join(map(repr, EAGERNESS))}, got {eagerness!r}",
                                event_id, "turn_detection.eagerness")
        base = now if isinstance(now, SemanticVad) else SemanticVad()
        fields_ = (("create_response", bool, None, None), ("interrupt_response", bool, None,
                                                            None))
        changes = {"eagerness": eagerness} if eagerness is not None else {}
    else:
        base = now if isinstance(now, TurnDetection) else TurnDetection()
        fields_ = (("threshold", float, 0.0, 1.0), ("prefix_padding_ms", int, 0, 10_000),
                   ("silence_duration_ms", int, 0, 10_000), ("create_response", bool, None, None),
                   ("interrupt_response", bool, None, None))
        changes = {}
    for name, kind_, low, high in fields_:
        v = value.get(name)
        if v is None:
            continue
        ok = isinstance(v, bool) if kind_ is bool else (
            isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high
            and (kind_ is float or float(v).is_integer()))
        if not ok:
            want = "true or false" if kind_ is bool else f"a number from {low} to {high}"
            raise ProtocolError("invalid_value", f"turn_detection.{name} must be {want}, "
                                f"got {v!r}", event_id, f"turn_detection.{name}")
        changes[name] = kind_(v)
    return replace(base, **changes)


def _check_format(fmt, name: str, event_id) -> None:
    if fmt is None or fmt == "pcm16":
        return
    if isinstance(fmt, dict) and fmt.get("type", "audio/pcm") == "audio/pcm" and \
            fmt.get("rate", WIRE_RATE_HZ) == WIRE_RATE_HZ:
        return
    raise ProtocolError("unsupported_value", f"{name} {fmt!r} is not supported: use pcm16 "
                        f"at {WIRE_RATE_HZ} Hz ({{'type': 'audio/pcm', 'rate': 24000}})",
                        event_id, name)


def _object(source: dict, key: str, name: str, event_id) -> dict:
    """``source[key]``, an object (``{}`` when absent or null)."""
    value = source.get(key)
    if value is None:
        return {}
    _check_dict(value, name, event_id)
    return value


def _check_dict(value, name: str, event_id) -> None:
    if not isinstance(value, dict):
        raise ProtocolError("invalid_type", f"{name} must be an object", event_id, name)


def _string(value, name: str, event_id) -> str:
    if not isinstance(value, str):
        raise ProtocolError("invalid_type", f"session.{name} must be a string", event_id, name)
    return value
