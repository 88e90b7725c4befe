"""LLM engines: one streaming interface, the embedded llama.cpp engine and an Ollama client.

The LLM worker process owns one engine. It streams tokens to a callback that can cancel
generation (barge-in, deadlines) by returning True. Engines never raise from ``stream()``:
any failure becomes ``finish_reason="error"`` so the worker can still send the person a
short friendly answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

FinishReason = Literal["stop", "length", "cancelled", "error"]

SAMPLING_KEYS = frozenset({"temperature", "repeat_penalty", "top_p", "top_k", "min_p", "seed", "stop",
                           "presence_penalty", "frequency_penalty",
                           "response_format", "grammar"})  # constrained replies (serve-llm's tool calling)


class LlmError(RuntimeError):
    """The engine cannot be used (missing/corrupt weights, load failure, a refused request)."""


class ModelLoadError(LlmError):
    """The embedded engine cannot load its model file (missing, unreadable, not a gguf llama.cpp loads).

    Permanent: a restart would load the same file, so the LLM worker reports "cannot start" once.
    A server that does not answer (Ollama) is not this: it may come back, and it never raises at start.
    """


@dataclass(frozen=True)
class StreamResult:
    """Outcome of one streamed completion.

    ``first_token_ms`` is None when no token arrived. ``error`` carries the
    reason when ``finish_reason == "error"``.
    """

    text: str
    n_tokens: int
    finish_reason: FinishReason
    first_token_ms: float | None
    total_ms: float
    error: str | None = None
    prompt_tokens: int | None = None  # prompt tokens evaluated (not cached), when the engine says


class LlmEngine(Protocol):
    """What the LLM worker needs from any engine (embedded, Ollama, ...)."""

    name: str

    def warm(self, system_prompt: str) -> None:
        """Evaluate the system prompt once so later questions hit the prefix cache."""

    def stream(
        self,
        messages: list[dict],
        on_token: Callable[[str], bool],
        max_tokens: int = 96,
    ) -> StreamResult:
        """Stream the reply to ``messages``; ``on_token`` returns True to cancel."""
