"""File mode of the client: speak a wav file to the server, save the spoken answer.

The question is streamed at real-time pace in 40 ms appends, followed by silence,
exactly as a microphone would send it; the server's VAD ends the turn. Latency is
measured as a user hears it: the first answer audio's arrival minus the moment the
last sample of the question was sent. Once the question and its silence are sent,
a server that stays quiet for ``timeout_s`` ends the turn with "no speech heard" (its
VAD never heard speech) or "no answer".
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxloop.audio import float_to_pcm16, pcm16_to_float, read_wav, resample, write_wav
from voxloop.client.connect import connect_error, realtime_url
from voxloop.errors import VoxloopError
from voxloop.paths import output_file
from voxloop.realtime.wire.protocol import WIRE_RATE_HZ, ga_type


@dataclass(frozen=True)
class FileTurnSettings:
    chunk_ms: int = field(default=40, metadata={"help": "audio per append event"})
    tail_s: float = field(default=15.0, metadata={
        "help": "silence streamed after the question, at most (stops at response.done)"})
    timeout_s: float = field(default=20.0, metadata={
        "help": "after the question and its silence, give up when the server sends nothing "
                "for this long: exit 1 with 'no speech heard' or 'no answer'"})


@dataclass
class TurnResult:
    user_transcript: str = ""
    answer_transcript: str = ""
    answer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # 24 kHz
    latency_ms: float | None = None  # end of question sent -> first answer audio received
    status: str = ""
    errors: list[str] = field(default_factory=list)


async def speak_file(url: str, wav_path: str, api_key: str | None = None,
                     settings: FileTurnSettings = FileTurnSettings()) -> TurnResult:
    import websockets

    url = realtime_url(url)
    samples, rate_hz = read_wav(wav_path)
    question = resample(samples, rate_hz, WIRE_RATE_HZ)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        ws = await websockets.connect(url, additional_headers=headers, max_size=2**24)
    except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
        raise connect_error(url, exc) from exc
    result, pcm, sent = TurnResult(), bytearray(), {}
    async with ws:
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}}))
        streamer = asyncio.create_task(_stream(ws, question, settings, sent))
        try:
            async for event in _events(ws, streamer, settings.timeout_s):
                kind = ga_type(event["type"])
                if kind == "input_audio_buffer.speech_started":
                    sent["speech_heard"] = True
                if kind == "response.output_audio.delta":
                    if result.latency_ms is None and "question_end_s" in sent:
                        result.latency_ms = 1000 * (time.perf_counter() - sent["question_end_s"])
                    pcm.extend(base64.b64decode(event["delta"]))
                elif kind == "conversation.item.input_audio_transcription.completed":
                    result.user_transcript = event["transcript"]
                elif kind == "response.output_audio_transcript.done":
                    result.answer_transcript = event["transcript"]
                elif kind == "error":
                    result.errors.append(f"{event['error'].get('code')}: "
                                         f"{event['error'].get('message')}")
                elif kind == "response.done":
                    if talked_over(event["response"]):  # the question went on after a
                        pcm.clear()  # pause: the answer to all of it comes next
                        result.answer_transcript, result.latency_ms = "", None
                        continue
                    result.status = event["response"]["status"]
                    break
        except TimeoutError:
            raise _silent_server(wav_path, len(question), sent, settings, result) from None
        finally:
            streamer.cancel()
    result.answer = pcm16_to_float(bytes(pcm))
    if not result.status:
        why = [f"close {ws.close_code}" + (f" {ws.close_reason!r}" if ws.close_reason else ""),
               *result.errors]
        raise VoxloopError(f"the server closed the connection before answering "
                           f"({'; '.join(why)})")
    return result


def talked_over(response: dict) -> bool:
    """A response the server cancelled because the user spoke again (a pause inside the
    question ended a turn too early), not a turn's final answer."""
    details = response.get("status_details") or {}
    return response.get("status") == "cancelled" and details.get("reason") == "turn_detected"


