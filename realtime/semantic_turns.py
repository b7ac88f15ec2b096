"""``semantic_vad``: Silero finds the pauses, the end-of-turn model sets how long to wait.

:class:`SemanticTurnDetector` is a :class:`TurnDetector` (the same events, the same
clock) whose silence is not fixed: while the user speaks it streams the turn's audio
(from the prefix padding on) into the end-of-turn model's semantic tokenizer; when a
pause starts it asks P(finished) and waits ``wait_ms(P, eagerness)``: ~0 for a clearly
finished question, up to the eagerness's cap (8 / 4 / 2 s) for a clearly unfinished one.
It asks in ``decide``, after ``speech_paused`` is out, so the session starts the engine's
tentative answer first and the two run at once on two cores (the answer, not the wait, is
what a finished question waits for).
Speech that resumes within the wait cancels it (``speech_resumed``), as under server_vad,
so the speculative answer started at the pause is rolled back and released only when the
turn really ends.
Speech that starts within ``RESUMES_WITHIN_MS`` of the speech's end after the turn did end
(a pause the model misjudged, the answer just begun) goes on with that turn
(``TurnEvent.resumes``): the model hears it after the turn's words, so "if I mix blue and
yellow ... what do I get" is judged as the whole question, not as "what do I get", and the
session answers the whole turn.

The model (Whisper tiny.en's encoder + the pooler and VQ + its small heads, ~10 ms of CPU per
second of audio) is loaded once per process, on first use, in a worker thread (``push`` runs
there); every session streams through the same weights with its own state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import replace

import numpy as np

from voxloop.errors import VoxloopError
from voxloop.realtime.turns import WINDOW_MS, TurnDetector
from voxloop.realtime.vad import SileroVAD
from voxloop.realtime.wire.session_config import SemanticVad, TurnDetection

log = logging.getLogger("voxloop.realtime")
PREFIX_PADDING_MS = SemanticVad.PREFIX_PADDING_MS  # audio before the onset the model hears
RESUMES_WITHIN_MS = 1500  # the longest pause the end-of-turn data put inside a question
_models: dict = {}
_models_lock = threading.Lock()


def end_of_turn_model(name: str | None = None):
    """The end-of-turn model ``name`` (default: the bundled one), loaded once."""
    from voxloop.codecs.end_of_turn import DEFAULT_END_OF_TURN, load_end_of_turn

    name = name or DEFAULT_END_OF_TURN
    with _models_lock:
        if name not in _models:
            _models[name] = load_end_of_turn(name)
        return _models[name]


async def prepare_turn_detection(settings, executor, event_id: str | None = None) -> None:
    """Load what a detector for ``settings`` needs (semantic_vad's model, once per server)
    off the event loop, before a session switches to it: a model that cannot load is an
    ``error`` event then, and the session's turn detection stays as it was."""
    from voxloop.realtime.wire.protocol import ProtocolError

    if not isinstance(settings, SemanticVad):
        return
    try:
        await asyncio.get_running_loop().run_in_executor(executor, end_of_turn_model)
    except VoxloopError as e:
        raise ProtocolError("semantic_vad_unavailable", f"semantic_vad's end-of-turn model did "
                            f"not load ({e}); turn detection is as it was", event_id,
                            "session.turn_detection", "server_error") from e


def new_turn_detector(settings: TurnDetection | SemanticVad | None, start_ms: int = 0
                      ) -> TurnDetector | None:
    """The detector a session's turn detection asks for (None: turn detection off)."""
    if settings is None:
        return None
    if isinstance(settings, SemanticVad):
        return SemanticTurnDetector(settings, start_ms=start_ms)
    return TurnDetector(settings, start_ms=start_ms)


class SemanticTurnDetector(TurnDetector):
    DECIDES_LATER = True  # asking the model costs 20-30 ms: a tentative answer starts first
    QUICK_TURNS = True  # a clearly finished question ends ~100 ms after the speech
    RESUMES_WITHIN_MS = RESUMES_WITHIN_MS

    def __init__(self, semantic: SemanticVad, vad: SileroVAD | None = None,
                 start_ms: int = 0, model=None) -> None:
        self.semantic = semantic
        self._model = model  # None: the bundled model, loaded on the first window (the
        #                      session loads it first, off the event loop)
        silero = TurnDetection(prefix_padding_ms=PREFIX_PADDING_MS,
                               create_response=semantic.create_response,
                               interrupt_response=semantic.interrupt_response)
        super().__init__(silero, vad, start_ms)

    def retune(self, settings) -> bool:
        if not isinstance(settings, SemanticVad):
            return False
        self.semantic = settings
        self.settings = replace(self.settings, create_response=settings.create_response,
                                interrupt_response=settings.interrupt_response)
        return True

    def reset(self, start_ms: int = 0) -> None:
        super().reset(start_ms)
        self._recent: list[np.ndarray] = []  # windows before an onset (the prefix padding)
        self._stream = None  # the model's stream over the turn being spoken
        self._ended_stream = None  # the last ended turn's, while speech may still resume it
        self.last_p_finished: float | None = None

    def reset_speech(self) -> None:
        super().reset_speech()
        self._stream = self._ended_stream = None

    @property
    def model(self):
        if self._model is None:
            self._model = end_of_turn_model()
        return self._model

    def _step(self, window: np.ndarray):
        was_speaking = self.speaking
        if was_speaking and self._stream is not None:
            self._feed([window])
        elif not was_speaking:
            _ = self.model  # loaded before an onset changes any state: a failure leaves none
        event = super()._step(window)
        if not was_speaking:
            # the prefix padding, or, while the last turn may still go on, the whole pause
            # (a turn resumed is heard with the silence in it, as the paused examples are)
            keep = (RESUMES_WITHIN_MS if self._ended_stream is not None else 0) \
                + PREFIX_PADDING_MS
            self._recent = (self._recent + [window])[-(keep // WINDOW_MS + 1):]
            if event is not None and event.kind == "speech_started":
                resumed = self._ended_stream if event.resumes else None
                self._stream = resumed if resumed is not None else self.model.init_state()
                self._ended_stream = None
                prefix = PREFIX_PADDING_MS // WINDOW_MS + 1
                self._feed(self._recent if resumed is not None else self._recent[-prefix:])
                self._recent = []
        return event

    def _turn_ended(self) -> None:
        self._stream, self._ended_stream = None, self._stream
        self._recent = []  # from here: the pause after it

    def _feed(self, windows: list[np.ndarray]) -> None:
        import torch

        audio = np.concatenate(windows).astype(np.float32)
        self.model.push(self._stream, torch.from_numpy(audio))

    def _pause_wait_ms(self) -> int:
        from voxloop.codecs.end_of_turn import wait_ms

        if self._stream is None:  # never heard this turn's start: fall back to the cap
            return wait_ms(0.0, self.semantic.eagerness)
        p = self.last_p_finished = self.model.probability(self._stream)
        wait = wait_ms(p, self.semantic.eagerness)
        log.debug("event=end_of_turn p_finished=%.3f eagerness=%s wait_ms=%d", p,
                  self.semantic.eagerness, wait)
        return wait
