"""The embedded LLM engine: ``EmbeddedLlm`` runs llama.cpp in process through ``xllamacpp.Server``
(a prebuilt wheel, no compiler needed). Facts that shaped it (measured with
SmolLM2-135M Q4_1 on a 2-core box, see DESIGN.md "LLM facts"):

* 1 thread: with another core busy, 2 threads collapse (OpenMP-style spinning),
  1 thread keeps ~70-80 tok/s. ``cpuparams.poll = 0`` so no thread spins.
* The prompt-prefix cache is automatic with one slot (``n_parallel=1``): once
  the system prompt is evaluated, a new question only evaluates its own tokens
  (~0.1 s first token instead of ~1 s cold) -- hence ``warm()``.
* ``cache_ram_mib = 0``: llama.cpp's host-RAM prompt cache defaults to 8 GiB of
  saved slot states; the slot's own KV cache already gives the prefix reuse we
  need, and memory must stay flat for months.
* ``verbosity = -1`` silences llama.cpp completely.
* ``xllamacpp.Server`` also opens a loopback HTTP listener on a random port
  (``port = 0``); we never use it.
* The Cython wrapper swallows exceptions raised by the callback (it just stops
  generation), so our callback catches everything itself and reports it.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path
from typing import Callable

from engines.llm import SAMPLING_KEYS, FinishReason, LlmError, StreamResult

GGUF_MAGIC = b"GGUF"


def check_gguf(path: str | os.PathLike[str]) -> Path:
    """Validate a gguf file cheaply before llama.cpp sees it.

    Why: a wrong path must give a clear error, not a confusing
    "Failed to init server", and garbage should never reach native code.
    Returns the absolute path.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise LlmError(f"LLM model file not found: {p}")
    try:
        with p.open("rb") as f:
            head = f.read(8)
    except OSError as e:
        raise LlmError(f"LLM model file unreadable: {p}: {e}") from e
    if len(head) < 8 or head[:4] != GGUF_MAGIC:
        raise LlmError(f"not a GGUF model (bad magic {head[:4]!r}): {p}")
    (version,) = struct.unpack("<I", head[4:8])
    if not 1 <= version <= 3:
        raise LlmError(f"unsupported GGUF version {version}: {p}")
    return p.resolve()


class EmbeddedLlm:
    """llama.cpp in this process via ``xllamacpp.Server`` (one slot, CPU).

    Not thread-safe for concurrent ``stream()`` calls: the worker runs one
    request at a time (a lock serialises them anyway).
    """

    name = "embedded"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        n_threads: int = 1,
        n_ctx: int = 2048,
        repeat_penalty: float = 1.2,
        temperature: float = 0.2,
        seed: int | None = None,
    ) -> None:
        path = check_gguf(model_path)
        import xllamacpp  # imported late: it is heavy and only the LLM worker needs it

        p = xllamacpp.CommonParams()
        p.model.path = str(path)
        p.n_ctx = n_ctx
        p.n_parallel = 1  # one slot => its KV cache is the prefix cache
        p.cpuparams.n_threads = n_threads
        p.cpuparams_batch.n_threads = n_threads
        p.cpuparams.poll = 0  # no busy-wait polling between graph runs
        p.cpuparams_batch.poll = 0
        p.n_threads_http = 1  # the unused loopback HTTP listener
        p.cache_ram_mib = 0  # no host-RAM prompt cache (default 8 GiB)
        p.verbosity = -1  # silence llama.cpp
        p.sampling.temp = temperature
        p.sampling.penalty_repeat = repeat_penalty
        if seed is not None:
            p.sampling.seed = seed
        self.model_path = path
        self.temperature = temperature
        self.repeat_penalty = repeat_penalty
        self._lock = threading.Lock()
        t0 = time.perf_counter()
        try:
            self._srv = xllamacpp.Server(p)
        except Exception as e:  # llama.cpp only says "Failed to init server"
            raise LlmError(f"llama.cpp could not load {path}: {e}") from e
        self.load_ms = (time.perf_counter() - t0) * 1000.0

    def warm(self, system_prompt: str) -> None:
        """Run a 1-token request with the system prompt so its KV stays cached."""
        self.stream(
            [{"role": "system", "content": system_prompt}, {"role": "user", "content": "hi"}],
            lambda _t: False,
            max_tokens=1,
        )

    def stream(
        self,
        messages: list[dict],
        on_token: Callable[[str], bool],
        max_tokens: int = 96,
        *,
        sampling: dict | None = None,
    ) -> StreamResult:
        """Stream a reply; ``sampling`` overrides per request (temperature, repeat_penalty,
        top_p, top_k, seed, stop -- what serve-llm passes on from an Ollama request)."""
        parts: list[str] = []
        state: dict = {"first": None, "finish": None, "error": None, "n_pred": None, "n_prompt": None,
                       "cancel": False}
        t0 = time.perf_counter()

        def callback(chunk: dict) -> bool:
            # Runs on the calling thread with the GIL held; must never raise
            # (the wrapper would swallow it) -- record and stop instead.
            try:
                if "error" in chunk or ("code" in chunk and "choices" not in chunk):
                    err = chunk.get("error", chunk)
                    state["error"] = str(err.get("message", err) if isinstance(err, dict) else err)
                    return True
                choice = (chunk.get("choices") or [{}])[0]
                text = (choice.get("delta") or {}).get("content")
                if choice.get("finish_reason"):
                    state["finish"] = choice["finish_reason"]
                timings = chunk.get("timings")
                if timings:
                    state["n_pred"] = timings.get("predicted_n")
                    state["n_prompt"] = timings.get("prompt_n")
                if text:
                    if state["first"] is None:
                        state["first"] = time.perf_counter()
                    parts.append(text)
                    if on_token(text):
                        state["cancel"] = True
                        return True
                return False
            except Exception as e:  # noqa: BLE001 - includes on_token's own errors
                state["error"] = f"{type(e).__name__}: {e}"
                return True

        request = {
            "messages": messages,
            "stream": True,
            "max_tokens": int(max_tokens),
            "temperature": self.temperature,
            "repeat_penalty": self.repeat_penalty,
            "cache_prompt": True,
        }
        for key, value in (sampling or {}).items():
            if key in SAMPLING_KEYS and value is not None:
                request[key] = value
        try:
            with self._lock:
                self._srv.handle_chat_completions(request, callback)
        except Exception as e:  # noqa: BLE001 - never crash the worker
            state["error"] = f"{type(e).__name__}: {e}"

        total_ms = (time.perf_counter() - t0) * 1000.0
        first_ms = None if state["first"] is None else (state["first"] - t0) * 1000.0
        if state["error"] is not None:
            reason: FinishReason = "error"
        elif state["cancel"]:
            reason = "cancelled"
        elif state["finish"] == "length":
            reason = "length"
        elif state["finish"] is None:
            reason, state["error"] = "error", "stream ended without a finish reason"
        else:
            reason = "stop"
        n_tokens = state["n_pred"] if state["n_pred"] is not None and reason in ("stop", "length") else len(parts)
        return StreamResult(
            text="".join(parts),
            n_tokens=int(n_tokens),
            finish_reason=reason,
            first_token_ms=first_ms,
            total_ms=total_ms,
            error=state["error"],
            prompt_tokens=state["n_prompt"],
        )
