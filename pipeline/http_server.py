"""The kiosk's local HTTP server: /healthz, /metrics, /events (Server-Sent Events) and a status page.

    server = KioskHttpServer("127.0.0.1", 8765, health=supervisor.health, metrics=metrics.render)
    server.start()
    server.publish(event)      # for every emitted event; thread-safe, never blocks, never raises
    server.stop()              # prompt; closes SSE clients

Routes (GET only; bodies are ignored, every response closes the connection):
  /healthz  the health() JSON, 200 when status is "ok", 503 otherwise
  /metrics  metrics() bytes as Prometheus text
  /events   text/event-stream: `id: N`, `event: <type>`, `data: <json>` per event. A new client first
            gets the recent history (the last `history` events; with a `Last-Event-ID` header only the
            ones after that id), then live events. Each client has a bounded queue: a client that does
            not keep up loses its oldest events, they are counted (`stats()["dropped"]`) and the client
            is told with a `drop` event {ring: "sse", count}. A `: keep-alive` comment every
            `keepalive_s`. A client that stalls a write for `write_timeout_s` is disconnected. A stream
            ends after `max_stream_s` (then the client reconnects with Last-Event-ID and misses
            nothing that is still in the history); this also lets headless Chromium's virtual time
            run, which waits for pending requests.
  /         the status page (pipeline/static/index.html)

Security: binding anything but a loopback address needs a token (ValueError otherwise). With a token
every route needs `Authorization: Bearer <token>` or `?token=<token>` (for the page and EventSource),
else 401. The request line and headers are size-limited and time-limited; no handler exception
ever leaves the server thread.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from core.events import DropEvent, EventType

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_LINE = 4096
MAX_HEADER_BYTES = 16384
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the usual names of localhost; anything else (incl. "" and 0.0.0.0) is not."""
    host = (host or "").strip().strip("[]")
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Client:
    """One SSE subscriber: a bounded queue of encoded events; the oldest goes when it is full."""

    __slots__ = ("queue", "cond", "dropped", "unreported", "closed", "sock", "peer")

    def __init__(self, maxlen: int, sock: socket.socket, peer: str) -> None:
        self.queue: deque[bytes] = deque()
        self.cond = threading.Condition(threading.Lock())
        self.dropped = 0
        self.unreported = 0
        self.closed = False
        self.sock = sock
        self.peer = peer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 16

    def __init__(self, address, handler, kiosk: "KioskHttpServer") -> None:
        self.kiosk = kiosk
        self._slots = threading.BoundedSemaphore(kiosk.max_connections)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        """One thread per connection, at most `max_connections` at once; the rest are closed at once."""
        if not self._slots.acquire(blocking=False):
            log.debug("connection from %s refused: too many connections", client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:  # never print tracebacks to stderr
        log.debug("HTTP request from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class KioskHttpServer:
    """A small threaded HTTP server in a daemon thread; see the module docstring."""

    def __init__(self, host: str, port: int, health: Callable[[], dict], metrics: Callable[[], bytes],
                 token: str = "", *, queue_size: int = 512, history: int = 300, keepalive_s: float = 15.0,
                 write_timeout_s: float = 10.0, max_clients: int = 16, request_timeout_s: float = 5.0,
                 max_stream_s: float = 300.0, max_connections: int = 64) -> None:
        token = token or ""
        if not is_loopback(host) and not token:
            raise ValueError(f"refusing to serve HTTP on non-loopback host {host!r} without a token: "
                             "set [http] token (VIGIL_HTTP__TOKEN) or bind 127.0.0.1")
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"HTTP port out of range: {port}")
        self.host = host
        self._requested_port = int(port)
        self.health = health
        self.metrics = metrics
        self.token = token
        self.queue_size = max(1, int(queue_size))
        self.keepalive_s = float(keepalive_s)
        self.write_timeout_s = float(write_timeout_s)
        self.max_clients = int(max_clients)
        self.request_timeout_s = float(request_timeout_s)
        self.max_stream_s = float(max_stream_s)
        self.max_connections = max(int(max_clients) + 4, int(max_connections))
        self._history: deque[tuple[int, bytes]] = deque(maxlen=max(0, int(history)))
        self._clients: list[_Client] = []
        self._lock = threading.Lock()  # guards clients, history, seq and the counters
        self._seq = 0
        self._published = 0
        self._dropped = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        try:
            self._page = (STATIC_DIR / "index.html").read_bytes()
        except OSError as exc:
            log.warning("status page missing: %s", exc)
            self._page = b"<!doctype html><title>Vigil</title><p>status page missing</p>"

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked), or the requested one before start()."""
        return self._server.server_address[1] if self._server is not None else self._requested_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "KioskHttpServer":
        """Bind and serve in a daemon thread. Raises OSError when the address is taken."""
        if self._server is not None:
            return self
        cls = _Server6 if ":" in self.host.strip("[]") else _Server
        self._stopping.clear()
        self._server = cls((self.host.strip("[]"), self._requested_port), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="vigil-http", daemon=True)
        self._thread.start()
        log.info("HTTP on %s (/healthz /metrics /events /)%s", self.url, " with token" if self.token else "")
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving, disconnect every SSE client. Prompt (≈ poll interval); never raises."""
        server, self._server = self._server, None
        self._stopping.set()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            self._close_client(client)
        if server is None:
            return
        try:
            server.shutdown()
            server.server_close()
        except Exception:  # noqa: BLE001
            log.debug("HTTP server shutdown failed", exc_info=True)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> "KioskHttpServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- events --------------------------------------------------------------------------
    def publish(self, event: dict) -> None:
        """Fan one event out to every SSE client. Thread-safe, O(clients), never blocks or raises."""
        try:
            data = json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str)
            kind = str(event.get("type", "message")) if isinstance(event, dict) else "message"
        except Exception:  # noqa: BLE001
            log.debug("unpublishable event %r", event, exc_info=True)
            return
        kind = "".join(ch for ch in kind if ch.isprintable())[:64] or "message"
        with self._lock:
            self._seq += 1
            self._published += 1
            frame = f"id: {self._seq}\nevent: {kind}\ndata: {data}\n\n".encode("utf-8")
            self._history.append((self._seq, frame))
            for client in self._clients:
                self._enqueue(client, frame)

    def _enqueue(self, client: _Client, frame: bytes) -> None:
        with client.cond:
            if client.closed:
                return
            if len(client.queue) >= self.queue_size:
                client.queue.popleft()
                client.dropped += 1
                client.unreported += 1
                self._dropped += 1  # caller holds self._lock
            client.queue.append(frame)
            client.cond.notify()

    def stats(self) -> dict[str, int]:
        """{clients, published, dropped} — dropped counts every event any SSE client lost."""
        with self._lock:
            return {"clients": len(self._clients), "published": self._published, "dropped": self._dropped}

    # -- SSE client plumbing (called from handler threads) --------------------------------
    def _subscribe(self, sock: socket.socket, peer: str, last_id: int | None) -> _Client | None:
        client = _Client(self.queue_size, sock, peer)
        with self._lock:
            if self._stopping.is_set() or len(self._clients) >= self.max_clients:
                return None
            backlog = [frame for seq, frame in self._history if last_id is None or seq > last_id]
            for frame in backlog[-self.queue_size:]:
                client.queue.append(frame)
            self._clients.append(client)
        return client

    def _unsubscribe(self, client: _Client) -> None:
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)

    def _close_client(self, client: _Client) -> None:
        with client.cond:
            client.closed = True
            client.cond.notify_all()
        try:  # wakes a handler blocked in sendall() on a stalled client
            client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _next_chunk(self, client: _Client, wait_s: float) -> bytes | None:
        """Frames waiting for the client (joined), b"" after `wait_s` without any, None when closed."""
        with client.cond:
            if not client.queue and not client.closed:
                client.cond.wait(max(0.0, wait_s))
            if client.closed:
                return None
            frames = list(client.queue)
            client.queue.clear()
            unreported, client.unreported = client.unreported, 0
        if unreported:
            note = json.dumps(DropEvent(ring="sse", count=unreported).to_dict())
            frames.insert(0, f"event: {EventType.DROP}\ndata: {note}\n\n".encode())
        return b"".join(frames)

    def _authorized(self, headers, query: dict[str, list[str]]) -> bool:
        if not self.token:
            return True
        auth = headers.get("Authorization", "") or ""
        offered = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if offered is None:
            values = query.get("token") or []
            offered = values[0] if values else None
        if offered is None:
            return False
        return hmac.compare_digest(offered.encode("utf-8", "replace"), self.token.encode("utf-8"))


