"""The LLM worker always answers: faults injected on loopback, twenty times each, then a real answer.

Everything is real except the fault injectors, which are named ``...OllamaDouble``: the
worker's own answer path (``workers.llm.answer``) with a real ``WorkerContext`` on real
shared-memory MessageRings and heartbeat, the real ``OllamaLlm`` engine (official ollama
client) built by the worker's ``make_engine``, and a real model behind ``serve-llm``.

Deadlines are short here (first token 0.5 s, total 1.0 s) to keep the file fast.
Measured numbers are printed (run with ``-s``) and written to ``$VIGIL_LLM_FAILURES_OUT``
when that variable names a file.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import statistics
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from core.config import load_config
from core.messages import Cancel, LlmDone, LlmRequest, Token, decode, encode
from shm.heartbeat import HeartbeatTable
from shm.message_ring import MessageRing, Policy
from shm.segments import segment_name
from workers import llm as llm_worker
from engines.llm import StreamResult
from workers.base import WorkerContext, WorkerSpec

FIRST_S = 0.5
TOTAL_S = 0.7  # the slow double's first token comes at 0.2 s, its stream never ends
MARGIN_S = 0.25  # scheduling slack on a busy 2-core box
REPEATS = 20
TOKEN = uuid.uuid4().hex[:8]
FRIENDLY = llm_worker.FRIENDLY_FAILURE
MEASURED: dict[str, dict] = {}


# ---------------------------------------------------------------- the worker's environment


class WorkerHarness:
    """What the supervisor gives the LLM worker: rings, heartbeat, a WorkerContext -- all real."""

    def __init__(self, config) -> None:
        label = f"t{TOKEN}-llmf{id(self) % 100000}"
        self.hb_name = segment_name(os.getpid(), f"{label}.hb")
        self.heartbeat = HeartbeatTable.create(self.hb_name, 1)
        self.inbox = MessageRing.create(segment_name(os.getpid(), f"{label}.in"), slots=16, slot_size=1024,
                                        policy=Policy.BLOCK, block_timeout_s=0.5)
        self.outbox = MessageRing.create(segment_name(os.getpid(), f"{label}.out"), slots=512, slot_size=1024,
                                         policy=Policy.BLOCK, block_timeout_s=0.5)
        spec = WorkerSpec("llm", "workers.llm:LlmWorker", row=0, heartbeat=self.hb_name, heartbeat_rows=1,
                          inbox=self.inbox.name, outbox=self.outbox.name)
        self.ctx = WorkerContext(spec, config)
        self.session = 0
        self.helpers = llm_worker.Helpers()

    def worker(self, engine) -> llm_worker.LlmWorker:
        """The worker as the supervisor would run it, with this engine and no skills (the LLM path)."""
        return llm_worker.LlmWorker(self.ctx, engine=engine, helpers=self.helpers)

    def request(self, engine, text: str) -> tuple[list[Token], LlmDone, int]:
        """One request through the worker's answer path; returns (tokens, done, request t_ns)."""
        self.session += 1
        t_ns = time.monotonic_ns()
        req = LlmRequest(session=self.session, text=text, speaker="unknown", t_ns=t_ns)
        done = llm_worker.answer(self.worker(engine), req)
        tokens = self.drain()
        return tokens, done, t_ns

    def drain(self) -> list[Token]:
        out = []
        while (raw := self.outbox.get()) is not None:
            msg = decode(raw)
            assert isinstance(msg, Token), msg
            out.append(msg)
        return out

    def close(self) -> None:
        self.ctx.close()
        for ring in (self.inbox, self.outbox):
            ring.close()
            ring.unlink()
        self.heartbeat.close()


def worker_config(**llm):
    cfg = load_config(environ={})
    base = dict(engine="ollama", first_token_timeout_s=FIRST_S, total_timeout_s=TOTAL_S, retry_connect=True,
                temperature=0.0)  # greedy: the model says "Paris" every time
    base.update(llm)
    return replace(cfg, llm=replace(cfg.llm, **base))




@pytest.fixture()
def harness():
    h = WorkerHarness(worker_config())
    yield h
    h.close()


# ---------------------------------------------------------------- fault-injecting doubles


