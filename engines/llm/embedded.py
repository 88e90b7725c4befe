"""The embedded LLM engine: ``EmbeddedLlm`` runs llama.cpp in process through ``xllamacpp.Server``
(a prebuilt wheel, no compiler needed). Facts that shaped it (measured with
SmolLM2-135M Q4_1 on a 2-core box, see DESIGN.md "LLM facts"):

* 1 thread: with another core busy, 2 threads collapse (OpenMP-style spinning),
  1 thread keeps ~70-80 tok/s. ``cpuparams.poll = 0`` so no thread spins.
* The prompt may take more threads (``n_prompt_threads``; 0 or None: ``n_threads``): a
  request's prompt comes just as STT finishes, with both cores free, and 2 threads evaluate it
  in ~half the time (first token ~95 → ~53 ms measured alone; ~75 → ~38 ms in the bench's
  endpoint set).
* The prompt-prefix cache is automatic with one slot (``n_parallel=1``): once
  the system prompt is evaluated, a new question only evaluates its own tokens
  (~0.1 s first token instead of ~1 s cold) -- hence ``warm()``.
* ``cache_ram_mib = 0``: llama.cpp's host-RAM prompt cache defaults to 8 GiB of
  saved slot states; the slot's own KV cache already gives the prefix reuse we
  need, and memory must stay flat for months.
* ``verbosity = -1`` silences llama.cpp completely.
* ``xllamacpp.Server`` always opens llama.cpp's HTTP listener too (``/completion``,
  ``/v1/chat/completions``, ``/slots``, ...), with no key on a loopback TCP port by default:
  any local process could run generations on the kiosk's only slot. We bind it to a Unix
  socket in a fresh 0700 directory, with a random API key, read the model's facts from it
  once (``describe()``), then delete the directory: nothing can connect to it any more.
* The Cython wrapper swallows exceptions raised by the callback (it just stops
  generation), so our callback catches everything itself and reports it.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engines.llm import SAMPLING_KEYS, FinishReason, LlmError, ModelLoadError, StreamResult

GGUF_MAGIC = b"GGUF"
POOLING_MEAN = 1  # llama.cpp's LLAMA_POOLING_TYPE_MEAN: one vector per input, as Ollama's embed gives
INVALID_REQUEST = "invalid request:"  # StreamResult.error prefix: llama.cpp refused the request itself (a 400)


class LlmRequestError(LlmError):
    """llama.cpp refused a request as invalid (too long for the context, a bad schema, ...)."""


def check_gguf(path: str | os.PathLike[str]) -> Path:
    """Validate a gguf file cheaply before llama.cpp sees it.

    Why: a wrong path must give a clear error, not a confusing
    "Failed to init server", and garbage should never reach native code.
    Returns the absolute path.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelLoadError(f"LLM model file not found: {p}")
    try:
        with p.open("rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ModelLoadError(f"LLM model file unreadable: {p}: {e}") from e
    if len(head) < 8 or head[:4] != GGUF_MAGIC:
        raise ModelLoadError(f"not a GGUF model (bad magic {head[:4]!r}): {p}")
    (version,) = struct.unpack("<I", head[4:8])
    if not 1 <= version <= 3:
        raise ModelLoadError(f"unsupported GGUF version {version}: {p}")
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
        embeddings: bool = False,
        n_prompt_threads: int | None = None,
    ) -> None:
        """``embeddings``: also serve :meth:`embed` (mean-pooled, normalised), as ``serve-llm`` does."""
        path = check_gguf(model_path)
        import xllamacpp  # imported late: it is heavy and only the LLM worker needs it

        p = xllamacpp.CommonParams()
        p.model.path = str(path)
        p.n_ctx = n_ctx
        p.n_parallel = 1  # one slot => its KV cache is the prefix cache
        p.cpuparams.n_threads = n_threads
        p.cpuparams_batch.n_threads = n_prompt_threads or n_threads
        p.cpuparams.poll = 0  # no busy-wait polling between graph runs
        p.cpuparams_batch.poll = 0
        p.n_threads_http = 1  # llama.cpp's own HTTP listener: read once by describe(), then unreachable
        p.timeout_read = p.timeout_write = 5
        p.endpoint_slots = False
        self._listener_dir = tempfile.mkdtemp(prefix="vigil-llm-")  # 0700: only this user may even connect
        self._listener_path = os.path.join(self._listener_dir, "llama.sock")
        self._api_key = secrets.token_urlsafe(32)
        p.hostnames = [self._listener_path]
        p.api_keys = [self._api_key]
        p.cache_ram_mib = 0  # no host-RAM prompt cache (default 8 GiB)
        p.verbosity = -1  # silence llama.cpp
        p.sampling.temp = temperature
        p.sampling.penalty_repeat = repeat_penalty
        if seed is not None:
            p.sampling.seed = seed
        if embeddings:
            p.embedding = True
            p.pooling_type = POOLING_MEAN
            p.n_batch = p.n_ubatch = n_ctx  # an input is embedded in one batch: let it be as long as the context
        self.model_path = path
        self.n_ctx = n_ctx
        self.embeddings = embeddings
        self.temperature = temperature
        self.repeat_penalty = repeat_penalty
        self._lock = threading.Lock()
        t0 = time.perf_counter()
        try:
            self._srv = xllamacpp.Server(p)
        except Exception as e:  # llama.cpp only says "Failed to init server"
            self._close_listener()
            raise ModelLoadError(f"llama.cpp could not load {path}: {e}") from e
        self.load_ms = (time.perf_counter() - t0) * 1000.0
        try:
            self._facts = self._read_facts()
        finally:
            self._close_listener()

    # ---- llama.cpp's own HTTP listener: read once, then closed to everyone ---------------------

    def _listener_get(self, path: str) -> Any:
        """GET ``path`` from llama.cpp's listener with the key (only while it still exists)."""
        sock_path = self._listener_path

        class UnixConnection(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(self.timeout)
                self.sock.connect(sock_path)

        conn = UnixConnection("localhost", timeout=3)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self._api_key}"})
            reply = conn.getresponse()
            body = reply.read()
            if reply.status != 200:
                raise LlmError(f"llama.cpp {path}: HTTP {reply.status}")
            return json.loads(body)
        finally:
            conn.close()

    def _read_facts(self) -> dict[str, Any]:
        """The model's facts llama.cpp knows (template, sizes); {} when they cannot be read."""
        try:
            props = self._listener_get("/props")
            models = self._listener_get("/v1/models")
        except (OSError, LlmError, ValueError):
            return {}
        meta = next(iter(models.get("data") or [{}]), {}).get("meta") or {}
        return {"chat_template": str(props.get("chat_template") or ""),
                "file_type": str(props.get("model_ftype") or ""),
                "n_params": meta.get("n_params"), "n_ctx_train": meta.get("n_ctx_train"),
                "n_embd": meta.get("n_embd"), "n_vocab": meta.get("n_vocab"), "size": meta.get("size")}

    def _close_listener(self) -> None:
        """Delete the listener's socket and directory: nothing can connect to it any more."""
        shutil.rmtree(self._listener_dir, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        """What llama.cpp said about the model at load: chat_template, file_type, n_params,
        n_ctx_train, n_embd, n_vocab, size (values may be missing)."""
        return dict(self._facts)

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
        return self._run("handle_chat_completions", {"messages": messages}, on_token, max_tokens, sampling)

    def stream_prompt(
        self,
        prompt: str,
        on_token: Callable[[str], bool],
        max_tokens: int = 96,
        *,
        sampling: dict | None = None,
    ) -> StreamResult:
        """Continue ``prompt`` as it is, without the chat template (Ollama's ``raw`` generate)."""
        return self._run("handle_completions", {"prompt": prompt}, on_token, max_tokens, sampling)

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """One normalised, mean-pooled vector per text, and the prompt tokens they took.

        Raises LlmRequestError when llama.cpp refuses the input (longer than the context),
        LlmError when this engine was not made with ``embeddings=True``."""
        if not self.embeddings:
            raise LlmError("this engine was loaded without embeddings")
        if not texts:
            return [], 0
        try:
            with self._lock:
                reply = self._srv.handle_embeddings({"input": list(texts)})
        except Exception as e:  # llama.cpp's own complaint about the request
            raise LlmRequestError(f"{type(e).__name__}: {e}") from e
        err = reply.get("error") if isinstance(reply, dict) else "no reply"
        if err:  # an input llama.cpp cannot embed (longer than a batch, ...)
            raise LlmRequestError(str(err.get("message", err)) if isinstance(err, dict) else str(err))
        data = sorted(reply.get("data") or [], key=lambda d: d.get("index", 0))
        vectors = [[float(x) for x in d.get("embedding") or []] for d in data]
        if len(vectors) != len(texts):
            raise LlmError(f"llama.cpp returned {len(vectors)} embeddings for {len(texts)} inputs")
        return vectors, int((reply.get("usage") or {}).get("prompt_tokens") or 0)

    def _run(
        self,
        handler: str,
        request: dict,
        on_token: Callable[[str], bool],
        max_tokens: int,
        sampling: dict | None,
    ) -> StreamResult:
        parts: list[str] = []
        state: dict = {"first": None, "finish": None, "error": None, "n_pred": None, "n_prompt": None,
                       "cancel": False, "chunks": 0}
        t0 = time.perf_counter()

        def callback(chunk: dict) -> bool:
            # Runs on the calling thread with the GIL held; must never raise
            # (the wrapper would swallow it) -- record and stop instead.
            try:
                state["chunks"] += 1
                if "error" in chunk or ("code" in chunk and "choices" not in chunk):
                    err = chunk.get("error", chunk)
                    message = str(err.get("message", err) if isinstance(err, dict) else err)
                    invalid = isinstance(err, dict) and err.get("code") == 400
                    state["error"] = f"{INVALID_REQUEST} {message}" if invalid else message
                    return True
                choice = (chunk.get("choices") or [{}])[0]
                text = (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
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
            except Exception as e:  # includes on_token's own errors
                state["error"] = f"{type(e).__name__}: {e}"
                return True

        request = {
            **request,
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
                getattr(self._srv, handler)(request, callback)
        except Exception as e:  # never crash the worker
            # Raised before any chunk: llama.cpp could not even parse the request (a bad schema, ...).
            prefix = f"{INVALID_REQUEST} " if state["chunks"] == 0 else ""
            state["error"] = f"{prefix}{type(e).__name__}: {e}"

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
