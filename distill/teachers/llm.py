"""Language-model teachers: conversation history + user text -> reply text.

``scripted`` (default) is the deterministic assistant over the documented
domain in ``distill/domain``. ``openai`` talks to any OpenAI-compatible
chat-completions endpoint: vLLM, llama.cpp's server, ollama, or OpenAI itself.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
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

    def reply(self, history: list[dict], text: str) -> str:
        messages = [{"role": "system", "content": self.system_prompt}, *history,
                    {"role": "user", "content": text}]
        body = json.dumps({"model": self.settings.model, "messages": messages,
                           "max_tokens": self.settings.max_tokens, "temperature": 0.0})
        url = self.settings.url.rstrip("/") + "/chat/completions"
        request = urllib.request.Request(url, body.encode(), self._headers(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            hint = f" (is ${self.settings.api_key_env} set?)" if exc.code in (401, 403) else ""
            raise VoxloopError(f"LLM endpoint {url} answered HTTP {exc.code}{hint}: {detail}"
                               ) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise VoxloopError(f"cannot reach LLM endpoint {url}: {exc}. Is the server "
                               "running? Set --llm-url to its /v1 base URL.") from exc
        except json.JSONDecodeError as exc:
            raise VoxloopError(f"LLM endpoint {url} did not return JSON: {exc}") from exc
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise VoxloopError(f"LLM endpoint {url} returned no choices[0].message.content: "
                               f"{str(payload)[:300]}") from exc
        return (content or "").strip()


def load_llm(settings: LLMSettings = LLMSettings()) -> LLM:
    """Build the reply generator named by ``settings.backend``."""
    if settings.backend == "scripted":
        from voxloop.distill.teachers.domain.assistant import ScriptedAssistant

        return ScriptedAssistant()
    if settings.backend == "openai":
        return OpenAICompatibleLLM(settings)
    raise VoxloopError(f"unknown LLM backend {settings.backend!r}: use scripted or openai")
