"""The kiosk HTTP server against real sockets, real HTTP clients and a real headless Chromium."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline.http_server import KioskHttpServer, is_loopback
from pipeline.prom import PipelineMetrics

WORKERS = ("capture", "wakeword", "stt", "llm", "responder")


def health_ok() -> dict:
    return {"status": "ok", "workers": {name: {"pid": 1000 + i, "state": "running", "restarts": 0,
                                               "heartbeat_age_s": 0.2} for i, name in enumerate(WORKERS)}}


def conversation(session: int = 1, question: str = "What is the capital of France?",
                 answer: str = "Paris is the capital of France.") -> list[dict]:
    """A realistic event sequence for one request, shaped like the coordinator's."""
    t = time.time()
    events = [
        {"type": "wake", "t": t, "session": session, "seq": 40, "score": 0.974,
         "engine": "openwakeword:hey_jarvis_v0.1", "verify_score": None},
        {"type": "transcript", "t": t + 2.6, "session": session, "text": question, "final": True,
         "speech_end_ns": 1355181092940},
    ]
    words = answer.split(" ")
    for i, word in enumerate(words):
        events.append({"type": "token", "t": t + 2.8 + i * 0.01, "session": session,
                       "text": word if i == 0 else " " + word})
    events.append({"type": "response", "t": t + 3.0, "session": session, "transcript": question,
                   "speaker": "unknown", "route": "llm", "text": answer, "degraded": False,
                   "latency_ms": {"wake_to_speech_end": 1867.2, "speech_end_to_transcript": 796.5,
                                  "transcript_to_first_token": 185.6, "speech_end_to_first_token": 982.0,
                                  "wake_to_first_token": 2849.2, "first_token_to_done": 695.9,
                                  "stt_compute": 277.0, "llm_first_token_compute": 181.6, "llm_compute": 874.7}})
    return events


def get(url: str, headers: dict | None = None, timeout: float = 5.0) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


