"""Language-model teachers: conversation history + user text -> reply text.

``scripted`` (default) is the deterministic assistant over the documented
domain in ``distill/domain``. ``openai`` talks to any OpenAI-compatible
chat-completions endpoint: vLLM, llama.cpp's server, ollama, or OpenAI itself.

Only ``openai`` follows instructions (a realtime session's ``instructions`` become its
system prompt) and streams (``stream: true``, so a voice answer can start speaking its
first sentence while the rest is being written): :func:`follows_instructions`,
:func:`reply_pieces`. The scripted teacher answers from its domain alone.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from voxloop.errors import VoxloopError

DEFAULT_SYSTEM_PROMPT = (
    "You are voxloop, a friendly voice assistant. Answer in one or two short spoken "
    "sentences, with no lists, markup or emoji."
)


@dataclass(frozen=True)
class LLMSettings:
    """Which language model answers, and how to reach it."""

    backend: str = field(default="scripted", metadata={
        "help": "reply generator", "choices": ["scripted", "openai"], "flag": "--llm"})
    url: str = field(default="http://127.0.0.1:8000/v1", metadata={
        "help": "base URL of an OpenAI-compatible API (for --llm openai)", "flag": "--llm-url"})
    model: str = field(default="default", metadata={
        "help": "model name sent to the endpoint", "flag": "--llm-model"})
    api_key_env: str = field(default="VOXLOOP_LLM_API_KEY", metadata={
        "help": "environment variable that holds the endpoint's API key",
        "flag": "--llm-api-key-env"})
    timeout_s: float = field(default=30.0, metadata={
        "help": "HTTP timeout in seconds", "flag": "--llm-timeout-s"})
    max_tokens: int = field(default=80, metadata={
        "help": "longest reply in tokens", "flag": "--llm-max-tokens"})


class LLM(Protocol):
    name: str

    def reply(self, history: list[dict], text: str) -> str:
        """``history``: earlier ``{"role", "content"}`` messages; ``text``: the user's turn."""


