"""``serve-llm``: the embedded model behind an Ollama- and OpenAI-compatible HTTP API.

No Ollama server exists in the registries this project can reach, so this is how the
``ollama`` engine is tested against a real model on loopback; it also lets several kiosks
share one box's model (``[llm] engine = "ollama"``, ``host = "http://box:11434"``), and lets
Home Assistant's Ollama integration, Open WebUI or any OpenAI client use it.

Ollama endpoints (as the official ``ollama`` client calls them):

* ``POST /api/chat``, ``POST /api/generate`` -- ``stream`` true (the default): NDJSON over
  chunked HTTP/1.1, one object per token, then ``{"done": true, "done_reason": "stop" |
  "length", "eval_count", ...}``; false: one object. ``options``: ``num_predict``,
  ``temperature``, ``repeat_penalty``, ``top_p``, ``top_k``, ``min_p``, ``seed``, ``stop``,
  ``presence_penalty``, ``frequency_penalty`` are used; Ollama's other options are checked and
  ignored (``num_ctx`` among them: the context is the server's). ``format`` ("json" or a JSON
  schema) is enforced by a grammar. ``tools``: see "Tool calling". ``generate`` with ``raw``
  continues the prompt without the chat template; ``suffix``, ``images`` and ``think`` are
  refused as Ollama refuses them for a model without those capabilities. An empty chat or
  prompt only "loads" the model (``done_reason: "load"``, ``"unload"`` with keep_alive 0).
* ``POST /api/embed`` (and the older ``/api/embeddings``): mean-pooled, normalised vectors
  from the model itself; ``dimensions`` truncates and renormalises.
* ``POST /api/show``, ``GET /api/tags``, ``GET /api/ps``, ``GET /api/version`` (Vigil's own
  version), ``GET|HEAD /`` ("Ollama is running").
* ``POST /api/pull`` of the served model succeeds at once (streamed as Ollama does); of any
  other model it is a 404: this server downloads nothing. Create, copy, delete, push: 501.

OpenAI endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``
(``stream`` with Server-Sent Events and ``data: [DONE]``; ``stream_options.include_usage``;
``tools``/``tool_choice``; ``response_format`` json_object / json_schema), ``POST
/v1/embeddings``. Errors have OpenAI's shape there, Ollama's elsewhere.

Tool calling works with any gguf, whatever its chat template (``engines/llm/tools.py``): the
tools are listed in the system prompt and the reply is grammar-constrained JSON, a call or a
response. A response streams as ordinary content tokens as it is decoded; a call comes back
as ``message.tool_calls``. After the client appends the tool results (``role: "tool"``), the
next reply may only be a response. With ``format`` too, the reply is a call or the format's JSON.

One request at a time runs on the model (llama.cpp with one slot); the others wait in line
(at most ``max_queue``, then 503). A client that goes away -- mid-stream or while still
waiting -- cancels its generation: the token callback sees the closed socket and returns
True, which stops llama.cpp between two tokens.

Guards (every request gets an answer; ``tools/llm_api.py`` checks the bodies):

* Auth: binding anything but loopback needs a token (``--token`` or ``VIGIL_HTTP__TOKEN``),
  which every request must then send as ``Authorization: Bearer`` (the ollama client sends
  ``OLLAMA_API_KEY``, the openai client its ``api_key``), else 401.
* Bodies: at most ``MAX_BODY_BYTES`` (413 before reading a byte more), with a
  Content-Length (411 otherwise), received within ``BODY_TIMEOUT_S`` (408); prompts bounded
  by the context (400 in microseconds, see ``llm_api.check_prompt_size``).
* Connections: ``pipeline.http_server.GuardedHTTPServer`` -- headers within
  ``HEADER_TIMEOUT_S`` in total, a cap in all and per client address, slow clients evicted
  first.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, UTC
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from core.config import Config
from engines.llm import StreamResult
from engines.llm.embedded import INVALID_REQUEST, EmbeddedLlm, LlmRequestError
from engines.llm.tools import (ToolReply, chat_messages, parse_tools, tool_reply_constraint,  # noqa: F401
                               tool_reply_grammar, tool_reply_schema)
from pipeline.http_server import GuardedHandler, GuardedHTTPServer, is_loopback, token_ok
from tools import llm_api
from tools.llm_api import BadRequest, ChatRequest

log = logging.getLogger("vigil.serve_llm")

DEFAULT_PORT = 11434
DEFAULT_MODEL_NAME = "smollm2:135m"
DEFAULT_NUM_PREDICT = llm_api.DEFAULT_NUM_PREDICT
MAX_NUM_PREDICT = llm_api.MAX_NUM_PREDICT
MAX_BODY_BYTES = 1 << 20  # 1 MiB: far more than a 2048-token context holds
BODY_TIMEOUT_S = 30.0
HEADER_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0  # a kept-alive connection waits this long for its next request
MAX_CONNECTIONS = 64
MAX_PER_CLIENT = 32
NEVER = "9999-12-31T23:59:59Z"  # /api/ps expires_at: the model stays loaded


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def vigil_version() -> str:
    """Vigil's version: the installed package's, else pyproject.toml's (a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vigil")
    except PackageNotFoundError:
        import tomllib

        try:
            with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
                return str(tomllib.load(f)["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0.0.0+unknown"


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` of a gguf ("" when it is not the first key, as llama.cpp writes it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
        (n,) = struct.unpack_from("<Q", head, 24)
        if head[32:32 + n] != b"general.architecture":
            return ""
        (vtype,) = struct.unpack_from("<I", head, 32 + n)
        (m,) = struct.unpack_from("<Q", head, 36 + n)
        return head[44 + n:44 + n + m].decode("utf-8", "replace") if vtype == 8 and m < 64 else ""
    except (OSError, struct.error):
        return ""


class ModelBusy(Exception):
    pass


def check_bind(host: str, token: str) -> None:
    """As the kiosk's HTTP endpoints: anything but loopback needs a token (ValueError)."""
    if not is_loopback(host) and not token:
        raise ValueError(f"refusing to serve the LLM on non-loopback host {host!r} without a token: "
                         "pass --token (or set VIGIL_HTTP__TOKEN), or bind 127.0.0.1")


class _Reply:
    """Reads a reply as it streams: what to send now, and at the end the tool calls and any text left.

    "text": every piece as it comes. "tools": ``ToolReply`` decodes {"response": ...} as it streams,
    or a {"tool_call": ...}. "tools+json": a call or the format's JSON, known only at the end."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.tool = ToolReply()
        self.parts: list[str] = []

    def feed(self, piece: str) -> str:
        self.parts.append(piece)
        if self.kind == "text":
            return piece
        text = self.tool.feed(piece)
        return text if self.kind == "tools" else ""

    def finish(self) -> tuple[list[dict[str, Any]], str]:
        """(Ollama tool_calls, content not sent yet)."""
        if self.kind == "text":
            return [], ""
        calls = self.tool.tool_calls()
        if self.kind == "tools":
            return calls, self.tool.leftover_text()
        return calls, "" if calls else "".join(self.parts)

    def content(self) -> str:
        """The whole answer's text (for a reply sent in one piece)."""
        if self.kind == "text":
            return "".join(self.parts)
        calls, rest = self.finish()
        return (self.tool.text if self.kind == "tools" else "") + rest


class LlmServer:
    """The embedded engine behind an Ollama- and OpenAI-compatible GuardedHTTPServer."""

    def __init__(self, engine: EmbeddedLlm, host: str, port: int, model_name: str = DEFAULT_MODEL_NAME,
                 max_queue: int = 16, token: str = "") -> None:
        check_bind(host, token)
        self.engine = engine
        self.model_name = model_name
        self.token = token or ""
        self.n_ctx = int(getattr(engine, "n_ctx", 2048))
        self.architecture = gguf_architecture(engine.model_path)
        self._model_lock = threading.Lock()  # one generation at a time
        self._slots = threading.BoundedSemaphore(max_queue + 1)  # running + waiting
        self._digest: str | None = None
        self._stats_lock = threading.Lock()
        self.stats = {"requests": 0, "tokens": 0, "cancelled": 0, "errors": 0, "active": 0, "max_active": 0,
                      "tool_requests": 0, "tool_calls": 0, "embeddings": 0, "rejected": 0, "unauthorized": 0}
        self.httpd = GuardedHTTPServer((host, port), _make_handler(self), max_connections=MAX_CONNECTIONS,
                                       max_per_client=MAX_PER_CLIENT, header_timeout_s=HEADER_TIMEOUT_S)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            self.httpd.server_close()
            self.httpd.drop_connections()

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until no generation runs (after a stop, the dropped clients cancel theirs at once)."""
        if self._model_lock.acquire(timeout=timeout_s):
            self._model_lock.release()
            return True
        return False

    def stop(self) -> None:
        """Stop serving (from any thread but the one in serve_forever); returns once stopped."""
        self.httpd.shutdown()

    # ---- the model and what Ollama/OpenAI say about it -------------------------------------

    def knows(self, name: str) -> bool:
        wanted = name.strip()
        names = {self.model_name, self.model_name.split(":")[0], self.engine.model_path.name,
                 self.engine.model_path.stem}
        if ":" not in self.model_name:
            names.add(self.model_name + ":latest")
        return wanted in names or (wanted.endswith(":latest") and wanted[: -len(":latest")] in names)

    def require(self, name: str) -> None:
        if not self.knows(name):
            raise BadRequest(f'model "{name}" not found, try pulling it first', 404)

    def digest(self) -> str:
        if self._digest is None:
            h = hashlib.sha256()
            with open(self.engine.model_path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            self._digest = h.hexdigest()
        return self._digest

    def modified_at(self) -> str:
        mtime = self.engine.model_path.stat().st_mtime
        return datetime.fromtimestamp(mtime, UTC).isoformat().replace("+00:00", "Z")

    def details(self) -> dict[str, Any]:
        facts = self.engine.describe()
        n_params = facts.get("n_params")
        size = ""
        if isinstance(n_params, int) and n_params > 0:
            size = f"{n_params / 1e9:.1f}B" if n_params >= 1e9 else f"{n_params / 1e6:.0f}M"
        family = self.architecture
        return {"parent_model": "", "format": "gguf", "family": family, "families": [family] if family else [],
                "parameter_size": size, "quantization_level": facts.get("file_type") or ""}

    def _entry(self) -> dict[str, Any]:
        return {"name": self.model_name, "model": self.model_name, "modified_at": self.modified_at(),
                "size": self.engine.model_path.stat().st_size, "digest": self.digest(), "details": self.details()}

    def tags(self) -> dict[str, Any]:
        return {"models": [self._entry()]}

    def ps(self) -> dict[str, Any]:
        return {"models": [{**self._entry(), "expires_at": NEVER, "size_vram": 0, "context_length": self.n_ctx}]}

    def capabilities(self) -> list[str]:
        return ["completion", "tools"] + (["embedding"] if self.engine.embeddings else [])

    def show(self) -> dict[str, Any]:
        facts = self.engine.describe()
        arch = self.architecture or "general"
        info = {"general.architecture": self.architecture, "general.parameter_count": facts.get("n_params"),
                "general.file_type": facts.get("file_type"), f"{arch}.context_length": facts.get("n_ctx_train"),
                f"{arch}.embedding_length": facts.get("n_embd"), f"{arch}.vocab_size": facts.get("n_vocab")}
        parameters = {"num_ctx": self.n_ctx, "num_predict": DEFAULT_NUM_PREDICT,
                      "temperature": self.engine.temperature, "repeat_penalty": self.engine.repeat_penalty}
        template = facts.get("chat_template") or ""
        modelfile = "\n".join([f"# served by vigil serve-llm {vigil_version()}", f"FROM {self.engine.model_path}",
                               f'TEMPLATE """{template}"""'] + [f"PARAMETER {k} {v}" for k, v in parameters.items()])
        return {"license": "", "modelfile": modelfile + "\n", "template": template,
                "parameters": "\n".join(f"{k:<24}{v}" for k, v in parameters.items()),
                "details": self.details(), "model_info": {k: v for k, v in info.items() if v is not None},
                "capabilities": self.capabilities(), "modified_at": self.modified_at()}

    def openai_model(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": int(self.engine.model_path.stat().st_mtime),
                "owned_by": "vigil"}

    # ---- running requests ----------------------------------------------------------------

    @contextlib.contextmanager
    def _turn(self, client_gone: Callable[[], bool]) -> Iterator[bool]:
        """Wait for the model (a place in line, then the lock); yields False when the client left meanwhile."""
        if not self._slots.acquire(blocking=False):
            raise ModelBusy("too many requests waiting for the model")
        try:
            while not self._model_lock.acquire(timeout=0.2):
                if client_gone():
                    self.count("cancelled")
                    yield False
                    return
            try:
                if client_gone():
                    self.count("cancelled")
                    yield False
                    return
                with self._stats_lock:
                    self.stats["active"] += 1
                    self.stats["max_active"] = max(self.stats["max_active"], self.stats["active"])
                try:
                    yield True
                finally:
                    self.count("active", -1)
            finally:
                self._model_lock.release()
        finally:
            self._slots.release()

    def generate(self, req: ChatRequest, on_token: Callable[[str], bool],
                 client_gone: Callable[[], bool]) -> StreamResult | None:
        """Run one turn when the model is free; None if the client left while waiting."""
        with self._turn(client_gone) as ready:
            if not ready:
                return None
            sampling = dict(req.sampling)
            sampling.update(req.constraint or {})

            def counted(text: str) -> bool:
                self.count("tokens")
                return on_token(text)

            if req.raw_prompt is not None:
                result = self.engine.stream_prompt(req.raw_prompt, counted, max_tokens=req.max_tokens,
                                                   sampling=sampling)
            else:
                result = self.engine.stream(req.messages, counted, max_tokens=req.max_tokens, sampling=sampling)
            if result.finish_reason == "cancelled":
                self.count("cancelled")
            elif result.finish_reason == "error":
                self.count("errors")
            return result
        return None  # unreachable: the context manager always yields

    def embed(self, texts: list[str], client_gone: Callable[[], bool]) -> tuple[list[list[float]], int] | None:
        if not self.engine.embeddings:
            raise BadRequest("this server was started without embeddings", 501)
        with self._turn(client_gone) as ready:
            if not ready:
                return None
            try:
                vectors, n = self.engine.embed(texts)
            except LlmRequestError as exc:
                raise BadRequest(str(exc)) from None
            self.count("embeddings", len(texts))
            return vectors, n
        return None


def _stats(server: LlmServer, result: StreamResult) -> dict[str, Any]:
    ns = int(result.total_ms * 1e6)
    first_ns = int((result.first_token_ms or 0.0) * 1e6)
    return {"done_reason": "length" if result.finish_reason == "length" else "stop",
            "total_duration": ns, "load_duration": 0,
            "prompt_eval_count": result.prompt_tokens or 0, "prompt_eval_duration": first_ns,
            "eval_count": result.n_tokens, "eval_duration": max(0, ns - first_ns)}


def _failure(result: StreamResult) -> BadRequest:
    """A failed turn as the HTTP error to answer: 400 when llama.cpp refused the request itself."""
    text = result.error or "generation failed"
    if text.startswith(INVALID_REQUEST):
        return BadRequest(text[len(INVALID_REQUEST):].strip(), 400)
    return BadRequest(text, 500)


def _openai_calls(calls: list[dict[str, Any]], stream: bool = False) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls):
        fn = call["function"]
        item = {"id": f"call_{secrets.token_hex(8)}", "type": "function",
                "function": {"name": fn["name"], "arguments": json.dumps(fn.get("arguments") or {})}}
        out.append({"index": i, **item} if stream else item)
    return out


def _normalised(vector: list[float], dims: int | None) -> list[float]:
    if dims is None or dims >= len(vector):
        return vector
    cut = vector[:dims]
    norm = math.sqrt(sum(x * x for x in cut)) or 1.0
    return [x / norm for x in cut]


def _encoded(vector: list[float], encoding: str) -> Any:
    """OpenAI's embedding encodings: a list of floats, or base64 of little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def _make_handler(server: LlmServer) -> type[GuardedHandler]:
    class Handler(GuardedHandler):
        protocol_version = "HTTP/1.1"
        server_version = "vigil-serve-llm"
        io_timeout_s = 60.0  # a stalled read or write of a request in progress
        idle_timeout_s = IDLE_TIMEOUT_S

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: debug log only
            log.debug("%s " + fmt, self.client_address[0], *args)

        # ---- plumbing ------------------------------------------------------------

        def _openai(self) -> bool:
            return self.path.startswith("/v1/")

        def _send_json(self, status: int, body: Any, extra: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _send_error(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
            if self._openai():
                kind = {401: "authentication_error", 404: "not_found_error", 503: "server_error",
                        500: "server_error"}.get(status, "invalid_request_error")
                code = "model_not_found" if status == 404 and "model" in message else None
                body: Any = {"error": {"message": message, "type": kind, "param": None, "code": code}}
            else:
                body = {"error": message}
            self._send_json(status, body, extra)

        def _send_text(self, status: int, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _start_stream(self, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _line(self, obj: dict[str, Any]) -> None:  # NDJSON (Ollama)
            self._chunk(json.dumps(obj, ensure_ascii=False).encode() + b"\n")

        def _event(self, obj: Any) -> None:  # Server-Sent Events (OpenAI)
            data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
            self._chunk(b"data: " + data.encode() + b"\n\n")

        def _end_stream(self) -> None:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _client_gone(self) -> bool:
            """True when the peer closed its side (EOF pending) or the socket failed."""
            sock = self.connection
            try:
                readable, _, _ = select.select([sock], [], [], 0)
                if not readable:
                    return False
                return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                return False
            except OSError:
                return True

        def _read_body(self) -> dict[str, Any]:
            """The JSON body, bounded in size and time; BadRequest (the connection then closes) otherwise."""
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                raise BadRequest("send the body with a Content-Length (chunked bodies are not accepted)", 411)
            raw_length = (self.headers.get("Content-Length") or "0").strip()
            if not raw_length.isdigit():
                self.close_connection = True
                raise BadRequest(f"bad Content-Length {raw_length[:40]!r}")
            length = int(raw_length)
            if length > MAX_BODY_BYTES:
                self.linger_on_close()  # the body stays unread: this connection cannot go on
                raise BadRequest(f"the request body is {length} bytes; at most {MAX_BODY_BYTES} are accepted", 413)
            try:
                self.read_deadline(BODY_TIMEOUT_S)
                raw = self.rfile.read(length) if length else b""
            except TimeoutError:
                self.close_connection = True
                raise BadRequest(f"the request body did not arrive within {BODY_TIMEOUT_S:.0f} s", 408) from None
            finally:
                self.read_deadline(None)
            if len(raw) < length:
                self.close_connection = True
                raise ConnectionError("the client closed the connection before sending its body")
            return llm_api.parse_body(raw)

        def _authorized(self) -> bool:
            if token_ok(server.token, self.headers, parse_qs(urlsplit(self.path).query)):
                return True
            server.count("unauthorized")
            self._send_error(401, "unauthorized: send Authorization: Bearer <token>",
                             {"WWW-Authenticate": 'Bearer realm="vigil"'})
            return False

        def _handle(self, route: Callable[[], None]) -> None:
            """Run a route; whatever happens, the request gets an answer (or the connection closes)."""
            self._started = False
            try:
                if self._authorized():
                    route()
            except BadRequest as exc:
                if exc.status >= 500:
                    log.warning("serve-llm: %s %s failed: %s", self.command, self.path, exc)
                else:
                    server.count("rejected")
                self._fail(exc.status, str(exc))
            except ModelBusy as exc:
                self._fail(503, str(exc), {"Retry-After": "1"})
            except (ConnectionError, TimeoutError):
                self.close_connection = True
            except Exception as exc:  # a bug must still answer, and never kill the server
                log.exception("serve-llm: %s %s failed", self.command, self.path)
                self._fail(500, f"internal error: {type(exc).__name__}")

        def _fail(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
            try:
                if not self._started:
                    self._send_error(status, message, extra)
                else:  # headers are out: an error line inside the stream, as Ollama does
                    (self._event if self._openai() else self._line)(
                        {"error": {"message": message, "code": status} if self._openai() else message})
                    self._end_stream()
            except OSError:
                self.close_connection = True

        # ---- methods -------------------------------------------------------------

        def do_HEAD(self) -> None:
            self._handle(self._get)

        def do_GET(self) -> None:
            self._handle(self._get)

        def do_POST(self) -> None:
            self._handle(self._post)

        def do_DELETE(self) -> None:
            self._handle(self._unsupported)

        def _get(self) -> None:
            path = urlsplit(self.path).path.rstrip("/") or "/"
            if path == "/":
                self._send_text(200, "Ollama is running")
            elif path == "/api/version":
                self._send_json(200, {"version": vigil_version()})
            elif path == "/api/tags":
                self._send_json(200, server.tags())
            elif path == "/api/ps":
                self._send_json(200, server.ps())
            elif path == "/v1/models":
                self._send_json(200, {"object": "list", "data": [server.openai_model()]})
            elif path.startswith("/v1/models/"):
                server.require(path[len("/v1/models/"):])
                self._send_json(200, server.openai_model())
            elif path in POST_ROUTES:
                raise BadRequest(f"{path} takes POST", 405)
            else:
                raise BadRequest(f"{path} not found", 404)

        def _post(self) -> None:
            path = urlsplit(self.path).path.rstrip("/")
            route = POST_ROUTES.get(path)
            if route is None:
                self.close_connection = True  # its body is not read
                raise BadRequest(f"{path} not found", 404)
            body = self._read_body()
            getattr(self, route)(body)

        def _unsupported(self, body: dict[str, Any] | None = None) -> None:
            if body is None:
                self.close_connection = True  # DELETE: its body is not read
            raise BadRequest(f"serve-llm serves one fixed model ({server.model_name}): "
                             f"{urlsplit(self.path).path} is not supported", 501)

        # ---- Ollama --------------------------------------------------------------

        def _loaded(self, req: ChatRequest, field: str) -> None:
            """Ollama's reply to an empty chat or prompt: the model is (and stays) loaded."""
            unload = req.keep_alive in (0, "0", "0s")
            self._send_json(200, {"model": server.model_name, "created_at": _now_iso(),
                                  **({"message": {"role": "assistant", "content": ""}} if field == "message"
                                     else {"response": ""}),
                                  "done": True, "done_reason": "unload" if unload else "load"})

        def _ollama_turn(self, req: ChatRequest, field: str) -> None:
            """/api/chat (field "message") and /api/generate (field "response")."""
            server.require(req.model)
            server.count("requests")
            if not req.messages and req.raw_prompt is None:
                self._loaded(req, field)
                return
            if req.tools:
                server.count("tool_requests")
            reply = _Reply(req.reply_kind)

            def piece(text: str) -> dict[str, Any]:
                body = {"role": "assistant", "content": text} if field == "message" else text
                return {"model": server.model_name, "created_at": _now_iso(), field: body, "done": False}

            def on_token(token: str) -> bool:
                text = reply.feed(token)
                if not req.stream:
                    return self._client_gone()
                if not text:
                    return self._client_gone()
                try:
                    if not self._started:
                        self._start_stream("application/x-ndjson")
                        self._started = True
                    self._line(piece(text))
                    return False
                except OSError:  # BrokenPipe / ConnectionReset: the client went away
                    return True

            result = self._run(req, on_token)
            if result is None:
                return
            calls, rest = reply.finish()
            server.count("tool_calls", len(calls))
            if not req.stream:
                message = {"role": "assistant", "content": reply.content()}
                if calls:
                    message["tool_calls"] = calls
                final = piece("")
                final[field] = message if field == "message" else reply.content()
                self._send_json(200, {**final, "done": True, **_stats(server, result)})
                return
            if not self._started:
                self._start_stream("application/x-ndjson")
                self._started = True
            if calls or rest:  # Ollama sends tool calls in a chunk of their own
                last = piece(rest)
                if calls and field == "message":
                    last["message"]["tool_calls"] = calls
                self._line(last)
            self._line({**piece(""), "done": True, **_stats(server, result)})
            self._end_stream()

        def _run(self, req: ChatRequest, on_token: Callable[[str], bool]) -> StreamResult | None:
            """One turn on the model; None when the client is gone (the connection closes)."""
            result = server.generate(req, on_token, self._client_gone)
            if result is None or result.finish_reason == "cancelled":
                self.close_connection = True
                return None
            if result.finish_reason == "error":
                raise _failure(result)
            return result

        def api_chat(self, body: dict[str, Any]) -> None:
            self._ollama_turn(llm_api.ollama_chat(body, server.n_ctx), "message")

        def api_generate(self, body: dict[str, Any]) -> None:
            self._ollama_turn(llm_api.ollama_generate(body, server.n_ctx), "response")

        def api_embed(self, body: dict[str, Any]) -> None:
            server.require(llm_api.model_name(body))
            llm_api.check_keep_alive(body)
            inputs = llm_api.embed_inputs(body, server.n_ctx)
            t0 = time.perf_counter()
            done = server.embed(inputs, self._client_gone)
            if done is None:
                self.close_connection = True
                return
            vectors, n = done
            dims = llm_api.embed_dimensions(body, len(vectors[0])) if vectors else None
            self._send_json(200, {"model": server.model_name, "embeddings": [_normalised(v, dims) for v in vectors],
                                  "total_duration": int((time.perf_counter() - t0) * 1e9), "load_duration": 0,
                                  "prompt_eval_count": n})

        def api_embeddings(self, body: dict[str, Any]) -> None:  # the older single-prompt form
            server.require(llm_api.model_name(body))
            inputs = llm_api.embed_inputs(body, server.n_ctx, key="prompt")
            done = server.embed([t for t in inputs if t], self._client_gone)
            if done is None:
                self.close_connection = True
                return
            self._send_json(200, {"embedding": done[0][0] if done[0] else []})

        def api_show(self, body: dict[str, Any]) -> None:
            server.require(llm_api.model_name(body))
            self._send_json(200, server.show())

        def api_pull(self, body: dict[str, Any]) -> None:
            name = llm_api.model_name(body)
            stream = llm_api.stream_flag(body, True)
            if not server.knows(name):
                raise BadRequest(f'pull model manifest: "{name}" is not available here: serve-llm serves only '
                                 f'"{server.model_name}" and downloads nothing', 404)
            if not stream:
                self._send_json(200, {"status": "success"})
                return
            size, digest = server.engine.model_path.stat().st_size, server.digest()
            self._start_stream("application/x-ndjson")
            self._started = True
            for step in ({"status": "pulling manifest"},
                         {"status": f"pulling {digest[:12]}", "digest": f"sha256:{digest}", "total": size,
                          "completed": size},
                         {"status": "verifying sha256 digest"}, {"status": "writing manifest"},
                         {"status": "success"}):
                self._line(step)
            self._end_stream()

        # ---- OpenAI --------------------------------------------------------------

        def v1_chat(self, body: dict[str, Any]) -> None:
            req = llm_api.openai_chat(body, server.n_ctx)
            server.require(req.model)
            server.count("requests")
            if req.tools:
                server.count("tool_requests")
            usage_wanted = bool((body.get("stream_options") or {}).get("include_usage"))
            reply = _Reply(req.reply_kind)
            ident, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())

            def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                return {"id": ident, "object": "chat.completion.chunk", "created": created,
                        "model": server.model_name, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

            def start() -> None:
                if not self._started:
                    self._start_stream("text/event-stream; charset=utf-8")
                    self._started = True
                    self._event(chunk({"role": "assistant", "content": ""}))

            def on_token(token: str) -> bool:
                text = reply.feed(token)
                if not req.stream or not text:
                    return self._client_gone()
                try:
                    start()
                    self._event(chunk({"content": text}))
                    return False
                except OSError:
                    return True

            result = self._run(req, on_token)
            if result is None:
                return
            calls, rest = reply.finish()
            server.count("tool_calls", len(calls))
            finish = "tool_calls" if calls else ("length" if result.finish_reason == "length" else "stop")
            prompt = result.prompt_tokens or 0
            usage = {"prompt_tokens": prompt, "completion_tokens": result.n_tokens,
                     "total_tokens": prompt + result.n_tokens}
            if not req.stream:
                message: dict[str, Any] = {"role": "assistant", "content": None if calls else reply.content()}
                if calls:
                    message["tool_calls"] = _openai_calls(calls)
                self._send_json(200, {"id": ident, "object": "chat.completion", "created": created,
                                      "model": server.model_name, "usage": usage,
                                      "choices": [{"index": 0, "message": message, "finish_reason": finish}]})
                return
            start()
            if rest:
                self._event(chunk({"content": rest}))
            if calls:
                self._event(chunk({"tool_calls": _openai_calls(calls, stream=True)}))
            self._event(chunk({}, finish))
            if usage_wanted:
                self._event({"id": ident, "object": "chat.completion.chunk", "created": created,
                             "model": server.model_name, "choices": [], "usage": usage})
            self._event("[DONE]")
            self._end_stream()

        def v1_embeddings(self, body: dict[str, Any]) -> None:
            server.require(llm_api.model_name(body))
            inputs = llm_api.embed_inputs(body, server.n_ctx)
            encoding = body.get("encoding_format") or "float"
            if encoding not in ("float", "base64"):  # the openai client asks for base64 by default
                raise BadRequest('encoding_format must be "float" or "base64"')
            done = server.embed(inputs, self._client_gone)
            if done is None:
                self.close_connection = True
                return
            vectors, n = done
            dims = llm_api.embed_dimensions(body, len(vectors[0])) if vectors else None
            self._send_json(200, {"object": "list", "model": server.model_name,
                                  "data": [{"object": "embedding", "index": i,
                                            "embedding": _encoded(_normalised(v, dims), encoding)}
                                           for i, v in enumerate(vectors)],
                                  "usage": {"prompt_tokens": n, "total_tokens": n}})

    return Handler


POST_ROUTES = {
    "/api/chat": "api_chat", "/api/generate": "api_generate", "/api/embed": "api_embed",
    "/api/embeddings": "api_embeddings", "/api/show": "api_show", "/api/pull": "api_pull",
    "/api/create": "_unsupported", "/api/copy": "_unsupported", "/api/delete": "_unsupported",
    "/api/push": "_unsupported",
    "/v1/chat/completions": "v1_chat", "/v1/embeddings": "v1_embeddings",
}


def load_engine(config: Config, model_path: str | os.PathLike[str]) -> EmbeddedLlm:
    cfg = config.llm
    engine = EmbeddedLlm(Path(model_path), n_threads=cfg.threads, repeat_penalty=cfg.repeat_penalty,
                         temperature=cfg.temperature, embeddings=True,
                         n_prompt_threads=cfg.prompt_threads)
    engine.warm(cfg.system_prompt)  # Vigil kiosks send this prefix: have it cached
    return engine


def serve(config: Config, host: str, port: int, model_path: str | os.PathLike[str],
          ready: Callable[[LlmServer], Any] | None = None, *, model_name: str = DEFAULT_MODEL_NAME,
          max_queue: int = 16, token: str | None = None) -> int:
    """Serve the embedded model on ``host:port`` until SIGTERM/SIGINT or ``server.stop()``.

    ``port`` 0 picks a free port. ``token`` (default: ``[http] token``, i.e. VIGIL_HTTP__TOKEN)
    is required on a non-loopback host: ValueError otherwise, before the model loads.
    ``ready(server)`` is called once the socket listens (``server.address`` / ``server.url`` /
    ``server.stop()`` / ``server.stats``). Signal handlers are installed only when called from
    the main thread. Returns 0.
    """
    token = config.http.token if token is None else token
    check_bind(host, token)  # before the model loads
    engine = load_engine(config, model_path)
    server = LlmServer(engine, host, port, model_name=model_name, max_queue=max_queue, token=token)
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum: int, _frame: Any) -> None:
            log.info("serve-llm: signal %d, stopping", signum)
            # shutdown() waits for serve_forever(), which runs in this (main) thread: call it from another
            threading.Thread(target=server.stop, daemon=True).start()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    log.info("serve-llm: %s on %s (model %s, load %.0f ms)%s", model_name, server.url, engine.model_path,
             engine.load_ms, " with token" if token else "")
    try:
        if ready is not None:
            ready(server)
        server.serve_forever()
        # Generation threads are daemons inside llama.cpp: let them stop before the interpreter exits.
        if not server.wait_idle():
            log.warning("serve-llm: a generation is still running at exit")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.serve_llm`` (the CLI's ``serve-llm`` calls :func:`serve` too)."""
    import argparse

    from core.config import load_config

    parser = argparse.ArgumentParser(prog="serve-llm", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--model", default="", help="gguf path (default: the provisioned SmolLM2-135M)")
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME, help="model name clients ask for")
    parser.add_argument("--token", default=None, help="required Bearer token (default: VIGIL_HTTP__TOKEN); "
                                                      "needed on any host but loopback")
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    config = load_config(args.config) if args.config else load_config()
    # [llm] model is a gguf path only for the embedded engine (for ollama it names a remote model)
    model = args.model or (config.llm.model if config.llm.engine == "embedded" else "")
    if not model:
        from models.provision import ensure_models

        model = str(ensure_models(progress=False).llm)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return serve(config, args.host, args.port, model, model_name=args.name, token=args.token,
                     ready=lambda s: print(f"serve-llm listening on {s.url}", flush=True))
    except (ValueError, OSError) as exc:
        print(f"serve-llm: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
