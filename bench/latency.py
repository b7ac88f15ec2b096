"""Voice-to-voice latency as a client sees it, for several engines and session counts.

For each engine a ``voxloop serve`` process is started; for each session count
``n``, ``n`` clients connect at once and each speaks held-out questions (voices
and phrasings the student never trained on) at real-time pace in
``chunk_ms`` appends, followed by silence, exactly as a microphone would.
Measured per turn:

- ``latency_ms``: arrival of the first answer audio - the end of the user's
  speech (the last loud sample of the clean utterance, known to the sender);
- ``engine_ms``: arrival of ``speech_stopped`` (the end-of-turn decision) ->
  arrival of the first answer audio;
- ``underruns``: a simulated player starts ``jitter_ms`` after the first answer
  audio and plays in real time; each time it runs dry before ``response.done`` is
  one underrun;
- ``barge_in_ms`` (one more turn per session, ``kind="barge_in"``: a question with a
  long answer, talked over half a second after the answer starts arriving): onset of
  the interrupting speech -> arrival of the answer's last delta (0 if none came after).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from voxloop.bench.questions import held_out_questions, spoken
from voxloop.bench.turns import bench_session, turn_detection_event
from voxloop.client.files import append_event, paced_chunks, speech_end_sample, talked_over
from voxloop.errors import VoxloopError
from voxloop.realtime.wire.protocol import BYTES_PER_MS, WIRE_RATE_HZ, ga_type

ENGINE_ARGS = {
    "native": ["--engine", "native"],
    "native-nospec": ["--engine", "native", "--no-native-speculative"],
    # the codec's own SEANet decoder instead of the assistant's: decoders side by side
    "native-seanet": ["--engine", "native", "--native-decoder", "seanet"],
    # answer words one per model call, no drafts of the answers the student knows
    "native-nodrafts": ["--engine", "native", "--native-draft-words", "0"],
    # the student's own words only: no heard-intents head (its overrides, its first drafts)
    "native-nohead": ["--engine", "native", "--no-native-heard-intents"],
    # the default hears the first session's turns on 4 alignments of the ear's tokens (the
    # majority's words said) while at most two sessions are open, all others on one;
    # these two hear every turn on one, and on four
    "native-one-ear": ["--engine", "native", "--native-votes", "1"],
    "native-votes-all": ["--engine", "native", "--native-votes", "4",
                         "--native-voting-sessions", "0", "--native-votes-up-to-sessions", "0"],
    "native-votes-quick": ["--engine", "native", "--native-votes-quick-turns"],
    "cascade": ["--engine", "cascade"],
    "hybrid": ["--engine", "hybrid"],  # the default: the student for speech
    # the cascade asked only where the student refuses, not where it is unsure
    "hybrid-refusals-only": ["--engine", "hybrid", "--hybrid-min-words-logprob", "none"],
}
# the barge-in turn: a question with a long answer, then talking over it
LONG_ANSWER = ("what can you do", "flite:rms")
INTERRUPTION = ("wait, stop please, I have another question", "festival:slt-hts")


def session_turn_detection(settings) -> dict:
    """The ``turn_detection`` every bench session sets (``--turn-detection``)."""
    if settings.turn_detection == "server_vad":
        return {"type": "server_vad", "threshold": settings.threshold,
                "silence_duration_ms": settings.silence_duration_ms}
    if not settings.turn_detection.startswith("semantic_vad:"):
        raise VoxloopError(f"--turn-detection {settings.turn_detection!r}: use server_vad or "
                           "semantic_vad:EAGERNESS")
    return turn_detection_event(settings.turn_detection)


def check_counts(settings) -> None:
    """Counts a bench cannot run with (``LatencyBenchSettings``): a clear error before any
    server starts. The engine grid needs questions; the turn detection comparison needs
    complete or paused ones."""
    if settings.chunk_ms < 1 or settings.turns < 0 or settings.paused < 0:
        raise VoxloopError(f"--chunk-ms must be at least 1 and --turns and --paused at least "
                           f"0, not {settings.chunk_ms}, {settings.turns} and {settings.paused}")
    if settings.turn_detections and settings.turns + settings.paused == 0:
        raise VoxloopError("--turns 0 --paused 0 leaves the turn detection comparison no "
                           "questions: give complete (--turns) or paused (--paused) ones")
    if not settings.turn_detections and settings.turns < 1:
        raise VoxloopError(f"--turns {settings.turns}: each session needs at least 1 question")
    if not settings.sessions or min(settings.sessions) < 1:
        raise VoxloopError(f"--sessions {' '.join(map(str, settings.sessions))}: give session "
                           "counts of at least 1")


@dataclass(frozen=True)
class LatencyBenchSettings:
    engines: tuple[str, ...] = field(default=("native", "native-nospec", "cascade"), metadata={
        "help": f"engines to compare, in one run: {', '.join(ENGINE_ARGS)}"})
    sessions: tuple[int, ...] = field(default=(1, 2, 4, 8), metadata={
        "help": "concurrent session counts"})
    turns: int = field(default=3, metadata={"help": "questions per session per count"})
    chunk_ms: int = field(default=20, metadata={"help": "audio per append, as a microphone"})
    silence_duration_ms: int = field(default=300, metadata={
        "help": "server_vad silence_duration_ms (the end-of-turn wait)"})
    threshold: float = field(default=0.5, metadata={"help": "server_vad threshold"})
    turn_detection: str = field(default="server_vad", metadata={
        "help": "the sessions' turn detection: server_vad (with --threshold and "
                "--silence-duration-ms) or semantic_vad:low|medium|high|auto (the server's "
                "default; its turns end when the end-of-turn model says, so it times the "
                "model too)", "metavar": "SETTING"})
    jitter_ms: int = field(default=60, metadata={
        "help": "the simulated player's buffer before it starts (for underruns)"})
    turn_timeout_s: float = field(default=60.0, metadata={"help": "give up on a turn after"})
    turn_detections: tuple[str, ...] = field(default=(), metadata={
        "help": "instead of the engine grid: compare these turn detection settings in one run "
                "(semantic_vad:low|medium|high|auto, server_vad:SILENCE_MS) on the first "
                "engine, one session: --turns complete questions (latency) and --paused "
                "paused ones (false cut-ins) each; writes turn-detection.json / .png",
        "metavar": "SETTING"})
    paused: int = field(default=10, metadata={
        "help": "with --turn-detections: held-out questions spoken with a 300-1500 ms pause "
                "inside, per setting and style"})
    paused_styles: tuple[str, ...] = field(default=("one_breath", "apart"), metadata={
        "help": "with --turn-detections: how the paused questions are made: one_breath (the "
                "whole question as the voice says it, cut where the first part's words end) "
                "and / or apart (each part synthesized alone)", "metavar": "STYLE"})
    out: str = field(default="out/bench-latency", metadata={"help": "output folder"})


@dataclass
class TurnRecord:
    engine: str
    sessions: int
    session: int
    question: str
    voice: str
    kind: str = "question"  # or "barge_in" (not held out; only its stop time is summarized)
    latency_ms: float | None = None
    engine_ms: float | None = None
    barge_in_ms: float | None = None
    underruns: int = 0
    answer_s: float = 0.0
    status: str = ""
    transcript: str = ""
    ended_inside: int = 0  # turn ends inside the question: their answers, cancelled as it
    #                        went on, are not its answer (the one to the whole question is)


@dataclass
class _Turn:
    """What one session sees of one turn, as it arrives."""

    speech_end_s: float | None = None
    stopped_s: float | None = None
    first_audio_s: float | None = None
    last_audio_s: float | None = None
    response_id: str | None = None
    arrivals: list[tuple[float, float]] = field(default_factory=list)  # (t, seconds of audio)
    transcript: str = ""
    status: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    first_audio: asyncio.Event = field(default_factory=asyncio.Event)
    whole: bool = False  # a question: followed past answers the user's going on cancelled
    ended_inside: int = 0

    def went_on(self, response: dict) -> bool:
        """``response`` was cancelled because the question went on after a gap inside it
        (then the answer to the whole question comes next, and is this turn's)."""
        if not (self.whole and talked_over(response)):
            return False
        self.ended_inside += 1
        self.stopped_s = self.first_audio_s = self.last_audio_s = self.response_id = None
        self.arrivals.clear()
        self.transcript = ""
        self.first_audio.clear()
        return True


def underruns(arrivals: list[tuple[float, float]], jitter_ms: int) -> int:
    """Times a real-time player that starts ``jitter_ms`` after the first arrival runs
    dry: ``arrivals`` is (arrival time, seconds of audio in that delta)."""
    if not arrivals:
        return 0
    clock = arrivals[0][0] + jitter_ms / 1000  # when playback starts
    played_until, count = clock, 0
    for t, seconds in arrivals:
        if t > played_until:  # the buffer ran dry before this delta came
            count += played_until > clock
            played_until = t
        played_until += seconds
    return count


class _Session:
    def __init__(self, url: str, settings: LatencyBenchSettings) -> None:
        self.url, self.settings = url, settings
        self.turn: _Turn | None = None

    async def run(self, questions, barge_in: tuple, engine: str, sessions: int,
                  index: int) -> list[TurnRecord]:
        """Each question, then ``barge_in`` = (text, voice, question, interruption): the
        question's answer is interrupted half a second after it starts arriving."""
        records = []
        async with bench_session(self, session_turn_detection(self.settings)):
            for text, voice, audio in questions:
                records.append(TurnRecord(engine, sessions, index, text, voice))
                await self._turn(audio, records[-1], None)
            text, voice, audio, interruption = barge_in
            records.append(TurnRecord(engine, sessions, index, text, voice, "barge_in"))
            await self._turn(audio, records[-1], interruption)
        return records

    async def _turn(self, audio: np.ndarray, record: TurnRecord,
                    interruption: np.ndarray | None) -> None:
        turn = self.turn = _Turn(whole=interruption is None)
        end = speech_end_sample(audio)
        tail = np.zeros(int(self.settings.turn_timeout_s * WIRE_RATE_HZ), np.float32)
        streamer = asyncio.create_task(self._speak(np.concatenate([audio, tail]), end, turn))
        try:
            if interruption is None:
                await asyncio.wait_for(turn.done.wait(), self.settings.turn_timeout_s)
            else:
                await asyncio.wait_for(turn.first_audio.wait(), self.settings.turn_timeout_s)
                await asyncio.sleep(0.5)  # let the answer play a little, then talk over it
                streamer.cancel()
                onset = {}
                await self._speak(interruption, 0, onset_into=onset)
                await asyncio.wait_for(turn.done.wait(), self.settings.turn_timeout_s)
                if turn.status == "cancelled" and turn.last_audio_s is not None:
                    # 0 when no audio at all came after the onset
                    record.barge_in_ms = max(0.0, 1000 * (turn.last_audio_s - onset["t"]))
        except TimeoutError:
            turn.status = turn.status or "timeout"
        finally:
            streamer.cancel()
        if turn.first_audio_s is not None and turn.speech_end_s is not None:
            record.latency_ms = 1000 * (turn.first_audio_s - turn.speech_end_s)
        if turn.first_audio_s is not None and turn.stopped_s is not None:
            record.engine_ms = 1000 * (turn.first_audio_s - turn.stopped_s)
        record.underruns = underruns(turn.arrivals, self.settings.jitter_ms) \
            if turn.status == "completed" else 0
        record.answer_s = sum(s for _, s in turn.arrivals)
        record.status, record.transcript = turn.status, turn.transcript
        record.ended_inside = turn.ended_inside
        if interruption is not None:  # the interruption is a turn too: let it be answered
            await self._settle()

    async def _settle(self) -> None:
        """Stream silence until the server has answered the interruption (or gave up)."""
        turn = self.turn = _Turn()
        silence = np.zeros(int(self.settings.turn_timeout_s * WIRE_RATE_HZ), np.float32)
        streamer = asyncio.create_task(self._speak(silence, None, turn))
        try:
            await asyncio.wait_for(turn.done.wait(), self.settings.turn_timeout_s)
        except TimeoutError:
            pass
        finally:
            streamer.cancel()

    async def _speak(self, samples: np.ndarray, end: int | None, turn: _Turn | None = None,
                     onset_into: dict | None = None) -> None:
        async for chunk_end, chunk in paced_chunks(samples, self.settings.chunk_ms):
            await self.ws.send(json.dumps(append_event(chunk)))
            now = time.perf_counter()
            if onset_into is not None and "t" not in onset_into:
                onset_into["t"] = now - len(chunk) / WIRE_RATE_HZ  # the chunk's first sample
            if turn is not None and end is not None and turn.speech_end_s is None \
                    and chunk_end >= end:
                turn.speech_end_s = now - (chunk_end - end) / WIRE_RATE_HZ

    async def _read(self) -> None:
        async for message in self.ws:
            now = time.perf_counter()
            event = json.loads(message)
            kind, turn = ga_type(event["type"]), self.turn
            if turn is None:
                continue
            if kind == "input_audio_buffer.speech_stopped" and turn.stopped_s is None:
                turn.stopped_s = now
            elif kind == "response.created" and turn.response_id is None:
                turn.response_id = event["response"]["id"]
            elif kind == "response.output_audio.delta" and event["response_id"] == \
                    turn.response_id:
                seconds = len(base64.b64decode(event["delta"])) / BYTES_PER_MS / 1000
                turn.arrivals.append((now, seconds))
                turn.last_audio_s = now
                if turn.first_audio_s is None:
                    turn.first_audio_s = now
                    turn.first_audio.set()
            elif kind == "response.output_audio_transcript.done" and \
                    event["response_id"] == turn.response_id:
                turn.transcript = event["transcript"]
            elif kind == "response.done" and event["response"]["id"] == turn.response_id \
                    and not turn.went_on(event["response"]):
                turn.status = event["response"]["status"]
                turn.done.set()


async def _level(url: str, engine: str, sessions: int, questions, barge_in,
                 settings: LatencyBenchSettings) -> list[TurnRecord]:
    runs = []
    for i in range(sessions):  # each session asks its own questions, rotated
        mine = [questions[(i + k) % len(questions)] for k in range(settings.turns)]
        runs.append(_Session(url, settings).run(mine, barge_in, engine, sessions, i))
    return [r for records in await asyncio.gather(*runs) for r in records]


def run_latency_bench(settings: LatencyBenchSettings, progress=print) -> list[TurnRecord]:
    """Every engine x session count; returns one record per turn."""
    from voxloop.realtime.server_process import ServerProcess

    unknown = sorted(set(settings.engines) - set(ENGINE_ARGS))
    if unknown:
        raise VoxloopError(f"unknown engines {unknown}; choose from {list(ENGINE_ARGS)}")
    questions = held_out_questions(max(settings.turns, max(settings.sessions) + 1))
    barge_in = (*LONG_ANSWER, spoken(*LONG_ANSWER), spoken(*INTERRUPTION))
    records: list[TurnRecord] = []
    max_sessions = str(max(settings.sessions) + 2)
    for engine in settings.engines:
        with ServerProcess([*ENGINE_ARGS[engine], "--max-sessions", max_sessions, "-v"]
                           ) as server:
            for n in settings.sessions:
                t0 = time.perf_counter()
                level = asyncio.run(_level(server.url, engine, n, questions, barge_in,
                                           settings))
                records += level
                lat = [r.latency_ms for r in level  # as the report: the questions only
                       if r.kind == "question" and r.latency_ms is not None]
                progress(f"{engine:>14} x{n}: {len(level)} turns, latency p50 "
                         f"{np.median(lat) if lat else float('nan'):.0f} ms "
                         f"({time.perf_counter() - t0:.0f} s)")
        if settings.out:  # each response's stages (flush, first word, first audio) are in it
            out = Path(settings.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"server-{engine}.log").write_text(server.log())
    return records


def records_json(records: list[TurnRecord]) -> list[dict]:
    return [asdict(r) for r in records]