class OpenAICompatibleLLM:
    """POST /chat/completions on an OpenAI-compatible server (stdlib HTTP only)."""

    name = "openai"

    def __init__(self, settings: LLMSettings, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> None:
        parts = urllib.parse.urlsplit(settings.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise VoxloopError(f"--llm-url {settings.url!r} is not an http(s) URL: give the "
                               "server's /v1 base URL, e.g. http://127.0.0.1:8000/v1")
        self.settings = settings
        self.system_prompt = system_prompt

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.settings.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def reply(self, history: list[dict], text: str, instructions: str | None = None) -> str:
        """The whole reply; ``instructions`` (if any) replace the default system prompt."""
        with self._post(history, text, instructions, stream=False) as (url, response):
            return _message(url, _json(url, response.read()))

    def stream_reply(self, history: list[dict], text: str,
                     instructions: str | None = None) -> Iterator[str]:
        """The reply's text piece by piece as the endpoint writes it (``stream: true``:
        server-sent events, ``data: {chunk}`` lines and ``data: [DONE]``). An endpoint that
        answers with one JSON body instead gives one piece. Closing the iterator early
        closes the connection."""
        with self._post(history, text, instructions, stream=True) as (url, response):
            if "json" in response.headers.get("Content-Type", ""):
                yield _message(url, _json(url, response.read()))
                return
            said = False
            for raw in response:
                line = raw.decode("utf-8", "replace").strip()
                if line.startswith("error:"):  # (llama.cpp: a failure after the headers)
                    raise VoxloopError(f"LLM endpoint {url} failed in its reply: "
                                       f"{line[len('error:'):].strip()[:300]}")
                if not line.startswith("data:"):
                    continue  # blank lines between events, ": comments", other fields
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    if not said:
                        raise VoxloopError(f"LLM endpoint {url} replied with no text (a "
                                           "model that spent --llm-max-tokens thinking?)")
                    return
                piece = _delta(url, _json(url, data))
                if piece:
                    said = True
                    yield piece
            raise VoxloopError(f"LLM endpoint {url} ended its reply without [DONE]: what it "
                               "wrote may be cut off")

    @contextlib.contextmanager
    def _post(self, history: list[dict], text: str, instructions: str | None, stream: bool):
        """POST the chat request; yield ``(url, response)``; every failure, also one in the
        middle of a streamed reply, is a :class:`VoxloopError` that says what to do."""
        messages = [{"role": "system", "content": instructions or self.system_prompt},
                    *history, {"role": "user", "content": text}]
        body = {"model": self.settings.model, "messages": messages,
                "max_tokens": self.settings.max_tokens, "temperature": 0.0}
        if stream:
            body["stream"] = True
        url = self.settings.url.rstrip("/") + "/chat/completions"
        request = urllib.request.Request(url, json.dumps(body).encode(), self._headers(),
                                         method="POST")
        try:
            response = urllib.request.urlopen(request, timeout=self.settings.timeout_s)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            hint = f" (is ${self.settings.api_key_env} set?)" if exc.code in (401, 403) else ""
            raise VoxloopError(f"LLM endpoint {url} answered HTTP {exc.code}{hint}: {detail}"
                               ) from exc
        except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
            raise VoxloopError(f"cannot reach LLM endpoint {url}: {exc}. Is the server "
                               "running? Set --llm-url to its /v1 base URL.") from exc
        with response:
            try:
                yield url, response
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                raise VoxloopError(f"LLM endpoint {url} stopped in the middle of its reply: "
                                   f"{exc!r} (--llm-timeout-s is "
                                   f"{self.settings.timeout_s:g} s)") from exc


def _json(url: str, text: bytes | str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise VoxloopError(f"LLM endpoint {url} did not return JSON: {exc}: "
                           f"{str(text)[:200]}") from exc


def _message(url: str, payload) -> str:
    """The text of a whole answer (``choices[0].message.content``)."""
    try:
        return (payload["choices"][0]["message"]["content"] or "").strip()
    except (KeyError, IndexError, TypeError) as exc:
        raise VoxloopError(f"LLM endpoint {url} returned no choices[0].message.content: "
                           f"{str(payload)[:300]}") from exc


def _delta(url: str, chunk) -> str:
    """The text of one streamed chunk (``choices[0].delta.content``; "" for none)."""
    if isinstance(chunk, dict) and chunk.get("error"):
        raise VoxloopError(f"LLM endpoint {url} failed in the middle of its reply: "
                           f"{str(chunk['error'])[:300]}")
    try:
        choices = chunk["choices"]
        return (choices[0].get("delta") or {}).get("content") or "" if choices else ""
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise VoxloopError(f"LLM endpoint {url} streamed a chunk without "
                           f"choices[0].delta: {str(chunk)[:300]}") from exc


def follows_instructions(llm: LLM) -> bool:
    """Whether ``llm`` takes instructions as its system prompt (the scripted teacher
    cannot: it answers from its domain alone)."""
    return isinstance(llm, OpenAICompatibleLLM)


def reply_pieces(llm: LLM, history: list[dict], text: str,
                 instructions: str | None = None) -> Generator[str, None, None]:
    """The reply as it is made: streamed where the backend streams (``openai``, which
    also takes ``instructions`` as its system prompt), else the whole reply at once.
    Closing it early closes a streamed reply's connection."""
    if isinstance(llm, OpenAICompatibleLLM):
        yield from llm.stream_reply(history, text, instructions)
    else:
        yield llm.reply(history, text)


def load_llm(settings: LLMSettings = LLMSettings()) -> LLM:
    """Build the reply generator named by ``settings.backend``."""
    if settings.backend == "scripted":
        from voxloop.distill.teachers.domain.assistant import ScriptedAssistant

        return ScriptedAssistant()
    if settings.backend == "openai":
        return OpenAICompatibleLLM(settings)
    raise VoxloopError(f"unknown LLM backend {settings.backend!r}: use scripted or openai")