class FaultOllamaDouble:
    """A loopback TCP server that misbehaves like a broken Ollama; subclasses pick the fault."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.disconnects = 0  # clients that hung up while we were still sending
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._read_request(conn)
            self.respond(conn)
        except OSError:
            self.disconnects += 1

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionResetError("client closed before sending a request")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            body += conn.recv(65536)
        return body

    def respond(self, conn: socket.socket) -> None:
        raise NotImplementedError

    @staticmethod
    def send_json(conn: socket.socket, status: str, body: dict) -> None:
        data = json.dumps(body).encode()
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + data)
        conn.close()

    @staticmethod
    def start_chunked(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")

    @staticmethod
    def send_chunk(conn: socket.socket, line: bytes) -> None:
        conn.sendall(b"%x\r\n%s\r\n" % (len(line), line))

    @staticmethod
    def token_line(text: str) -> bytes:
        return json.dumps({"model": "smollm2:135m", "created_at": "2026-01-01T00:00:00Z",
                           "message": {"role": "assistant", "content": text}, "done": False}).encode() + b"\n"

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for conn in self._conns:
            try:
                conn.close()
            except OSError:
                pass


class HangingOllamaDouble(FaultOllamaDouble):
    """Accepts, reads the request, never answers."""

    def respond(self, conn: socket.socket) -> None:
        self._stop.wait()


class Http500OllamaDouble(FaultOllamaDouble):
    def respond(self, conn: socket.socket) -> None:
        self.send_json(conn, "500 Internal Server Error", {"error": "llama runner process has terminated"})


class ModelMissingOllamaDouble(FaultOllamaDouble):
    def respond(self, conn: socket.socket) -> None:
        self.send_json(conn, "404 Not Found", {"error": 'model "smollm2:135m" not found, try pulling it first'})


class ClosingMidStreamOllamaDouble(FaultOllamaDouble):
    """Starts a good stream, then the 'server dies': the socket closes mid-chunked-body."""

    def respond(self, conn: socket.socket) -> None:
        self.start_chunked(conn)
        self.send_chunk(conn, self.token_line("The capital"))
        self.send_chunk(conn, self.token_line(" of"))
        conn.shutdown(socket.SHUT_RDWR)
        conn.close()


class MalformedOllamaDouble(FaultOllamaDouble):
    """A 200 stream whose lines are not JSON."""

    def respond(self, conn: socket.socket) -> None:
        self.start_chunked(conn)
        self.send_chunk(conn, b'{"model": "smollm2:135m", "message": {"role": "assist\n')
        self.send_chunk(conn, b"<html>gateway error</html>\n")
        conn.sendall(b"0\r\n\r\n")
        conn.close()


class SlowOllamaDouble(FaultOllamaDouble):
    """A token every 0.2 s, forever: the first token is on time, the total deadline is not met."""

    interval_s = 0.2

    def respond(self, conn: socket.socket) -> None:
        self.start_chunked(conn)
        while not self._stop.is_set():
            self.send_chunk(conn, self.token_line(" word"))
            time.sleep(self.interval_s)


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens: connection refused
    return f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------- the fault cases

CASES = {  # double, time budget for the friendly answer, what the worker logs as the cause
    "hang": (HangingOllamaDouble, FIRST_S, "timeout (no first token"),
    "http_500": (Http500OllamaDouble, FIRST_S, "(http 500: llama runner process has terminated)"),
    "model_missing": (ModelMissingOllamaDouble, FIRST_S, "(model missing: "),
    "closed_mid_stream": (ClosingMidStreamOllamaDouble, FIRST_S, "(stream broken: "),
    "malformed_ndjson": (MalformedOllamaDouble, FIRST_S, "(malformed stream: "),
    "slow_stream": (SlowOllamaDouble, TOTAL_S, "timeout (no end within the total deadline)"),
    "connection_refused": (None, FIRST_S, "(connect: "),
}


def real_request_is_answered(harness: WorkerHarness, serve_llm) -> None:
    harness.ctx.config = worker_config(host=serve_llm.url, first_token_timeout_s=3.0, total_timeout_s=15.0)
    engine = llm_worker.make_engine(harness.ctx.config)
    tokens, done, _ = harness.request(engine, "What is the capital of France?")
    assert not done.degraded, done
    assert done.finish_reason in ("stop", "length"), done
    assert "Paris" in done.text, done.text
    assert FRIENDLY not in done.text
    assert len(tokens) > 1 and "".join(t.text for t in tokens).strip() == done.text


@pytest.mark.parametrize("case", list(CASES))
def test_fault_gives_friendly_answer_twenty_times_then_real_answer(case, harness, serve_llm, caplog):
    double_cls, budget_s, cause = CASES[case]
    double = double_cls() if double_cls else None
    url = double.url if double else closed_port_url()
    harness.ctx.config = worker_config(host=url)
    engine = llm_worker.make_engine(harness.ctx.config)
    latencies, totals = [], []
    caplog.set_level(logging.WARNING, logger="vigil.llm")
    try:
        for _ in range(REPEATS):
            t0 = time.monotonic()
            tokens, done, t_ns = harness.request(engine, "What is the capital of France?")
            elapsed = time.monotonic() - t0
            assert done.degraded, (case, done)
            assert done.route == "llm"
            assert done.text.endswith(FRIENDLY), (case, done.text)
            assert done.finish_reason in ("error", "timeout"), done
            assert tokens and tokens[-1].text.strip() == FRIENDLY, tokens
            friendly_s = (tokens[-1].t_ns - t_ns) / 1e9
            assert friendly_s <= budget_s + MARGIN_S, (case, friendly_s)
            assert elapsed <= budget_s + MARGIN_S, (case, elapsed)
            assert [t.index for t in tokens] == list(range(len(tokens)))
            latencies.append(friendly_s * 1000)
            totals.append(elapsed * 1000)
        friendly_logs = [r.getMessage() for r in caplog.records if "answering friendly" in r.getMessage()]
        assert len(friendly_logs) == REPEATS and all(cause in m for m in friendly_logs), friendly_logs[:2]
        if case == "connection_refused":  # retried once each time, within the budget
            assert sum("retrying once" in r.getMessage() for r in caplog.records) == REPEATS
        if case == "slow_stream":  # abandoned streams were closed, so the double saw the clients leave
            deadline = time.monotonic() + 2
            while double.disconnects < REPEATS - 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert double.disconnects >= REPEATS - 1, double.disconnects
        # helper threads left behind by hangs are bounded and end with the client timeout
        assert len(harness.helpers.abandoned) <= llm_worker.MAX_ABANDONED
    finally:
        if double:
            double.close()
    MEASURED[case] = {"friendly_ms_p50": round(statistics.median(latencies), 1),
                      "friendly_ms_max": round(max(latencies), 1), "n": len(latencies)}
    print(f"\n{case}: friendly answer after p50 {MEASURED[case]['friendly_ms_p50']} ms, "
          f"max {MEASURED[case]['friendly_ms_max']} ms (budget {budget_s * 1000:.0f} ms)")
    real_request_is_answered(harness, serve_llm)


# ---------------------------------------------------------------- retry, cancel, a hung embedded engine


class RefuseOnceEngineDouble:
    """Fault injector: the first call fails like a refused connection, later calls go to the real engine."""

    name = "ollama"

    def __init__(self, real) -> None:
        self.real = real
        self.calls = 0

    def warm(self, system_prompt: str) -> None:
        pass

    def stream(self, messages, on_token, max_tokens=96) -> StreamResult:
        self.calls += 1
        if self.calls == 1:
            return StreamResult("", 0, "error", None, 0.3, "connect: [Errno 111] Connection refused")
        return self.real.stream(messages, on_token, max_tokens)


def test_connect_failure_is_retried_once_and_answered(harness, serve_llm):
    harness.ctx.config = worker_config(host=serve_llm.url, first_token_timeout_s=3.0, total_timeout_s=15.0)
    engine = RefuseOnceEngineDouble(llm_worker.make_engine(harness.ctx.config))
    tokens, done, _ = harness.request(engine, "What is the capital of France?")
    assert engine.calls == 2
    assert not done.degraded and "Paris" in done.text, done


def test_no_retry_when_disabled(harness):
    harness.ctx.config = worker_config(host=closed_port_url(), retry_connect=False)
    calls = []

    class CountingRefusedEngineDouble(RefuseOnceEngineDouble):
        def stream(self, messages, on_token, max_tokens=96):
            calls.append(1)
            return StreamResult("", 0, "error", None, 0.3, "connect: refused")

    tokens, done, _ = harness.request(CountingRefusedEngineDouble(None), "hello")
    assert len(calls) == 1 and done.degraded and done.text == FRIENDLY


def test_cancel_stops_the_stream_and_the_server(harness, serve_llm):
    """Barge-in: a Cancel in the inbox stops tokens at once and the server stops generating."""
    import psutil

    harness.ctx.config = worker_config(host=serve_llm.url, first_token_timeout_s=3.0, total_timeout_s=30.0,
                                     max_tokens=400)
    engine = llm_worker.make_engine(harness.ctx.config)
    harness.session += 1
    session = harness.session
    req = LlmRequest(session=session, text="Tell me a very long story about a dragon and a knight.",
                     speaker="unknown", t_ns=time.monotonic_ns())
    result: dict = {}

    def worker() -> None:
        result["done"] = llm_worker.answer(harness.worker(engine), req)

    thread = threading.Thread(target=worker)
    thread.start()
    tokens: list[Token] = []
    while len(tokens) < 10:  # the parent reads tokens as they come
        raw = harness.outbox.get(5.0)
        assert raw is not None, "no tokens"
        tokens.append(decode(raw))
    cancel_ns = time.monotonic_ns()
    assert harness.inbox.put(encode(Cancel(session)))
    thread.join(5)
    done_ns = time.monotonic_ns()
    after = harness.drain()
    done = result["done"]
    assert done.finish_reason == "cancelled" and not done.degraded, done
    assert FRIENDLY not in done.text
    assert len(after) <= 2, after  # at most a token already in flight
    # The server stops generating: its token counter freezes, its CPU falls.
    time.sleep(0.3)
    proc = psutil.Process()
    n0, c0 = serve_llm.stats["tokens"], proc.cpu_times()
    time.sleep(1.0)
    n1, c1 = serve_llm.stats["tokens"], proc.cpu_times()
    cpu_pct = ((c1.user + c1.system) - (c0.user + c0.system)) * 100.0
    assert n1 == n0, (n0, n1)
    assert serve_llm.stats["active"] == 0
    assert cpu_pct < 20.0, cpu_pct
    MEASURED["barge_in"] = {"cancel_to_done_ms": round((done_ns - cancel_ns) / 1e6, 1),
                            "cpu_percent_after_cancel": round(cpu_pct, 1)}
    print(f"\nbarge-in: cancel → LlmDone {MEASURED['barge_in']['cancel_to_done_ms']} ms; "
          f"process CPU after the cancel {cpu_pct:.1f} %")


class WedgedEngineDouble:
    """Fault injector: an engine whose calls block until released, serialised like the embedded one."""

    name = "embedded"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()

    def warm(self, system_prompt: str) -> None:
        pass

    def stream(self, messages, on_token, max_tokens=96) -> StreamResult:
        with self.lock:
            self.release.wait()
            return StreamResult("", 0, "stop", None, 0.0)


def test_wedged_serialised_engine_still_answers_friendly_and_heartbeat_continues(harness):
    harness.ctx.config = worker_config(engine="embedded")
    engine = WedgedEngineDouble()
    try:
        beats0 = harness.heartbeat.beats(0)
        for _ in range(3):
            t0 = time.monotonic()
            _, done, _ = harness.request(engine, "hello")
            assert done.degraded and done.finish_reason == "timeout" and done.text == FRIENDLY
            assert time.monotonic() - t0 <= FIRST_S + MARGIN_S
        assert harness.heartbeat.beats(0) - beats0 >= 3 * int(FIRST_S / 0.05)  # beating all along
        assert harness.helpers.stuck_for() > 0  # what run() watches to restart a wedged embedded engine
    finally:
        engine.release.set()
    deadline = time.monotonic() + 2
    while harness.helpers.stuck_for() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert harness.helpers.stuck_for() == 0


# ---------------------------------------------------------------- the embedded engine through the same path


def test_embedded_engine_through_the_worker_answers(harness, models):
    from engines.llm.embedded import EmbeddedLlm

    harness.ctx.config = worker_config(engine="embedded", first_token_timeout_s=3.0, total_timeout_s=15.0)
    engine = EmbeddedLlm(models.llm, n_threads=1, temperature=0.0)
    engine.warm(harness.ctx.config.llm.system_prompt)
    tokens, done, _ = harness.request(engine, "What is the capital of France?")
    assert not done.degraded and "Paris" in done.text, done


def teardown_module() -> None:
    out = os.environ.get("VIGIL_LLM_FAILURES_OUT")
    if out and MEASURED:
        Path(out).write_text(json.dumps(MEASURED, indent=2))


def test_worker_loop_answers_keeps_beating_and_honours_early_cancel(harness, serve_llm):
    """The LLM worker's own loop: warm, requests from the inbox, a Cancel that precedes its request."""
    harness.ctx.config = worker_config(host=serve_llm.url, first_token_timeout_s=3.0, total_timeout_s=15.0)
    thread = threading.Thread(target=llm_worker.LlmWorker(harness.ctx).run)
    thread.start()
    try:
        now = time.monotonic_ns()
        assert harness.inbox.put(encode(Cancel(101)))  # barge-in before the worker took the request
        assert harness.inbox.put(encode(LlmRequest(session=101, text="Tell me a story.", speaker="", t_ns=now)))
        assert harness.inbox.put(encode(LlmRequest(session=102, text="What is the capital of France?", speaker="",
                                                   t_ns=now)))
        done, tokens = None, []
        deadline = time.monotonic() + 20
        while done is None and time.monotonic() < deadline:
            raw = harness.outbox.get(0.5)
            if raw is None:
                continue
            msg = decode(raw)
            if isinstance(msg, Token):
                tokens.append(msg)
            elif isinstance(msg, LlmDone):
                done = msg
        assert done is not None and done.session == 102, done
        assert {t.session for t in tokens} == {102}
        assert not done.degraded and "Paris" in done.text, done
        age = harness.heartbeat.age_s(0)
        assert age is not None and age < 0.5
    finally:
        harness.ctx.request_stop()
        thread.join(5)
    assert not thread.is_alive()