async def _events(ws, streamer: asyncio.Task, timeout_s: float):
    """The server's events until it closes; once ``streamer`` is done, TimeoutError
    after ``timeout_s`` without one."""
    from websockets.exceptions import ConnectionClosed

    quiet_since = None
    while True:
        try:
            message = await asyncio.wait_for(ws.recv(), 0.25)  # websockets: safe to cancel
        except TimeoutError:
            if not streamer.done():
                continue
            try:
                streamer.result()  # a send that failed for another reason ends the turn
            except ConnectionClosed:
                return
            quiet_since = quiet_since or time.perf_counter()
            if time.perf_counter() - quiet_since > timeout_s:
                raise
            continue
        except ConnectionClosed:
            return
        quiet_since = None
        yield json.loads(message)


def _silent_server(wav_path: str, samples: int, sent: dict, settings: FileTurnSettings,
                   result: TurnResult) -> VoxloopError:
    errors = f" Server errors: {'; '.join(result.errors)}." if result.errors else ""
    waited = (f"{samples / WIRE_RATE_HZ:.1f} s of question, {settings.tail_s:g} s of silence "
              f"and {settings.timeout_s:g} s of waiting (--timeout-s)")
    if not sent.get("speech_heard"):
        return VoxloopError(f"no speech heard: the server's VAD found no speech in {wav_path} "
                            f"after {waited}. Is it speech, loud enough (`voxloop asr "
                            f"{wav_path}` transcribes it)?{errors}")
    return VoxloopError(f"no answer: the server heard speech in {wav_path} but did not answer "
                        f"after {waited}; its log may say why.{errors}")


def check_output_path(path: str) -> Path:
    """The answer's wav path, checked before connecting (so a bad one never costs a turn)."""
    return output_file(path, ".wav", "the answer", "--output")


def append_event(samples: np.ndarray) -> dict:
    """``input_audio_buffer.append`` for float32 ``[T]`` at 24 kHz."""
    return {"type": "input_audio_buffer.append",
            "audio": base64.b64encode(float_to_pcm16(samples)).decode()}


async def paced_chunks(samples: np.ndarray, chunk_ms: int):
    """Yield ``(end_sample, chunk)`` of ``[T]`` at 24 kHz, one chunk per ``chunk_ms`` of
    wall clock, as a microphone delivers them (the pace is kept against the start time,
    so slow sends do not accumulate drift)."""
    step = WIRE_RATE_HZ * chunk_ms // 1000
    t0 = time.perf_counter()
    for n, i in enumerate(range(0, len(samples), step)):
        yield i + step, samples[i:i + step]
        await asyncio.sleep(max(0.0, t0 + (n + 1) * chunk_ms / 1000 - time.perf_counter()))


async def _stream(ws, question: np.ndarray, settings: FileTurnSettings, sent: dict) -> None:
    tail = np.zeros(int(settings.tail_s * WIRE_RATE_HZ), np.float32)
    end = speech_end_sample(question)
    async for chunk_end, chunk in paced_chunks(np.concatenate([question, tail]),
                                               settings.chunk_ms):
        await ws.send(json.dumps(append_event(chunk)))
        if chunk_end >= end and "question_end_s" not in sent:
            sent["question_end_s"] = time.perf_counter() - (chunk_end - end) / WIRE_RATE_HZ


def speech_end_sample(samples: np.ndarray, floor: float = 0.02) -> int:
    """Index just past the last sample above ``floor`` x the peak: the end of the speech,
    not of the file (synthesizers and recordings trail off in silence)."""
    loud = np.flatnonzero(np.abs(samples) > floor * max(1e-9, float(np.abs(samples).max())))
    return int(loud[-1]) + 1 if len(loud) else len(samples)


def save_answer(result: TurnResult, path: str) -> None:
    write_wav(path, result.answer, WIRE_RATE_HZ)
