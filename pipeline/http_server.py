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

The history keeps whole sessions: the token events of a finished session are dropped once its
response (which carries the whole answer) is in, and when the history is full the oldest session
goes as a whole, so a new client never starts in the middle of an answer.

Security: binding anything but a loopback address needs a token (ValueError otherwise). With a token
every route needs `Authorization: Bearer <token>` or `?token=<token>` (for the page and EventSource),
else 401. The request line and headers are size-limited and must arrive within `request_timeout_s`
in total (a client trickling a header line every few seconds is cut off); connections are capped in
all and per client address, and a new connection evicts the oldest one still sending its headers
rather than being refused, so slow clients cannot keep a health check out. No handler exception
ever leaves the server thread. `GuardedHTTPServer`/`GuardedHandler` and `is_loopback`/`token_ok`
are shared with `serve-llm`.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
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


class _Frame:
    """One event of the SSE history, encoded, with what `_remember` needs to keep whole sessions."""

    __slots__ = ("seq", "kind", "session", "frame")

    def __init__(self, seq: int, kind: str, session: Any, frame: bytes) -> None:
        self.seq, self.kind, self.frame = seq, kind, frame
        self.session = session if isinstance(session, (int, str)) and not isinstance(session, bool) else None


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


def token_ok(token: str, headers: Any, query: dict[str, list[str]] | None = None) -> bool:
    """True when no token is set, or the request offers it (`Authorization: Bearer`, else `?token=`)."""
    if not token:
        return True
    auth = headers.get("Authorization", "") or ""
    offered = auth[7:].strip() if auth[:7].lower() == "bearer " else None
    if offered is None:
        values = (query or {}).get("token") or []
        offered = values[0] if values else None
    if offered is None:
        return False
    return hmac.compare_digest(offered.encode("utf-8", "replace"), token.encode("utf-8"))


