"""Turn detection compared in one run: latency on complete questions, false cut-ins on
paused ones, for every setting (``semantic_vad:EAGERNESS``, ``server_vad:SILENCE_MS``).

One ``voxloop serve`` (the first of ``--engines``), one session per setting, set by
``session.update``. Every setting hears the same held-out questions (the plan's held-out
voices and phrasings), at real-time pace in ``chunk_ms`` appends, each after
``BETWEEN_QUESTIONS_MS`` of silence (sent at once):

- ``complete``: a question, then silence. ``latency_ms``: arrival of the first answer
  audio - the end of the speech (as the engine bench); ``decided_ms``: the end of the turn
  as the server stamps it (``speech_stopped.audio_end_ms``) - the end of the speech, in
  audio time (the detector's wait + Silero's lag, free of CPU load). The answer is
  cancelled once its first audio came (only the start is measured).
- ``paused``: the same kind of question with 300-1,500 ms of silence at a word boundary
  (seeded: the same cuts and pauses for every setting), in two ``PAUSED_STYLES``, the same
  questions, cuts and pauses in each: ``one_breath``, the whole question as the voice
  says it, cut where the first part's words end (what a person who stops to think
  leaves: a sentence still going), and ``apart``, each part synthesized alone (the first
  ends as a finished sentence would; only the words say it is not). A false cut-in: the
  server ended the turn inside the pause (``speech_stopped.audio_end_ms`` before the
  second part's onset), so it would have answered the first half. A turn end stamped
  before a question's first sample is the question before's, late (ended at a dip in its
  last word, gone on, ended again): skipped, its response cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import zlib
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache, partial

import numpy as np

from voxloop.bench.turns_report import format_ms, plot, summarize
from voxloop.client.files import append_event, paced_chunks, speech_end_sample
from voxloop.distill.data.turn_data import PAUSE_MS  # the pauses the end-of-turn model learned
from voxloop.errors import VoxloopError
from voxloop.realtime.wire.protocol import WIRE_RATE_HZ, ga_type
from voxloop.realtime.wire.session_config import EAGERNESS as SEMANTIC_EAGERNESS

PAUSED_STYLES = ("one_breath", "apart")
CUT_INSIDE_MS = 200  # a turn end this far before the speech's end cut the question short
# silence before every question, sent at once: longer than semantic_vad's resume window, so
# no question goes on with the one before (a user hears an answer before asking again)
BETWEEN_QUESTIONS_MS = 2500


@dataclass
class DetectionRecord:
    setting: str
    kind: str  # complete | paused
    question: str
    voice: str
    pause_ms: int = 0
    style: str = ""  # paused: one_breath | apart (PAUSED_STYLES)
    latency_ms: float | None = None
    decided_ms: float | None = None
    cut_in: bool | None = None
    status: str = ""
    late_turn_ends: int = 0  # the question before's, skipped (module docstring)


def turn_detection_event(setting: str) -> dict:
    """``semantic_vad:medium`` / ``server_vad:300`` -> the ``turn_detection`` object."""
    kind, _, value = setting.partition(":")
    if kind == "semantic_vad" and value in SEMANTIC_EAGERNESS:
        return {"type": "semantic_vad", "eagerness": value}
    if kind == "server_vad" and value.isdigit():
        return {"type": "server_vad", "silence_duration_ms": int(value)}
    raise VoxloopError(f"turn detection setting {setting!r}: use semantic_vad:EAGERNESS "
                       f"({'|'.join(SEMANTIC_EAGERNESS)}) or server_vad:SILENCE_MS")


@asynccontextmanager
async def bench_session(session, turn_detection: dict):
    """``session.ws``: a websocket to ``session.url`` whose session has set
    ``turn_detection``, with ``session._read()`` reading its events until the block ends."""
    import websockets

    async with websockets.connect(session.url, max_size=2**24) as ws:
        session.ws = ws
        reader = asyncio.create_task(session._read())
        try:
            await ws.send(json.dumps({"type": "session.update", "session": {
                "type": "realtime", "audio": {"input": {"turn_detection": turn_detection}}}}))
            yield ws
        finally:
            reader.cancel()


def check_styles(styles: tuple[str, ...]) -> None:
    unknown = [style for style in styles if style not in PAUSED_STYLES]
    if unknown:
        raise VoxloopError(f"paused style(s) {', '.join(unknown)}: use "
                           f"{' and / or '.join(PAUSED_STYLES)}")


def paused_questions(count: int, seed: int = 0, styles: tuple[str, ...] = PAUSED_STYLES
                     ) -> list[tuple[str, str, int, str, np.ndarray, int]]:
    """``(text, voice, pause_ms, style, audio [T] at 24 kHz, second part's first sample)``
    of ``count`` held-out questions of at least three words, each cut at a seeded word
    boundary, in every style of ``styles`` (a ``one_breath`` cut that finds no boundary
    falls back to ``apart`` and says so)."""
    from voxloop.bench.questions import held_out_items, spoken
    from voxloop.distill.data.plan import SynthSettings, plan
    from voxloop.distill.data.turn_data import TurnText, spoken_segments

    @lru_cache(maxsize=8)  # a question's parts are said in both styles: synthesize once
    def speech_of(phrase: str, voice: str) -> np.ndarray:
        audio = spoken(phrase, voice)
        return audio[:speech_end_sample(audio)]

    check_styles(styles)
    out = []
    questions = [(i.prompt_text, i.user_voice) for i in held_out_items(plan(SynthSettings()),
                                                                       4 * count)
                 if len(i.prompt_text.split()) >= 3]
    for text, voice in questions[:count]:
        words = text.split()
        rng = np.random.default_rng(zlib.crc32(f"{seed}:{text}:{voice}".encode()))
        cut = int(rng.integers(1, len(words)))
        pause_ms = int(rng.integers(*PAUSE_MS))
        head, tail = " ".join(words[:cut]).rstrip(","), " ".join(words[cut:])
        say = partial(speech_of, voice=voice)
        gap = np.zeros(pause_ms * WIRE_RATE_HZ // 1000, np.float32)
        for style in styles:
            turn = TurnText("paused", (head, tail), pause_ms, one_breath=style == "one_breath")
            pieces, turn = spoken_segments(turn, say, WIRE_RATE_HZ)
            style = "one_breath" if turn.one_breath else "apart"
            out.append((f"{head} ... {tail}", voice, pause_ms, style,
                        np.concatenate([pieces[0], gap, pieces[1]]), len(pieces[0]) + len(gap)))
    return out


class _Detector:
    """One session: one setting, every question in turn."""

    def __init__(self, url: str, setting: str, chunk_ms: int, timeout_s: float) -> None:
        self.url, self.setting = url, setting
        self.chunk_ms, self.timeout_s = chunk_ms, timeout_s
        self.sent_samples = 0  # the session's input clock, in samples at 24 kHz
        self.events: asyncio.Queue = asyncio.Queue()

    async def run(self, complete, paused) -> list[DetectionRecord]:
        records = []
        async with bench_session(self, turn_detection_event(self.setting)):
            for text, voice, audio in complete:
                await self._between_questions()
                records.append(await self._complete(text, voice, audio))
            for text, voice, pause_ms, style, audio, onset in paused:
                await self._between_questions()
                records.append(await self._paused(text, voice, pause_ms, style, audio, onset))
        return records

    async def _complete(self, text, voice, audio) -> DetectionRecord:
        record = DetectionRecord(self.setting, "complete", text, voice)
        start = self.sent_samples
        end = speech_end_sample(audio)
        end_ms = (start + end) * 1000 / WIRE_RATE_HZ
        marks: dict = {}
        streamer = asyncio.create_task(self._speak(audio, start + end, marks))
        try:
            while True:
                stopped = await self._next_stop(record, start)
                record.decided_ms = stopped["audio_end_ms"] - end_ms
                if record.decided_ms > -CUT_INSIDE_MS:
                    break
                record.cut_in = True  # the turn ended inside the question: not its answer
                await self._cancel_its_response()
            first = await self._until("response.output_audio.delta")
            # a turn ended just before the speech's end (within CUT_INSIDE_MS) can answer
            # before the streamer sends it: latency below 0
            await self._spoken(streamer, marks)
            record.latency_ms = 1000 * (first["_t"] - marks["speech_end_s"])
            record.status = await self._cancel(first["response_id"])
        except TimeoutError:
            record.status = "timeout"
        finally:
            streamer.cancel()
        return record

    async def _paused(self, text, voice, pause_ms, style, audio, onset) -> DetectionRecord:
        record = DetectionRecord(self.setting, "paused", text, voice, pause_ms, style)
        start = self.sent_samples
        onset_ms = (start + onset) * 1000 / WIRE_RATE_HZ
        end = speech_end_sample(audio)
        marks: dict = {}
        streamer = asyncio.create_task(self._speak(audio, start + end, marks))
        record.cut_in, ended = False, False
        try:
            while True:  # every turn end until the one after the whole question
                stopped = await self._next_stop(record, start)
                ended = stopped["audio_end_ms"] >= onset_ms
                status = await self._cancel_its_response()
                if not ended:
                    record.cut_in = True
                    continue
                record.status = status
                break
            await self._spoken(streamer, marks)  # the whole question, as a user would
        except TimeoutError:
            record.status = "timeout"
            if not (record.cut_in or ended):  # no turn end at all: not one kept whole
                record.cut_in = None
        finally:
            streamer.cancel()
        return record

    async def _next_stop(self, record: DetectionRecord, start_sample: int) -> dict:
        """The next ``speech_stopped`` of the question whose audio starts at ``start_sample``
        (input clock); one of the question before's (module docstring) has its response
        cancelled and is skipped, and counted in ``record.late_turn_ends``."""
        start_ms = start_sample * 1000 / WIRE_RATE_HZ
        while True:
            stopped = await self._until("input_audio_buffer.speech_stopped")
            if stopped["audio_end_ms"] >= start_ms:
                return stopped
            record.late_turn_ends += 1
            await self._cancel_its_response()

    @staticmethod
    async def _spoken(streamer: asyncio.Task, marks: dict) -> None:
        """Until the streamer has sent the speech's end (``marks["speech_end_s"]``)."""
        while "speech_end_s" not in marks and not streamer.done():
            await asyncio.sleep(0.005)
        if "speech_end_s" not in marks:
            streamer.result()  # the streamer failed: its own error, not a KeyError

    async def _cancel_its_response(self) -> str:
        """Cancel the response a turn end just created; its final status."""
        return await self._cancel((await self._until("response.created"))["response"]["id"])

    async def _cancel(self, response_id: str) -> str:
        await self.ws.send(json.dumps({"type": "response.cancel", "response_id": response_id}))
        while True:
            done = await self._until("response.done")
            if done["response"]["id"] == response_id:
                return done["response"]["status"]

    async def _between_questions(self) -> None:
        step = self.chunk_ms * WIRE_RATE_HZ // 1000
        for _ in range(BETWEEN_QUESTIONS_MS // self.chunk_ms):
            await self.ws.send(json.dumps(append_event(np.zeros(step, np.float32))))
            self.sent_samples += step

    async def _speak(self, audio: np.ndarray, end_sample: int, marks: dict) -> None:
        """The audio, then silence, at real-time pace; marks the speech end's send time."""
        tail = np.zeros(int(self.timeout_s * WIRE_RATE_HZ), np.float32)
        async for _, chunk in paced_chunks(np.concatenate([audio, tail]), self.chunk_ms):
            await self.ws.send(json.dumps(append_event(chunk)))
            self.sent_samples += len(chunk)
            if "speech_end_s" not in marks and self.sent_samples >= end_sample:
                marks["speech_end_s"] = time.perf_counter() - (
                    self.sent_samples - end_sample) / WIRE_RATE_HZ

    async def _until(self, kind: str) -> dict:
        async with asyncio.timeout(self.timeout_s):
            while True:
                event = await self.events.get()
                if event["type"] == "error" and event["error"].get("code") != \
                        "response_cancel_not_active":
                    raise VoxloopError(f"{self.setting}: server error {event['error']}")
                if event["type"] == kind:
                    return event

    async def _read(self) -> None:
        async for message in self.ws:
            event = json.loads(message)
            event["type"], event["_t"] = ga_type(event["type"]), time.perf_counter()
            if event["type"] == "response.output_audio.delta":
                event["delta"] = len(base64.b64decode(event["delta"]))  # keep it small
            self.events.put_nowait(event)


def run_turn_bench(url: str, settings: tuple[str, ...], complete, paused, chunk_ms: int,
                   timeout_s: float, progress=print) -> list[DetectionRecord]:
    """Every setting in turn on the server at ``url``; one record per question."""
    for setting in settings:
        turn_detection_event(setting)  # a bad setting fails before anything runs
    records: list[DetectionRecord] = []
    for setting in settings:
        t0 = time.perf_counter()
        mine = asyncio.run(_Detector(url, setting, chunk_ms, timeout_s).run(complete, paused))
        records += mine
        row = summarize([asdict(r) for r in mine])[setting]
        cuts = ", ".join(f"{style} {c['cut_ins']}/{c['paused']}"
                         for style, c in row["by_style"].items())
        progress(f"{setting:>20}: latency p50 {format_ms(row['latency_p50_ms'])} ms, false cut-ins "
                 f"{cuts} ({time.perf_counter() - t0:.0f} s)")
    return records


def run_turn_detection_bench(settings, progress=print) -> dict:
    """``voxloop bench latency --turn-detections ...``: one server (the first engine), every
    setting in one run; writes turn-detection.json / .png in ``settings.out``."""
    from pathlib import Path

    from voxloop.bench.latency import ENGINE_ARGS
    from voxloop.bench.questions import held_out_questions
    from voxloop.realtime.server_process import ServerProcess

    engine = settings.engines[0]
    if engine not in ENGINE_ARGS:
        raise VoxloopError(f"unknown engine {engine!r}; choose from {list(ENGINE_ARGS)}")
    for setting in settings.turn_detections:
        turn_detection_event(setting)
    check_styles(settings.paused_styles)
    complete = held_out_questions(settings.turns)
    paused = paused_questions(settings.paused, styles=settings.paused_styles)
    with ServerProcess([*ENGINE_ARGS[engine], "--max-sessions", "2"]) as server:
        records = run_turn_bench(server.url, settings.turn_detections, complete, paused,
                                 settings.chunk_ms, settings.turn_timeout_s, progress)
    rows = [asdict(r) for r in records]
    summary = summarize(rows)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "turn-detection.json").write_text(json.dumps(
        {"engine": engine, "settings": asdict(settings), "summary": summary,
         "turns": rows}, indent=1) + "\n")
    plot(summary, out / "turn-detection.png")
    return summary
