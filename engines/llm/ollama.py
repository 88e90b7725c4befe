"""The ``ollama`` LLM engine: the official ``ollama`` client against an Ollama server.

A kiosk fleet can share one LLM box this way (``[llm] engine = "ollama"``). Facts that
shaped it (ollama 0.6.x client, see docs/models.md, "Ollama client"):

* The client has no timeout by default. We always pass one; httpx applies it per
  connect and per read, so it also ends a stream that stalls half-way. The worker keeps
  its own first-token/total deadlines on top (workers/llm.py); the client timeout only
  bounds how long an abandoned helper thread can stay blocked.
* ``break`` out of a streamed ``chat()`` does not stop generation: the generator must be
  *closed* (``contextlib.closing``), which closes the HTTP response, which makes the
  server cancel the request.
* Errors surface as several unrelated classes. ``stream()`` never raises: every failure
  becomes ``finish_reason="error"`` with a short ``error`` text whose prefix says what
  happened, so the worker can decide to retry (only ``connect:``):

  ==============================================  ===================
  cause                                           ``error`` starts
  ==============================================  ===================
  connection refused / unreachable / DNS          ``connect:``
  no byte within the timeout (hang, stall)        ``timeout:``
  HTTP 404 (model not pulled)                     ``model missing:``
  other HTTP error (500, 400, ...)                ``http NNN:``
  an ``{"error": ...}`` line inside the stream    ``server error:``
  server gone mid-stream                          ``stream broken:``
  a line that is not a chat chunk                 ``malformed stream:``
  stream ends without ``done``                    ``stream broken:``
  ==============================================  ===================

Tool calling (``[llm] tools = true``, :meth:`OllamaLlm.use_tools`): the allowed skills are
offered as ``tools``; when the reply is ``message.tool_calls`` instead of text, each call runs
through ``SkillRunner.call_tool`` (the skill's own deadline, bounded pool), the results are
appended as ``role: "tool"`` messages and a second streamed request gives the answer, whose
tokens stream as usual. One tool round per turn. A tool that raises, hangs or is refused
ends the turn with ``finish_reason="error"`` (``tool:``), so the worker streams its short
friendly answer at once instead of asking a small model to phrase an error. All of it runs
inside the one ``stream()`` call, so the worker's first-token/total deadlines and its
cancellation cover the tool round too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from engines.llm import FinishReason, StreamResult
from engines.llm.tools import MAX_TOOL_CALLS, TOOL_PREFIX, run_tool_calls

log = logging.getLogger("vigil.llm")

DEFAULT_MODEL = "smollm2:135m"  # the Ollama library name of the embedded default; serve-llm serves it under it
DEFAULT_HOST = "http://127.0.0.1:11434"
CONNECT_PREFIX = "connect:"


def resolve_host(host: str) -> str:
    """``""`` means OLLAMA_HOST, else the Ollama default -- exactly as the ollama client does."""
    from ollama._client import _parse_host

    return _parse_host(host or os.getenv("OLLAMA_HOST"))


def _short(text: Any, limit: int = 160) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def classify_error(exc: BaseException) -> str:
    """Map whatever the client raised to a short ``"kind: detail"`` text (see the module doc)."""
    import httpx
    import ollama

    if isinstance(exc, ollama.ResponseError):
        code = getattr(exc, "status_code", -1)
        if code == 404:
            return f"model missing: {_short(exc.error)}"
        if code is None or code < 0:
            return f"server error: {_short(exc.error)}"
        return f"http {code}: {_short(exc.error)}"
    # ConnectTimeout is a TimeoutException too, but it is a connection failure first.
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, ConnectionError)):
        return f"{CONNECT_PREFIX} {_short(exc) or type(exc).__name__}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout: {type(exc).__name__} {_short(exc)}".rstrip()
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError)):
        return f"stream broken: {type(exc).__name__} {_short(exc)}".rstrip()
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        return f"malformed stream: {type(exc).__name__} {_short(exc)}"
    try:
        import pydantic

        if isinstance(exc, pydantic.ValidationError):
            return f"malformed stream: chunk does not match the chat schema ({exc.error_count()} errors)"
    except ImportError:  # pragma: no cover - ollama depends on pydantic
        pass
    if isinstance(exc, (AttributeError, TypeError, KeyError)):
        return f"malformed stream: {type(exc).__name__} {_short(exc)}"
    if isinstance(exc, httpx.HTTPError):
        return f"http error: {type(exc).__name__} {_short(exc)}"
    return f"error: {type(exc).__name__} {_short(exc)}"


def is_connect_failure(result: StreamResult) -> bool:
    """True when ``result`` failed before the server was reached (worth one retry)."""
    return result.finish_reason == "error" and (result.error or "").startswith(CONNECT_PREFIX)


class OllamaLlm:
    """Streaming chat against an Ollama(-compatible) server with the official client.

    ``options`` are Ollama model options sent with every request (e.g. temperature,
    repeat_penalty); ``num_predict`` is set per request from ``max_tokens``.
    Thread-safe: each ``stream()`` is its own HTTP request (httpx's pool gives a new
    connection when an old one is still busy, e.g. held by an abandoned hung call).
    """

    name = "ollama"

    def __init__(
        self,
        host: str = "",
        model: str = "",
        timeout_s: float = 5.0,
        keep_alive: str | float | None = "30m",
        options: dict[str, Any] | None = None,
        warm_timeout_s: float = 60.0,
    ) -> None:
        import ollama

        self.host = resolve_host(host)
        self.model = model or DEFAULT_MODEL
        self.timeout_s = float(timeout_s)
        self.keep_alive = keep_alive if keep_alive not in ("",) else None
        self.options = dict(options or {})
        self.warm_error: str | None = None
        self.toolbox: Any = None  # a SkillRunner (tool_specs/call_tool) when tools are on
        self.tool_log: list[dict[str, Any]] = []  # recent tool calls: name, arguments, result, ms
        self._client = ollama.Client(host=self.host, timeout=self.timeout_s)
        # Warming may have to wait for the server to load the model from disk.
        self._warm_client = ollama.Client(host=self.host, timeout=max(self.timeout_s, warm_timeout_s))

    def use_tools(self, toolbox: Any) -> None:
        """Offer ``toolbox.tool_specs()`` as tools and run calls with ``toolbox.call_tool`` (None: off)."""
        self.toolbox = toolbox

    def _tool_specs(self) -> list[dict[str, Any]] | None:
        if self.toolbox is None:
            return None
        return self.toolbox.tool_specs() or None

    def warm(self, system_prompt: str) -> None:
        """A 1-token request: the server loads the model and caches the system-prompt prefix
        (with the tool list when tools are on: it is part of the prefix).

        Never raises (the server may come up later); the reason is kept in ``warm_error``.
        """
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": "hi"}]
        result, _calls = self._stream_once(self._warm_client, messages, lambda _t: False, 1, self._tool_specs())
        self.warm_error = result.error
        if result.error:
            log.warning("ollama warm-up at %s (model %s) failed: %s", self.host, self.model, result.error)

    def stream(
        self,
        messages: list[dict],
        on_token: Callable[[str], bool],
        max_tokens: int = 96,
    ) -> StreamResult:
        tools = self._tool_specs()
        if tools is None:
            return self._stream_once(self._client, messages, on_token, max_tokens)[0]
        return self._stream_with_tools(messages, on_token, max_tokens, tools)

    def _stream_with_tools(self, messages: list[dict], on_token: Callable[[str], bool], max_tokens: int,
                           tools: list[dict[str, Any]]) -> StreamResult:
        """Ask with tools; on tool calls run them and ask again (answer streamed as usual)."""
        t0 = time.perf_counter()
        first = self._stream_once(self._client, messages, on_token, max_tokens, tools)
        result, calls = first
        if result.finish_reason != "stop" or not calls:
            return result
        added, failures = run_tool_calls(self.toolbox, calls[:MAX_TOOL_CALLS], self.tool_log)
        if failures:  # the worker streams the friendly answer; no second request to phrase an error
            return StreamResult(text=result.text, n_tokens=result.n_tokens, finish_reason="error",
                                first_token_ms=result.first_token_ms,
                                total_ms=(time.perf_counter() - t0) * 1000.0,
                                error=f"{TOOL_PREFIX} {'; '.join(failures)}")
        added[0]["content"] = result.text  # the assistant turn: any text it said, then its calls
        history = list(messages) + added
        second, _more = self._stream_once(self._client, history, on_token, max_tokens, tools)
        first_ms = result.first_token_ms
        if first_ms is None and second.first_token_ms is not None:
            first_ms = (time.perf_counter() - t0) * 1000.0 - second.total_ms + second.first_token_ms
        return StreamResult(text=result.text + second.text, n_tokens=result.n_tokens + second.n_tokens,
                            finish_reason=second.finish_reason, first_token_ms=first_ms,
                            total_ms=(time.perf_counter() - t0) * 1000.0, error=second.error)

    def _stream_once(self, client, messages: list[dict], on_token: Callable[[str], bool], max_tokens: int,
                     tools: list[dict[str, Any]] | None = None) -> tuple[StreamResult, list[dict[str, Any]]]:
        """One streamed request: the result and the tool calls ({"name", "arguments"}) it asked for."""
        parts: list[str] = []
        calls: list[dict[str, Any]] = []
        first: float | None = None
        done_reason: str | None = None
        eval_count: int | None = None
        error: str | None = None
        cancelled = False
        t0 = time.perf_counter()
        try:
            chunks = client.chat(
                model=self.model,
                messages=messages,
                stream=True,
                keep_alive=self.keep_alive,
                options={**self.options, "num_predict": int(max_tokens)},
                **({"tools": tools} if tools else {}),
            )
            # closing(): leaving the loop early closes the HTTP response, so the server stops generating.
            with contextlib.closing(chunks):
                for chunk in chunks:
                    for call in (chunk.message.tool_calls if chunk.message is not None else None) or ():
                        calls.append({"name": call.function.name, "arguments": dict(call.function.arguments or {})})
                    text = chunk.message.content if chunk.message is not None else None
                    if text:
                        if first is None:
                            first = time.perf_counter()
                        parts.append(text)
                        if on_token(text):
                            cancelled = True
                            break
                    if chunk.done:
                        done_reason = chunk.done_reason or "stop"
                        eval_count = chunk.eval_count
                        break
        except Exception as exc:  # stream() never raises; see the table above
            error = classify_error(exc)
        total_ms = (time.perf_counter() - t0) * 1000.0
        if error is not None:
            reason: FinishReason = "error"
        elif cancelled:
            reason = "cancelled"
        elif done_reason is None:
            reason, error = "error", "stream broken: the stream ended without a final done chunk"
        elif done_reason == "length":
            reason = "length"
        else:
            reason = "stop"
        counted = isinstance(eval_count, int) and eval_count >= 0 and reason in ("stop", "length")
        n_tokens = eval_count if counted else len(parts)
        return StreamResult(
            text="".join(parts),
            n_tokens=int(n_tokens),
            finish_reason=reason,
            first_token_ms=None if first is None else (first - t0) * 1000.0,
            total_ms=total_ms,
            error=error,
        ), calls

    def close(self) -> None:
        for client in (self._client, self._warm_client):
            with contextlib.suppress(Exception):
                client._client.close()