class _DeadlineReader(io.RawIOBase):
    """The socket as a raw stream whose reads all end by one deadline (not a timeout per recv):
    a client that trickles a byte or a header line every few seconds cannot stretch a request."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request not received in time")
            self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _Conn:
    __slots__ = ("addr", "since", "waiting", "evicted")

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.since = time.monotonic()
        self.waiting = True  # still sending its request line and headers (or idle between requests)
        self.evicted = False


class GuardedHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that slow or hostile clients cannot exhaust.

    One thread per connection, at most `max_connections` in all and `max_per_client` per client
    address. At either cap a new connection does not wait or get refused while someone merely
    dawdles: the oldest connection still sending its headers (or idle between requests) is shut
    down to make room -- legitimate requests send their headers in milliseconds, slow-loris ones
    never finish. Only when every connection is busy with a request is the new one refused.
    Handlers are `GuardedHandler`s (they say when their headers are in).
    """

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False  # stop() must not wait for idle keep-alive connections
    request_queue_size = 64

    def __init__(self, address: Any, handler: Any, *, max_connections: int = 64, max_per_client: int = 32,
                 header_timeout_s: float = 5.0) -> None:
        self.max_connections = max(1, int(max_connections))
        self.max_per_client = max(1, min(int(max_per_client), self.max_connections))
        self.header_timeout_s = float(header_timeout_s)
        self._conns: dict[Any, _Conn] = {}
        self._conns_lock = threading.Lock()
        self.refused = 0  # connections closed at once: every slot busy with a request
        self.evicted = 0  # connections shut to make room while still sending headers
        super().__init__(address, handler)

    def _victim(self, addr: str) -> tuple[Any, bool]:
        """(connection to evict or None, refuse the new one). Caller holds the lock."""
        live = [(sock, c) for sock, c in self._conns.items() if not c.evicted]
        mine = [(sock, c) for sock, c in live if c.addr == addr]
        if len(mine) >= self.max_per_client:
            pool = mine
        elif len(live) >= self.max_connections:
            pool = live
        else:
            return None, False
        waiting = [(c.since, id(sock), sock) for sock, c in pool if c.waiting]
        if not waiting:
            return None, True
        return min(waiting)[2], False

    def process_request(self, request: Any, client_address: Any) -> None:
        addr = str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)
        with self._conns_lock:
            victim, refuse = self._victim(addr)
            if victim is not None:
                self._conns[victim].evicted = True
                self.evicted += 1
            if refuse:
                self.refused += 1
            else:
                self._conns[request] = _Conn(addr)
        if victim is not None:
            log.debug("connection limit: shutting the oldest slow connection to admit %s", addr)
            _shut(victim)
        if refuse:
            log.debug("connection from %s refused: every slot is busy", addr)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:  # no thread could be started: forget the connection
            self.shutdown_request(request)
            raise

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.pop(request, None)
        super().shutdown_request(request)

    def mark_waiting(self, request: Any, waiting: bool) -> None:
        with self._conns_lock:
            conn = self._conns.get(request)
            if conn is not None:
                conn.waiting = waiting
                conn.since = time.monotonic()

    def connection_count(self) -> int:
        with self._conns_lock:
            return len(self._conns)

    def drop_connections(self) -> None:
        """Shut every open connection down: handlers end, streams and generations see the client gone."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            _shut(conn)


def _shut(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class GuardedHandler(BaseHTTPRequestHandler):
    """Request handler for `GuardedHTTPServer`: the request line and headers must arrive within
    the server's `header_timeout_s` in total (`idle_timeout_s` more between keep-alive requests);
    once they are in, reads and writes time out after `io_timeout_s` each.
    `read_deadline(s)` bounds a body read the same way."""

    server: GuardedHTTPServer
    io_timeout_s = 60.0
    idle_timeout_s = 0.0  # HTTP/1.1 handlers: how long a kept-alive connection may wait for its next request

    LINGER_S = 2.0  # after refusing a body unread: how long to swallow the rest of it
    LINGER_BYTES = 16 << 20

    def setup(self) -> None:
        super().setup()
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader, 65536)
        self._requests = 0
        self._linger = False

    def linger_on_close(self) -> None:
        """Refusing a request whose body is still coming (a 413): closing at once would make the
        kernel reset the connection, and the client would see a broken pipe instead of the answer.
        So on close, say we are done writing and swallow the rest of the body for a while."""
        self.close_connection = True
        self._linger = True

    def finish(self) -> None:
        super().finish()
        if not self._linger:
            return
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline, left = time.monotonic() + self.LINGER_S, self.LINGER_BYTES
            while left > 0 and (wait := deadline - time.monotonic()) > 0:
                self.connection.settimeout(wait)
                data = self.connection.recv(min(left, 65536))
                if not data:
                    break
                left -= len(data)
        except OSError:
            pass

    def handle_one_request(self) -> None:
        self.server.mark_waiting(self.request, True)
        idle = self.idle_timeout_s if self._requests else 0.0
        self._reader.deadline = time.monotonic() + idle + self.server.header_timeout_s
        self._requests += 1
        try:
            super().handle_one_request()
        except OSError:  # reset, or shut down to make room for another client
            self.close_connection = True

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self._reader.deadline = None
        self.connection.settimeout(self.io_timeout_s)
        if ok:
            self.server.mark_waiting(self.request, False)
        return ok

    def read_deadline(self, seconds: float | None) -> None:
        """Bound every read from now on to end within `seconds` in total (None: back to io_timeout_s)."""
        if seconds is None:
            self._reader.deadline = None
            self.connection.settimeout(self.io_timeout_s)
        else:
            self._reader.deadline = time.monotonic() + seconds


class _Server(GuardedHTTPServer):
    request_queue_size = 16

    def __init__(self, address, handler, kiosk: KioskHttpServer) -> None:
        self.kiosk = kiosk
        super().__init__(address, handler, max_connections=kiosk.max_connections,
                         max_per_client=kiosk.max_per_client, header_timeout_s=kiosk.request_timeout_s)

    def handle_error(self, request, client_address) -> None:  # never print tracebacks to stderr
        log.debug("HTTP request from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class KioskHttpServer:
    """A small threaded HTTP server in a daemon thread; see the module docstring."""

    def __init__(self, host: str, port: int, health: Callable[[], dict], metrics: Callable[[], bytes],
                 token: str = "", *, queue_size: int = 512, history: int = 300, keepalive_s: float = 15.0,
                 write_timeout_s: float = 10.0, max_clients: int = 16, request_timeout_s: float = 5.0,
                 max_stream_s: float = 300.0, max_connections: int = 64, max_per_client: int = 32) -> None:
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
        self.max_per_client = max(int(max_clients) + 2, int(max_per_client))
        self.history = max(0, int(history))
        self._history: deque[_Frame] = deque()
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

    def start(self) -> KioskHttpServer:
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
        except Exception:
            log.debug("HTTP server shutdown failed", exc_info=True)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> KioskHttpServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- events --------------------------------------------------------------------------
    def publish(self, event: dict) -> None:
        """Fan one event out to every SSE client. Thread-safe, O(clients), never blocks or raises."""
        try:
            data = json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str)
            kind = str(event.get("type", "message")) if isinstance(event, dict) else "message"
        except Exception:
            log.debug("unpublishable event %r", event, exc_info=True)
            return
        kind = "".join(ch for ch in kind if ch.isprintable())[:64] or "message"
        session = event.get("session") if isinstance(event, dict) else None
        with self._lock:
            self._seq += 1
            self._published += 1
            frame = f"id: {self._seq}\nevent: {kind}\ndata: {data}\n\n".encode()
            self._remember(_Frame(self._seq, kind, session, frame))
            for client in self._clients:
                self._enqueue(client, frame)

    def _remember(self, item: _Frame) -> None:
        """Add to the history, keeping whole sessions (caller holds the lock; O(history))."""
        if self.history == 0:
            return
        history = self._history
        if item.kind == "response" and item.session is not None:  # its text supersedes the session's tokens
            kept = [f for f in history if not (f.kind == "token" and f.session == item.session)]
            if len(kept) != len(history):
                history.clear()
                history.extend(kept)
        history.append(item)
        while len(history) > self.history:
            gone = history.popleft()
            if gone.session is not None and gone.session != item.session:  # the rest of that session goes too
                kept = [f for f in history if f.session != gone.session]
                history.clear()
                history.extend(kept)

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
            backlog = [f.frame for f in self._history if last_id is None or f.seq > last_id]
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
        return token_ok(self.token, headers, query)


class _Handler(GuardedHandler):
    server_version = "Vigil"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection: request bodies are never read

    server: _Server

    def setup(self) -> None:
        self.io_timeout_s = self.server.kiosk.request_timeout_s
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

    def do_GET(self) -> None:
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
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:  # nothing reaches the pipeline
            log.warning("HTTP handler for %s failed", self.path, exc_info=True)
            self.close_connection = True
            try:
                self._send(500, b"internal error\n", "text/plain; charset=utf-8")
            except Exception:  # headers may already be out
                pass

    def do_HEAD(self) -> None:
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
        except Exception as exc:
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
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            pass  # the client went away or stalled past the write timeout
        finally:
            kiosk._unsubscribe(client)
            kiosk._close_client(client)
            self.close_connection = True