class SSEClient:
    """A minimal Server-Sent Events reader over http.client."""

    def __init__(self, port: int, path: str = "/events", headers: dict | None = None, timeout: float = 5.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", path, headers=headers or {})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status

    def next_event(self) -> dict | None:
        """The next event as {id, event, data}, or None at end of stream."""
        fields: dict = {}
        while True:
            line = self.resp.fp.readline()
            if not line:
                return None
            line = line.decode().rstrip("\n")
            if not line:
                if "data" in fields:
                    return fields
                fields = {}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            fields[key] = json.loads(value) if key == "data" else value

    def events(self, n: int) -> list[dict]:
        out = []
        while len(out) < n:
            event = self.next_event()
            if event is None:
                break
            out.append(event)
        return out

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def server():
    state = {"health": health_ok()}
    metrics = PipelineMetrics()
    srv = KioskHttpServer("127.0.0.1", 0, health=lambda: state["health"], metrics=metrics.render,
                          queue_size=200, keepalive_s=0.5)
    metrics.watch_sse(srv.stats)
    srv.state, srv.pm = state, metrics  # for the tests
    srv.start()
    yield srv
    srv.stop()


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("192.168.1.10")
    assert not is_loopback("kiosk.local")


def test_healthz_200_and_503(server):
    status, body, headers = get(f"{server.url}/healthz")
    assert status == 200 and json.loads(body) == health_ok()
    assert headers["Content-Type"] == "application/json"
    server.state["health"] = dict(health_ok(), status="degraded")
    server.state["health"]["workers"]["stt"]["state"] = "restarting"
    status, body, _ = get(f"{server.url}/healthz")
    assert status == 503 and json.loads(body)["workers"]["stt"]["state"] == "restarting"

    def broken():
        raise RuntimeError("supervisor gone")
    server.health = broken
    status, body, _ = get(f"{server.url}/healthz")
    assert status == 503 and json.loads(body)["status"] == "degraded"


def test_metrics_after_a_response_event(server):
    for event in conversation():
        server.pm.observe_event(event)
    server.pm.observe_event({"type": "worker", "t": time.time(), "name": "stt", "event": "restarted",
                             "pid": 5, "exitcode": -9})
    server.pm.observe_event({"type": "drop", "t": time.time(), "ring": "audio.stt", "count": 3})
    server.pm.set_health(health_ok())
    status, body, headers = get(f"{server.url}/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    for needle in ('vigil_sessions_total 1.0',
                   'vigil_wakes_total{result="accepted"} 1.0',
                   'vigil_responses_total{degraded="false",route="llm"} 1.0',
                   'vigil_latency_seconds_bucket{le="1.0",span="speech_end_to_first_token"} 1.0',
                   'vigil_latency_seconds_bucket{le="2.5",span="wake_to_first_token"} 0.0',  # 2849.2 ms
                   'vigil_latency_seconds_bucket{le="3.0",span="wake_to_first_token"} 1.0',
                   'vigil_latency_seconds_count{span="speech_end_to_transcript"} 1.0',
                   'vigil_latency_seconds_count{span="transcript_to_first_token"} 1.0',
                   'vigil_stage_compute_seconds_sum{stage="stt"} 0.277',
                   'vigil_stage_compute_seconds_bucket{le="0.15",stage="llm_first_token"} 0.0',  # 181.6 ms
                   'vigil_stage_compute_seconds_bucket{le="0.2",stage="llm_first_token"} 1.0',
                   'vigil_worker_restarts_total{worker="stt"} 1.0',
                   'vigil_drops_total{ring="audio.stt"} 3.0',
                   'vigil_worker_up{worker="llm"} 1.0',
                   'vigil_worker_heartbeat_age_seconds{worker="capture"} 0.2',
                   'vigil_health_ok 1.0',
                   'vigil_sse_clients 0.0'):
        assert needle in text, needle
    # garbage never raises, it is counted
    for bad in (None, "x", {"type": "response", "latency_ms": "nope"}, {"no": "type"}):
        server.pm.observe_event(bad)
    assert "vigil_bad_events_total 4.0" in server.pm.render().decode()


def test_events_in_order_to_two_clients(server):
    a, b = SSEClient(server.port), SSEClient(server.port)
    assert a.status == b.status == 200
    assert a.resp.getheader("Content-Type").startswith("text/event-stream")
    _wait(lambda: server.stats()["clients"] == 2)
    sent = [e for s in range(1, 4) for e in conversation(session=s)]
    for event in sent:
        server.publish(event)
    for client in (a, b):
        got = client.events(len(sent))
        assert [g["data"] for g in got] == json.loads(json.dumps(sent))
        assert [g["event"] for g in got] == [e["type"] for e in sent]
        ids = [int(g["id"]) for g in got]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        client.close()


def test_new_client_gets_recent_history_and_last_event_id(server):
    sent = conversation()
    for event in sent:
        server.publish(event)
    client = SSEClient(server.port)
    got = client.events(3)  # a finished session: its response carries the answer, its tokens are not kept
    assert [g["data"]["type"] for g in got] == ["wake", "transcript", "response"]
    assert got[2]["data"]["text"] == sent[-1]["text"]
    client.close()
    resumed = SSEClient(server.port, headers={"Last-Event-ID": got[0]["id"]})
    server.publish({"type": "error", "t": time.time(), "where": "test", "message": "live"})
    again = resumed.events(3)
    assert [int(g["id"]) for g in again] == [int(g["id"]) for g in got[1:]] + [int(got[-1]["id"]) + 1]
    resumed.close()


def test_history_keeps_whole_sessions_and_an_answer_in_progress():
    """A new client's backlog starts at a session's wake, never in the middle of an answer."""
    srv = KioskHttpServer("127.0.0.1", 0, health=health_ok, metrics=lambda: b"", history=40, keepalive_s=0.5)
    with srv:
        srv.publish({"type": "worker", "t": time.time(), "name": "llm", "event": "started", "pid": 7, "exitcode": None})
        long_answer = " ".join(f"word{i}" for i in range(30))
        for session in range(1, 9):
            for event in conversation(session, f"question {session}?", long_answer):
                srv.publish(event)
        live = conversation(9, "What is the capital of France?", "Paris is the capital of France.")
        for event in live[:-1]:  # session 9 is still answering: its tokens so far must be there
            srv.publish(event)
        client = SSEClient(srv.port)
        _wait(lambda: srv.stats()["clients"] == 1)
        srv.publish({"type": "error", "t": time.time(), "where": "test", "message": "marker"})
        got = []
        while not got or got[-1]["event"] != "error":
            event = client.next_event()
            assert event is not None
            got.append(event)
        client.close()
    data = [g["data"] for g in got[:-1]]
    assert data[0]["type"] == "wake", data[0]  # starts at a session boundary
    sessions = [d["session"] for d in data]
    assert sessions == sorted(sessions), sessions  # whole sessions, in order
    by_session: dict = {}
    for d in data:
        by_session.setdefault(d["session"], []).append(d["type"])
    for session, kinds in by_session.items():
        assert kinds[0] == "wake" and "transcript" in kinds, (session, kinds)  # none is cut at its start
        if session < 9:
            assert kinds[-1] == "response" and "token" not in kinds, (session, kinds)
    assert 9 in by_session and len(by_session) >= 3, by_session  # tokens compacted: many sessions fit in 40
    tokens = "".join(d["text"] for d in data if d["session"] == 9 and d["type"] == "token")
    assert tokens == "Paris is the capital of France."
    assert [int(g["id"]) for g in got] == sorted(int(g["id"]) for g in got)


def test_keepalive_comment(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=3)
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    deadline = time.monotonic() + 3
    while b": keep-alive" not in data and time.monotonic() < deadline:
        data += sock.recv(4096)
    sock.close()
    assert b": keep-alive\n\n" in data


def test_stalled_client_never_blocks_publish_and_its_drops_are_counted(server):
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", server.port))
    stalled.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read again
    healthy = SSEClient(server.port)
    _wait(lambda: server.stats()["clients"] == 2)

    n, pad = 2000, "x" * 2000
    received: list[dict] = []
    reader = threading.Thread(target=lambda: received.extend(healthy.events(n)), daemon=True)
    reader.start()
    worst = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        server.publish({"type": "token", "t": time.time(), "session": 1, "text": pad, "i": i})
        worst = max(worst, time.perf_counter() - t0)
        if i % 100 == 99:
            time.sleep(0.02)  # a healthy reader keeps up; the stalled one cannot
    reader.join(10)
    assert worst < 0.2, f"a publish took {worst * 1000:.1f} ms"
    assert [e["data"]["i"] for e in received] == list(range(n)), "the healthy client lost or reordered events"
    stats = server.stats()
    assert stats["published"] == n
    assert stats["dropped"] > n // 2, stats  # only the stalled client lost events, oldest first
    assert "vigil_sse_events_dropped_total" in get(f"{server.url}/metrics")[1].decode()
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 1.5
    healthy.close()
    stalled.close()


def test_slow_client_is_told_how_many_it_lost():
    srv = KioskHttpServer("127.0.0.1", 0, health=health_ok, metrics=lambda: b"", queue_size=5, history=0)
    with srv:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        _wait(lambda: srv.stats()["clients"] == 1)
        n = 300
        for i in range(n):  # ~600 kB: far more than the socket buffers hold while nobody reads
            srv.publish({"type": "token", "session": 1, "text": "y" * 2000, "i": i})
        assert srv.stats()["dropped"] > 0
        client = SSEClient.__new__(SSEClient)  # now read what this client got, through the same socket
        client.resp = http.client.HTTPResponse(sock)
        client.resp.begin()
        got, lost = [], 0
        while not got or got[-1] != n - 1:
            event = client.next_event()
            assert event is not None
            if event["event"] == "drop":
                assert event["data"]["ring"] == "sse"
                lost += event["data"]["count"]
            else:
                got.append(event["data"]["i"])
        assert got == sorted(got) and got[-5:] == list(range(n - 5, n))  # the newest survive
        assert len(got) + lost == n and lost == srv.stats()["dropped"]  # every loss is reported
        sock.close()


def test_token_enforced_on_every_route():
    with pytest.raises(ValueError, match="token"):
        KioskHttpServer("0.0.0.0", 0, health=health_ok, metrics=lambda: b"")
    with pytest.raises(ValueError, match="token"):
        KioskHttpServer("192.168.1.10", 0, health=health_ok, metrics=lambda: b"")
    KioskHttpServer("0.0.0.0", 0, health=health_ok, metrics=lambda: b"", token="s3cret")  # allowed, not started
    srv = KioskHttpServer("127.0.0.1", 0, health=health_ok, metrics=lambda: b"# nothing\n", token="s3cret")
    with srv:
        for path in ("/healthz", "/metrics", "/events", "/", "/nope"):
            status, _, headers = get(f"{srv.url}{path}")
            assert status == 401, path
            assert headers.get("WWW-Authenticate", "").startswith("Bearer")
            assert get(f"{srv.url}{path}", {"Authorization": "Bearer wrong"})[0] == 401
            assert get(f"{srv.url}{path}?token=wrong")[0] == 401
        assert get(f"{srv.url}/healthz", {"Authorization": "Bearer s3cret"})[0] == 200
        assert get(f"{srv.url}/metrics", {"Authorization": "Bearer s3cret"})[0] == 200
        status, body, _ = get(f"{srv.url}/?token=s3cret")
        assert status == 200 and b"Vigil" in body
        assert get(f"{srv.url}/nope?token=s3cret")[0] == 404
        client = SSEClient(srv.port, "/events?token=s3cret")
        assert client.status == 200
        srv.publish({"type": "wake", "session": 9})
        assert client.next_event()["data"]["session"] == 9
        client.close()


def test_bad_requests_never_hurt_the_server(server):
    def boom() -> bytes:
        raise RuntimeError("metrics exploded")
    server.metrics = boom
    assert get(f"{server.url}/metrics")[0] == 500
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:  # oversized request line
        sock.sendall(b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.0 414")
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:  # a body is ignored
        sock.sendall(b"POST /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        assert sock.recv(100).startswith(b"HTTP/1.0 405")
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=3)  # says nothing at all
    assert get(f"{server.url}/healthz")[0] == 200
    silent.close()
    server.publish({"type": object()})  # unserialisable type is stringified, never raised
    server.publish("not a dict")  # type: ignore[arg-type]


def test_connection_limits_evict_the_slowest_and_refuse_only_when_all_are_busy():
    gate = threading.Event()
    srv = KioskHttpServer("127.0.0.1", 0, health=health_ok, metrics=lambda: gate.wait(10) and b"# ok\n",
                          max_clients=1, max_connections=5, request_timeout_s=2.0)
    with srv:
        first = SSEClient(srv.port)
        assert first.status == 200
        _wait(lambda: srv.stats()["clients"] == 1)
        assert get(f"{srv.url}/events")[0] == 503  # one event client at most
        silent = [socket.create_connection(("127.0.0.1", srv.port), timeout=3) for _ in range(4)]
        _wait(lambda: srv._server.connection_count() == 5)
        assert get(f"{srv.url}/healthz")[0] == 200  # at the cap: the oldest silent one made room
        assert silent[0].recv(100) == b"" and srv._server.evicted == 1
        for sock in silent:
            sock.close()
        _wait(lambda: srv._server.connection_count() == 1)
        # every slot busy with a request (4 scrapes blocked in metrics() + the event stream): refused at once
        results: list = []
        scrapes = [threading.Thread(target=lambda: results.append(get(f"{srv.url}/metrics")[0])) for _ in range(4)]
        for t in scrapes:
            t.start()
        _wait(lambda: srv._server.connection_count() == 5 and not any(
            c.waiting for c in srv._server._conns.values()))
        with socket.create_connection(("127.0.0.1", srv.port), timeout=3) as extra:
            try:
                extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                assert extra.recv(100) == b""
            except ConnectionResetError:
                pass
        assert srv._server.refused == 1
        gate.set()
        for t in scrapes:
            t.join(5)
        assert results == [200] * 4
        assert get(f"{srv.url}/healthz")[0] == 200
        first.close()


def _trickle(port: int, stop: threading.Event, opened: list) -> None:
    """A slow-loris client: a request line, then one header line every 2 s, never the end; reconnects."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: kiosk\r\n")
                opened.append(1)
                while not stop.wait(2.0):
                    sock.sendall(b"X-Slow: 1\r\n")
        except OSError:
            stop.wait(0.05)


@pytest.mark.parametrize("host, token, n_slow", [("127.0.0.1", "", 64), ("0.0.0.0", "s3cret", 66)])
def test_health_check_answers_while_slow_clients_trickle_headers(host, token, n_slow):
    srv = KioskHttpServer(host, 0, health=health_ok, metrics=lambda: b"", token=token)
    stop, opened = threading.Event(), []
    with srv:
        threads = [threading.Thread(target=_trickle, args=(srv.port, stop, opened), daemon=True)
                   for _ in range(n_slow)]
        for t in threads:
            t.start()
        _wait(lambda: len(opened) >= n_slow, timeout=10)
        time.sleep(2.5)  # every slow client has sent at least one more header line
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        latencies = []
        for _ in range(12):
            t0 = time.perf_counter()
            status, body, _ = get(f"http://127.0.0.1:{srv.port}/healthz", headers, timeout=3)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert status == 200 and json.loads(body)["status"] == "ok"
            time.sleep(0.25)
        if token:
            assert get(f"http://127.0.0.1:{srv.port}/healthz", timeout=3)[0] == 401
        stop.set()
        evicted = srv._server.evicted
    for t in threads:
        t.join(5)
    print(f"\n/healthz with {n_slow} slow clients{' (token, 0.0.0.0)' if token else ''}: "
          f"max {max(latencies):.1f} ms, median {sorted(latencies)[6]:.1f} ms; {evicted} slow connections evicted")


def test_stop_is_prompt_with_clients_connected():
    srv = KioskHttpServer("127.0.0.1", 0, health=health_ok, metrics=lambda: b"", keepalive_s=30).start()
    clients = [SSEClient(srv.port, timeout=5) for _ in range(3)]
    _wait(lambda: srv.stats()["clients"] == 3)
    t0 = time.monotonic()
    srv.stop()
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0, f"stop took {elapsed:.2f} s"
    for client in clients:
        assert client.next_event() is None  # the stream ended, no hang until keep-alive
        client.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1)


class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``),
    so the test measures the real layout (sizes, overlaps, scrollbars) and reads the live DOM."""

    def __init__(self, browser: str, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def on_fds_3_and_4() -> None:  # Chromium reads commands on fd 3 and answers on fd 4
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._log = open(profile.parent / f"{profile.name}.log", "wb")  # closed in close()
        self.proc = subprocess.Popen(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=on_fds_3_and_4, close_fds=False, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=self._log)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._id = b"", 0
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def call(self, method: str, timeout: float = 20.0, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if method.split(".")[0] not in ("Target", "Browser"):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    assert "error" not in reply, (method, reply["error"])
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            assert left > 0, f"chromium did not answer {method} in {timeout} s"
            import select
            if select.select([self._from_chrome], [], [], left)[0]:
                chunk = os.read(self._from_chrome, 1 << 20)
                assert chunk, "chromium closed the DevTools pipe"
                self._buf += chunk

    def evaluate(self, expression: str):
        reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            assert time.monotonic() < deadline, f"never true in the page: {expression}"
            time.sleep(0.1)

    def viewport(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # laid out

    def screenshot(self, path: Path) -> bytes:
        import base64
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        self._log.close()


# What the layout check measures in the page: page scrollbars, panels overlapping or leaving the screen,
# and whether the workers' heartbeat column (header and cells) is cut.
LAYOUT = """(() => {
  const de = document.documentElement, box = e => e.getBoundingClientRect();
  const panels = [...document.querySelectorAll("main > section, .col > section")]
    .filter(e => getComputedStyle(e).display !== "none").map(e => [e.querySelector("h2").textContent, box(e)]);
  const overlaps = [];
  for (const [i, [na, a]] of panels.entries()) for (const [nb, b] of panels.slice(i + 1))
    if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
      overlaps.push([na, nb]);
  const outside = panels.filter(([, r]) => r.right > innerWidth + 0.5 || r.bottom > innerHeight + 0.5).map(([n]) => n);
  const col = [...document.querySelectorAll("#workers th")].findIndex(th => th.textContent === "heartbeat");
  const cells = [...document.querySelectorAll("#workers tr")].map(tr => tr.children[col]).filter(Boolean);
  const cut = cells.filter(c => c.scrollWidth > c.clientWidth || box(c).right > innerWidth || box(c).width < 20)
    .map(c => c.textContent);
  return {scrollW: de.scrollWidth, scrollH: de.scrollHeight, w: innerWidth, h: innerHeight, overlaps, outside,
          heartbeat_cells: cells.length, heartbeat_cut: cut};
})()"""


def test_status_page_never_parses_html_from_data():
    """Event text (transcripts, answers) reaches the page as text nodes only: no HTML sink in its script."""
    page = (Path(__file__).resolve().parents[2] / "pipeline" / "static" / "index.html").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in page, sink


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_status_page_in_headless_chromium(tmp_path: Path):
    """The page on a kiosk panel (800x480) and a desktop (1280x800): conversation and worker health
    arrive (SSE, /healthz, with a token as on a kiosk whose display is another machine), nothing
    overlaps or scrolls sideways, the heartbeat column is whole. Screenshots: VIGIL_SCREENSHOT=dir."""
    browser = _chromium()
    srv = KioskHttpServer("127.0.0.1", 0, health=health_ok, metrics=lambda: b"", token="k1osk")
    with srv:
        for name in WORKERS:
            srv.publish({"type": "worker", "t": time.time(), "name": name, "event": "started", "pid": 1,
                         "exitcode": None})
        for session in range(1, 7):  # enough conversation to fill the panel
            for event in conversation(session, f"Question number {session}, about the weather on the Moon?",
                                      "The Moon has no atmosphere, so it has no weather at all."):
                srv.publish(event)
        for event in conversation(7, "What is the capital of France?", "Paris is the capital of France."):
            srv.publish(event)
        for event in conversation(8, "What time is it?", "It is ten past four."):
            if event["type"] == "response":
                event.update(route="skill:time", latency_ms={"speech_end_to_first_token": 412.0,
                                                             "wake_to_first_token": 2101.5})
            srv.publish(event)
        chrome = DevTools(browser, tmp_path / "profile")
        try:
            chrome.viewport(1280, 800)
            chrome.call("Page.navigate", url=f"{srv.url}/?token=k1osk")
            chrome.wait_for("document.getElementById('stream-badge')?.textContent === 'live' && "
                            "document.body.innerText.includes('It is ten past four.') && "
                            "document.body.innerText.includes('wakeword')")
            srv.publish({"type": "error", "t": time.time(), "where": "llm", "message": "live event"})
            chrome.wait_for("document.getElementById('log').innerText.includes('live event')")
            # an "error" event of the pipeline is not a broken stream
            assert chrome.evaluate("document.getElementById('stream-badge').textContent") == "live"
            text = chrome.evaluate("document.body.innerText")
            layouts, shots = {}, {}
            for width, height in ((1280, 800), (800, 480)):
                chrome.viewport(width, height)
                layouts[width] = chrome.evaluate(LAYOUT)
                shots[width] = chrome.screenshot(tmp_path / f"status-{width}x{height}.png")
        finally:
            chrome.close()
    keep = os.environ.get("VIGIL_SCREENSHOT")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in tmp_path.glob("status-*.png"):
            shutil.copy(png, keep)
    # the conversation via /events, the workers via /healthz
    assert "What is the capital of France?" in text and "Paris is the capital of France." in text
    assert "skill:time" in text and "412" in text  # a response's route and latency
    assert "wakeword" in text and "running" in text and "healthy" in text
    assert "SyntaxError" not in text and "bad event" not in text
    for (width, height), expected in (((1280, 800), (1280, 800)), ((800, 480), (800, 480))):
        layout = layouts[width]
        assert layout["w"] == width and layout["h"] == height, layout
        assert layout["scrollW"] <= width and layout["scrollH"] <= height, f"page scrollbars at {width}: {layout}"
        assert not layout["overlaps"] and not layout["outside"], f"panels at {width}: {layout}"
        assert layout["heartbeat_cells"] == 1 + len(WORKERS) and not layout["heartbeat_cut"], layout
        data = shots[width]
        assert _png_size(data) == expected and len(data) > 20_000, (len(data), _png_size(data))


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        try:
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                           capture_output=True, timeout=600, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        except (OSError, subprocess.TimeoutExpired):
            pass
        path = shutil.which("chromium")
        if path:
            return path
    pytest.skip("chromium is not installed and `apt-get install -y chromium` was not possible here")


def _wait(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)
