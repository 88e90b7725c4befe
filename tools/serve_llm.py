"""``serve-llm``: an Ollama-API-compatible HTTP endpoint over the embedded model.

No Ollama server exists in the registries this project can reach, so this is how the
``ollama`` engine is tested against a real model on loopback; it also lets several
kiosks share one box's model (``[llm] engine = "ollama"``, ``host = "http://box:11434"``).

Endpoints (the subset the official clients use for chat):

* ``POST /api/chat`` -- ``stream`` true (the Ollama default): NDJSON over chunked HTTP/1.1,
  one ``{"model","created_at","message":{"role":"assistant","content":...},"done":false}``
  per token, then ``{"done":true,"done_reason":"stop"|"length","eval_count":...,...}``;
  ``stream`` false: one object. Options honoured: ``num_predict``, ``temperature``,
  ``repeat_penalty``, ``top_p``, ``top_k``, ``min_p``, ``seed``, ``stop``. An unknown
  model is a 404 ``{"error": "model ... not found"}`` as in Ollama.
  ``tools`` (Ollama/OpenAI function specs): see "Tool calling" below.
* ``GET /api/tags``, ``GET /api/version``, ``GET|HEAD /`` ("Ollama is running").

Tool calling works with any gguf, whatever its chat template (``workers/llm_tools.py``):
the tools are listed in the system prompt and the reply is grammar-constrained JSON, a call
or a response. A response streams as ordinary ``message.content`` tokens as it is decoded;
a call comes back as Ollama's ``message.tool_calls``
(``[{"function": {"name", "arguments": {...}}}]``). After the client appends the tool
results (``role: "tool"``), the next reply may only be a response. The system prompt plus
the tool list is a stable prefix, so llama.cpp's prompt cache keeps it between requests.

One request at a time runs on the model (llama.cpp with one slot); the others wait in
line (at most ``max_queue``, then 503). A client that goes away -- mid-stream or while
still waiting -- cancels its generation: the token callback sees the closed socket and
returns True, which stops llama.cpp between two tokens.

Loopback by default; there is no authentication, so bind elsewhere only on a trusted LAN.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import select
import signal
import socket
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from core.config import Config
from engines.llm.embedded import EmbeddedLlm
from engines.llm import StreamResult
from engines.llm.tools import (ToolReply, chat_messages, parse_tools, tool_reply_constraint,  # noqa: F401
                               tool_reply_grammar, tool_reply_schema)

log = logging.getLogger("vigil.serve_llm")

DEFAULT_PORT = 11434
DEFAULT_MODEL_NAME = "smollm2:135m"
DEFAULT_NUM_PREDICT = 256  # when the request has none (Ollama's own default is unbounded)
MAX_NUM_PREDICT = 2048
API_VERSION = "0.0.0"  # not an Ollama release; clients only print it
OPTION_KEYS = ("temperature", "repeat_penalty", "top_p", "top_k", "min_p", "seed", "stop",
               "presence_penalty", "frequency_penalty")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class ModelBusy(Exception):
    pass


class _Httpd(ThreadingHTTPServer):
    """ThreadingHTTPServer that can drop its open connections when it stops."""

    daemon_threads = True
    block_on_close = False  # stop() must not wait for idle keep-alive connections

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):  # a client that went away: routine
            log.debug("client %s: %s", client_address, exc)
        else:
            log.exception("serve-llm: error while handling a request from %s", client_address)

    def drop_connections(self) -> None:
        """Shut every open connection down: handlers end, running generations see the client gone."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class LlmServer:
    """The embedded engine behind an Ollama-compatible ThreadingHTTPServer."""

    def __init__(self, engine: EmbeddedLlm, host: str, port: int, model_name: str = DEFAULT_MODEL_NAME,
                 max_queue: int = 16) -> None:
        self.engine = engine
        self.model_name = model_name
        self._model_lock = threading.Lock()  # one generation at a time
        self._slots = threading.BoundedSemaphore(max_queue + 1)  # running + waiting
        self._digest: str | None = None
        self._stats_lock = threading.Lock()
        self.stats = {"requests": 0, "tokens": 0, "cancelled": 0, "errors": 0, "active": 0,
                      "max_active": 0, "tool_requests": 0, "tool_calls": 0}
        self.httpd = _Httpd((host, port), _make_handler(self))
        self._stopped = threading.Event()

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
            self._stopped.set()

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until no generation runs (after a stop, the dropped clients cancel theirs at once)."""
        if self._model_lock.acquire(timeout=timeout_s):
            self._model_lock.release()
            return True
        return False

    def stop(self) -> None:
        """Stop serving (from any thread but the one in serve_forever); returns once stopped."""
        self.httpd.shutdown()

    # ---- model ---------------------------------------------------------------------------

    def knows(self, name: str) -> bool:
        wanted = name.strip()
        names = {self.model_name, self.model_name.split(":")[0], self.engine.model_path.name,
                 self.engine.model_path.stem}
        if ":" not in self.model_name:
            names.add(self.model_name + ":latest")
        return wanted in names or (wanted.endswith(":latest") and wanted[: -len(":latest")] in names)

    def digest(self) -> str:
        if self._digest is None:
            h = hashlib.sha256()
            with open(self.engine.model_path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            self._digest = h.hexdigest()
        return self._digest

    def tags(self) -> dict[str, Any]:
        path = self.engine.model_path
        st = path.stat()
        quant = path.stem.split(".")[-1] if "." in path.stem else "unknown"
        return {"models": [{
            "name": self.model_name, "model": self.model_name,
            "modified_at": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat().replace("+00:00", "Z"),
            "size": st.st_size, "digest": self.digest(),
            "details": {"format": "gguf", "family": "llama", "families": ["llama"], "parent_model": "",
                        "parameter_size": "", "quantization_level": quant},
        }]}

    def generate(self, messages: list[dict], options: dict[str, Any], on_token: Callable[[str], bool],
                 client_gone: Callable[[], bool], schema: dict[str, Any] | None = None) -> StreamResult | None:
        """Run one generation when the model is free; None if the client left while waiting.

        ``schema``: a JSON schema the reply must follow (llama.cpp turns it into a grammar),
        or ``{"grammar": GBNF}``."""
        if not self._slots.acquire(blocking=False):
            raise ModelBusy("too many requests waiting for the model")
        try:
            while not self._model_lock.acquire(timeout=0.2):
                if client_gone():
                    self.count("cancelled")
                    return None
            try:
                if client_gone():
                    self.count("cancelled")
                    return None
                with self._stats_lock:
                    self.stats["active"] += 1
                    self.stats["max_active"] = max(self.stats["max_active"], self.stats["active"])
                num_predict = options.get("num_predict")
                if not isinstance(num_predict, int) or num_predict < 0:
                    num_predict = DEFAULT_NUM_PREDICT
                num_predict = min(num_predict, MAX_NUM_PREDICT)
                sampling = {k: options[k] for k in OPTION_KEYS if k in options}
                if schema is not None and "grammar" in schema:  # from tool_reply_constraint()
                    sampling["grammar"] = schema["grammar"]
                elif schema is not None:
                    sampling["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}

                def counted(text: str) -> bool:
                    self.count("tokens")
                    return on_token(text)

                result = self.engine.stream(messages, counted, max_tokens=max(1, num_predict), sampling=sampling)
                if result.finish_reason == "cancelled":
                    self.count("cancelled")
                elif result.finish_reason == "error":
                    self.count("errors")
                return result
            finally:
                self.count("active", -1)
                self._model_lock.release()
        finally:
            self._slots.release()


def _final_chunk(server: LlmServer, result: StreamResult, content: str | None,
                 tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content if content is not None else ""}
    if tool_calls:
        message["tool_calls"] = tool_calls
    ns = int(result.total_ms * 1e6)
    first_ns = int((result.first_token_ms or 0.0) * 1e6)
    return {
        "model": server.model_name, "created_at": _now_iso(), "message": message, "done": True,
        "done_reason": "length" if result.finish_reason == "length" else "stop",
        "total_duration": ns, "load_duration": 0,
        "prompt_eval_count": result.prompt_tokens or 0, "prompt_eval_duration": first_ns,
        "eval_count": result.n_tokens, "eval_duration": max(0, ns - first_ns),
    }


def _make_handler(server: LlmServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "vigil-serve-llm"
        timeout = 60  # an idle keep-alive connection is dropped after this

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: debug log only
            log.debug("%s " + fmt, self.client_address[0], *args)

        # ---- plumbing ------------------------------------------------------------

        def _send_json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _send_text(self, status: int, text: str, head_only: bool = False) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head_only:
                self.wfile.write(data)

        def _chunk(self, obj: dict[str, Any]) -> None:
            line = json.dumps(obj, ensure_ascii=False).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
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

        # ---- routes --------------------------------------------------------------

        def do_HEAD(self) -> None:  # noqa: N802
            if self.path in ("/", ""):
                self._send_text(200, "Ollama is running", head_only=True)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?")[0]
            if path in ("/", ""):
                self._send_text(200, "Ollama is running")
            elif path == "/api/version":
                self._send_json(200, {"version": API_VERSION})
            elif path == "/api/tags":
                self._send_json(200, server.tags())
            else:
                self._send_json(404, {"error": f"{path} not found"})

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?")[0]
            try:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length > 0 else b""
            except (ValueError, OSError):
                self.close_connection = True
                return
            if path != "/api/chat":
                self._send_json(404, {"error": f"{path} not found"})
                return
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the request body must be a JSON object")
                messages = body.get("messages") or []
                if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                    raise ValueError("messages must be a list of objects")
                tools = parse_tools(body.get("tools"))
                messages, answer_only = chat_messages(messages, tools)
                options = body.get("options") or {}
                if not isinstance(options, dict):
                    raise ValueError("options must be an object")
            except ValueError as exc:  # includes JSONDecodeError
                self._send_json(400, {"error": str(exc)})
                return
            model = str(body.get("model") or "")
            if not server.knows(model):
                self._send_json(404, {"error": f'model "{model}" not found, try pulling it first'})
                return
            server.count("requests")
            if not messages:  # Ollama: an empty chat only loads the model
                self._send_json(200, {"model": server.model_name, "created_at": _now_iso(),
                                      "message": {"role": "assistant", "content": ""},
                                      "done": True, "done_reason": "load"})
                return
            schema = tool_reply_constraint(tools, answer_only) if tools else None
            if tools:
                server.count("tool_requests")
            if body.get("stream", True):
                self._chat_stream(messages, options, schema)
            else:
                self._chat_once(messages, options, schema)

        def _generate(self, messages: list[dict], options: dict[str, Any], on_token,
                      schema: dict[str, Any] | None = None) -> Any | None:
            """Run one generation; None when it already ended the exchange (queue full, client gone)."""
            try:
                result = server.generate(messages, options, on_token, self._client_gone, schema)
            except ModelBusy as exc:
                self._send_json(503, {"error": str(exc)})
                return None
            if result is None or result.finish_reason == "cancelled":
                self.close_connection = True
                return None
            return result

        def _chat_once(self, messages: list[dict], options: dict[str, Any],
                       schema: dict[str, Any] | None = None) -> None:
            result = self._generate(messages, options, lambda _t: self._client_gone(), schema)
            if result is None:
                return
            if result.finish_reason == "error":
                self._send_json(500, {"error": result.error or "generation failed"})
                return
            if schema is None:
                self._send_json(200, _final_chunk(server, result, result.text))
                return
            reply = ToolReply()
            reply.feed(result.text)
            calls = reply.tool_calls()
            server.count("tool_calls", len(calls))
            self._send_json(200, _final_chunk(server, result, reply.text or reply.leftover_text(), calls))

        def _chat_stream(self, messages: list[dict], options: dict[str, Any],
                         schema: dict[str, Any] | None = None) -> None:
            headers_sent = False
            reply = ToolReply() if schema is not None else None

            def start() -> None:
                nonlocal headers_sent
                if not headers_sent:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-ndjson")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    headers_sent = True

            def on_token(text: str) -> bool:
                if self._client_gone():
                    return True
                if reply is not None:  # constrained JSON: stream only the decoded response text
                    text = reply.feed(text)
                    if not text:
                        return False
                try:
                    start()
                    self._chunk({"model": server.model_name, "created_at": _now_iso(),
                                 "message": {"role": "assistant", "content": text}, "done": False})
                    return False
                except OSError:  # BrokenPipe / ConnectionReset: the client went away
                    return True

            result = self._generate(messages, options, on_token, schema)
            if result is None:
                return
            try:
                if result.finish_reason == "error" and not headers_sent:
                    self._send_json(500, {"error": result.error or "generation failed"})
                    return
                start()
                if result.finish_reason == "error":  # as Ollama does: an error line inside the stream
                    self._chunk({"error": result.error or "generation failed"})
                elif reply is not None:
                    calls = reply.tool_calls()
                    server.count("tool_calls", len(calls))
                    leftover = reply.leftover_text()
                    if calls or leftover:  # Ollama sends tool calls in a chunk of their own
                        self._chunk({"model": server.model_name, "created_at": _now_iso(), "done": False,
                                     "message": {"role": "assistant", "content": leftover,
                                                 **({"tool_calls": calls} if calls else {})}})
                    self._chunk(_final_chunk(server, result, ""))
                else:
                    self._chunk(_final_chunk(server, result, ""))
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                self.close_connection = True

    return Handler


def load_engine(config: Config, model_path: str | os.PathLike[str]) -> EmbeddedLlm:
    cfg = config.llm
    engine = EmbeddedLlm(Path(model_path), n_threads=cfg.threads, repeat_penalty=cfg.repeat_penalty,
                         temperature=cfg.temperature)
    engine.warm(cfg.system_prompt)  # Vigil kiosks send this prefix: have it cached
    return engine


def serve(config: Config, host: str, port: int, model_path: str | os.PathLike[str],
          ready: Callable[[LlmServer], Any] | None = None, *, model_name: str = DEFAULT_MODEL_NAME,
          max_queue: int = 16) -> int:
    """Serve the embedded model on ``host:port`` until SIGTERM/SIGINT or ``server.stop()``.

    ``port`` 0 picks a free port. ``ready(server)`` is called once the socket listens
    (``server.address`` / ``server.url`` / ``server.stop()`` / ``server.stats``).
    Signal handlers are installed only when called from the main thread. Returns 0.
    """
    engine = load_engine(config, model_path)
    server = LlmServer(engine, host, port, model_name=model_name, max_queue=max_queue)
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum: int, _frame: Any) -> None:
            log.info("serve-llm: signal %d, stopping", signum)
            # shutdown() waits for serve_forever(), which runs in this (main) thread: call it from another
            threading.Thread(target=server.stop, daemon=True).start()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    log.info("serve-llm: %s on %s (model %s, load %.0f ms)", model_name, server.url, engine.model_path,
             engine.load_ms)
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
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    config = load_config(args.config) if args.config else load_config()
    # [llm] model is a gguf path only for the embedded engine (for ollama it names a remote model)
    model = args.model or (config.llm.model if config.llm.engine == "embedded" else "")
    if not model:
        from models.provision import ensure_models

        model = str(ensure_models(progress=False).llm)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return serve(config, args.host, args.port, model,
                 ready=lambda s: print(f"serve-llm listening on {s.url}", flush=True))


if __name__ == "__main__":
    raise SystemExit(main())
