"""Reading a batcher's answer queue (the batcher and semantic-engine tests), and one spoken
turn through a real server (the native and hybrid end-to-end tests)."""

from __future__ import annotations

import asyncio

import numpy as np

from tests.helpers.server import connect, silence, stream_realtime
from voxloop.realtime.engines.answers import Answer, Done, Failed, Frame, Reason, Word


def collect(answer: Answer) -> tuple[list[str], np.ndarray, Reason]:
    """Every word and frame of one answer until it ends: ``(words, codes [K, F], reason)``;
    a failure or a model thread that stops answering fails the test."""
    words, frames = [], []
    while True:
        match answer.get(10.0):
            case None:
                raise AssertionError("the model thread stopped answering")
            case Failed(error):
                raise AssertionError(error)
            case Word(text):
                words.append(text)
            case Frame(codes):
                frames.append(codes)
            case Done(reason):
                stacked = np.stack(frames, 1) if frames else np.zeros((4, 0), np.int64)
                return words, stacked, reason


async def spoken_turn(url: str, question: np.ndarray) -> dict:
    """One session: the question at real-time pace, then silence; what came back."""
    client = await connect(url)
    await client.recv()
    sender = asyncio.create_task(stream_realtime(
        client, np.concatenate([silence(0.3), question, silence(1.2)])))
    stopped = await client.until("input_audio_buffer.speech_stopped")
    stopped_s = client.events[-1].t
    done = await client.until("response.done", timeout_s=60)
    await sender
    await client.ws.close()
    deltas = [r for r in client.events if r.event["type"] == "response.output_audio.delta"]
    words = "".join(r.event["delta"] for r in client.events
                    if r.event["type"] == "response.output_audio_transcript.delta")
    return {"status": done["response"]["status"], "transcript": words.strip(),
            "audio_s": len(client.answer_audio()) / 24000, "stopped": stopped,
            "first_audio_ms": 1000 * (deltas[0].t - stopped_s) if deltas else None}