class _Handler(BaseHTTPRequestHandler):
    server_version = "Vigil"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection: request bodies are never read

    server: _Server

    def setup(self) -> None:
        self.timeout = self.server.kiosk.request_timeout_s  # slow or silent clients cannot hold a thread
        super().setup()

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def parse_request(self) -> bool:
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(414)
            return False
        if not super().parse_request():
            return False
        size = sum(len(k) + len(v) + 4 for k, v in self.headers.items())
        if size > MAX_HEADER_BYTES:
            self.send_error(431, "Request Header Fields Too Large")
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802
        kiosk = self.server.kiosk
        try:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query, keep_blank_values=True)
            if not kiosk._authorized(self.headers, query):
                self._send(401, b"unauthorized: send Authorization: Bearer <token> or ?token=<token>\n",
                           "text/plain; charset=utf-8", {"WWW-Authenticate": 'Bearer realm="vigil"'})
                return
            path = parts.path.rstrip("/") or "/"
            if path == "/healthz":
                self._healthz(kiosk)
            elif path == "/metrics":
                self._send(200, bytes(kiosk.metrics()), METRICS_CONTENT_TYPE)
            elif path == "/events":
                self._events(kiosk)
            elif path in ("/", "/index.html"):
                self._send(200, kiosk._page, "text/html; charset=utf-8", {
                    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                                               "style-src 'unsafe-inline'; connect-src 'self'; img-src data:"})
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError, socket.timeout, TimeoutError):
            self.close_connection = True
        except Exception:  # noqa: BLE001 - nothing reaches the pipeline
            log.warning("HTTP handler for %s failed", self.path, exc_info=True)
            self.close_connection = True
            try:
                self._send(500, b"internal error\n", "text/plain; charset=utf-8")
            except Exception:  # noqa: BLE001 - headers may already be out
                pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(405, b"", "text/plain", {"Allow": "GET"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _healthz(self, kiosk: KioskHttpServer) -> None:
        try:
            health = kiosk.health()
            body = json.dumps(health, default=str).encode()
            code = 200 if isinstance(health, dict) and health.get("status") == "ok" else 503
        except Exception as exc:  # noqa: BLE001
            log.warning("health() failed: %s", exc)
            body = json.dumps({"status": "degraded", "workers": {}, "error": "health unavailable"}).encode()
            code = 503
        self._send(code, body, "application/json")

    def _events(self, kiosk: KioskHttpServer) -> None:
        last_id = None
        raw = self.headers.get("Last-Event-ID")
        if raw:
            try:
                last_id = int(raw.strip())
            except ValueError:
                last_id = None
        client = kiosk._subscribe(self.connection, self.address_string(), last_id)
        if client is None:
            self._send(503, b"too many event clients\n", "text/plain; charset=utf-8", {"Retry-After": "5"})
            return
        try:
            self.connection.settimeout(kiosk.write_timeout_s)
            try:  # a small send buffer bounds what a stalled client can pin in the kernel
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            except OSError:
                pass
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(b"retry: 2000\n\n")
            self.wfile.flush()
            end = time.monotonic() + kiosk.max_stream_s if kiosk.max_stream_s > 0 else float("inf")
            while True:
                left = end - time.monotonic()
                chunk = kiosk._next_chunk(client, min(kiosk.keepalive_s, left))
                if chunk is None:
                    break
                over = time.monotonic() >= end
                if chunk or not over:
                    self.wfile.write(chunk or b": keep-alive\n\n")
                    self.wfile.flush()
                if over:
                    break  # recycle the stream: EventSource reconnects with Last-Event-ID, nothing is lost
        except (BrokenPipeError, ConnectionResetError, socket.timeout, TimeoutError, OSError):
            pass  # the client went away or stalled past the write timeout
        finally:
            kiosk._unsubscribe(client)
            kiosk._close_client(client)
            self.close_connection = True
