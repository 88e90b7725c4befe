"""Assembles and runs the pipeline: rings, workers, supervisor, coordinator, main loop.

The parent's loop only moves small messages between rings and checks the workers; it
never touches audio. It stops on SIGTERM/SIGINT or, with `exit_when_done`, once the input
has ended and every session is finished — and always unlinks every segment it made.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pipeline.backpressure import BackpressureController, RingSpec
from core.config import Config
from core.events import DropEvent, Event, WorkerEvent
from pipeline.coordinator import Coordinator
from pipeline.latency import LatencyTracker
from pipeline.http_server import KioskHttpServer
from core.messages import DecodeError, Emit, decode, encode
from pipeline.metrics_store import MetricsStore
from pipeline.prom import PipelineMetrics
from pipeline.sdnotify import Notifier, WatchdogPolicy
from pipeline.supervisor import PipelineSupervisor
from shm.heartbeat import HeartbeatTable
from shm.message_ring import MessageTooLarge, Policy
from shm.segments import cleanup_stale
from workers.base import WorkerSpec

log = logging.getLogger("vigil.app")

WORKERS = ("capture", "wakeword", "stt", "speaker", "llm", "responder")


def worker_names(config: Config) -> tuple[str, ...]:
    """The workers this config runs (speaker ID can be switched off)."""
    return tuple(name for name in WORKERS if name != "speaker" or config.speaker.enabled)


def ring_specs(config: Config) -> list[RingSpec]:
    """Every buffer in the pipeline, its size and what happens when it is full."""
    fs = config.audio.frame_samples
    frames = max(16, int(config.audio.ring_seconds * 16_000 / fs))
    return [
        RingSpec("audio", "audio", slots=frames, slot_size=fs),
        # Capture must never wait: its rare status messages drop the newest when the parent lags.
        RingSpec("capture.out", "message", slots=16, slot_size=1024, policy=Policy.DROP_NEWEST),
        RingSpec("wakeword.out", "message", slots=16, slot_size=1024, policy=Policy.BLOCK, block_timeout_s=0.5),
        RingSpec("stt.in", "message", slots=16, slot_size=1024, policy=Policy.BLOCK, block_timeout_s=0.5),
        RingSpec("stt.out", "message", slots=32, slot_size=4096, policy=Policy.BLOCK, block_timeout_s=1.0),
        RingSpec("speaker.in", "message", slots=16, slot_size=1024, policy=Policy.DROP_OLDEST),
        RingSpec("speaker.out", "message", slots=16, slot_size=1024, policy=Policy.DROP_OLDEST),
        RingSpec("llm.in", "message", slots=16, slot_size=4096, policy=Policy.BLOCK, block_timeout_s=0.5),
        # Tokens must not be lost: the LLM waits (briefly) for the parent rather than drop one.
        RingSpec("llm.out", "message", slots=256, slot_size=1024, policy=Policy.BLOCK, block_timeout_s=1.0),
        # Output may lag behind a slow terminal or disk: the parent waits 0.2 s, then drops the new event
        # (counted), never stalling the pipeline.
        RingSpec("responder.in", "message", slots=512, slot_size=8192, policy=Policy.BLOCK, block_timeout_s=0.2),
    ]


def worker_specs(backpressure: BackpressureController, heartbeat_name: str, options: RunOptions,
                 names: tuple[str, ...] = WORKERS) -> list[WorkerSpec]:
    seg = backpressure.segment_name
    common = {"heartbeat": heartbeat_name, "heartbeat_rows": len(WORKERS)}
    specs = [
        WorkerSpec("capture", "workers.capture:CaptureWorker", row=0, outbox=seg("capture.out"), audio=seg("audio"),
                   **common),
        WorkerSpec("wakeword", "workers.wakeword:WakewordWorker", row=1, outbox=seg("wakeword.out"),
                   audio=seg("audio"), audio_slot=0, **common),
        WorkerSpec("stt", "workers.stt:SttWorker", row=2, inbox=seg("stt.in"), outbox=seg("stt.out"),
                   audio=seg("audio"), audio_slot=1, **common),
        WorkerSpec("speaker", "workers.speaker:SpeakerWorker", row=3, inbox=seg("speaker.in"),
                   outbox=seg("speaker.out"), audio=seg("audio"), audio_slot=2, **common),
        WorkerSpec("llm", "workers.llm:LlmWorker", row=4, inbox=seg("llm.in"), outbox=seg("llm.out"), **common),
        WorkerSpec("responder", "workers.responder:ResponderWorker", row=5, inbox=seg("responder.in"),
                   events_path=options.events_path, stdout=options.stdout, **common),
    ]
    return [spec for spec in specs if spec.name in names]


@dataclass
class RunOptions:
    events_path: str | None = None
    exit_when_done: bool = False
    stdout: bool = True
    max_seconds: float | None = None  # a hard bound for tests and benches


class Pipeline:
    """Owns every resource of one run; `run()` returns the process exit code."""

    def __init__(self, config: Config, options: RunOptions) -> None:
        """`config` names every model by path (`resolve_models`): workers load exactly what it says."""
        self.config = config
        self.options = options
        self.run_id = uuid.uuid4().hex[:12]
        self.stop_requested = False
        self.tracker = LatencyTracker()
        self.decode_errors = 0
        # Checked before any segment exists, so a refused config leaves nothing behind.
        self.metrics = PipelineMetrics(health=self.health)
        self.http: KioskHttpServer | None = None
        if config.http.enabled:
            self.http = KioskHttpServer(config.http.host, config.http.port, health=self.health,
                                        metrics=self.metrics.render, token=config.http.token)
            self.metrics.watch_sse(self.http.stats)
        removed = cleanup_stale()
        if removed:
            log.info("removed %d stale shared-memory segment(s) of a dead earlier run", len(removed))
        self.backpressure = BackpressureController(os.getpid(), ring_specs(config))
        self.rings = self.backpressure.create_all()
        heartbeat_name = f"vigil-{os.getpid()}-heartbeat"
        try:
            self.heartbeat = HeartbeatTable.create(heartbeat_name, len(WORKERS))
            self.store = MetricsStore(config.metrics.state_dir, self.run_id, config.metrics.retention_sessions)
        except BaseException:
            self.backpressure.unlink_all()
            if hasattr(self, "heartbeat"):
                self.heartbeat.close()
            raise
        self.worker_names = worker_names(config)
        specs = worker_specs(self.backpressure, heartbeat_name, options, self.worker_names)
        self.coordinator = Coordinator(config, self.send, self.emit, self.tracker, self.store)
        self.supervisor = PipelineSupervisor(config, specs, self.heartbeat, on_event=self.emit)
        self.metrics.watch_workers(self.supervisor.resources)
        self.watchdog = WatchdogPolicy(Notifier.from_env(), grace_s=config.supervisor.watchdog_grace_s)
        # Every worker but the responder reports to the parent through its ".out" ring.
        self._outboxes = [(name, self.rings[f"{name}.out"]) for name in self.worker_names if name != "responder"]
        self._drops_seen: dict[str, int] = {}

    # ---- plumbing ----------------------------------------------------------------------

    def send(self, worker: str, message: Any) -> bool:
        try:
            return self.rings[f"{worker}.in"].put(encode(message))
        except MessageTooLarge as exc:
            log.error("message to %s too large, dropped: %s", worker, exc)
            return False

    def emit(self, event: Event) -> None:
        """One event to every output: the responder (stdout, JSONL), Prometheus, and SSE clients."""
        body = event.to_dict()  # serialised once: every output gets the same dict
        self.send("responder", Emit(body))
        self.metrics.observe_event(body)
        if self.http is not None:
            self.http.publish(body)
        if isinstance(event, WorkerEvent) and event.event == "exited":
            self.coordinator.worker_exited(event.name)

    def _pump(self, budget: int = 64) -> int:
        handled = 0
        for name, ring in self._outboxes:
            for _ in range(budget):
                payload = ring.get(0.0)
                if payload is None:
                    break
                handled += 1
                try:
                    message = decode(payload)
                except DecodeError as exc:
                    self.decode_errors += 1
                    log.warning("undecodable message from %s dropped (%d so far): %s", name, self.decode_errors, exc)
                    continue
                self.coordinator.handle(message)
        return handled

    def health(self) -> dict[str, Any]:
        """The supervisor's view plus what only workers know: a lost microphone is degraded too."""
        health = self.supervisor.health()
        for name, state in self.coordinator.worker_states.items():
            if name in health["workers"] and state.state != "running":
                health["workers"][name]["device"] = state.state  # e.g. "lost", "no_device"
                health["workers"][name]["detail"] = state.detail
                health["status"] = "degraded"
        return health

    def _report_drops(self) -> None:
        for ring, stats in self.backpressure.stats().items():
            count = int(stats.get("drops", 0)) + int(stats.get("lost", 0)) + int(stats.get("corrupt", 0))
            if count > self._drops_seen.get(ring, 0):
                if ring != "responder.in":  # reporting a responder drop through the responder makes more
                    self.emit(DropEvent(ring=ring, count=count - self._drops_seen.get(ring, 0)))
                self._drops_seen[ring] = count

    def _done(self) -> bool:
        ended = self.coordinator.input_ended
        if ended is None:
            return False
        waited = (time.monotonic_ns() - ended.t_ns) / 1e9
        if waited < self.config.supervisor.done_grace_s:
            return False
        if self.coordinator.idle():
            return True
        limit = self.config.supervisor.done_grace_s + self.config.stt.max_utterance_s + self.config.llm.total_timeout_s
        if waited > limit + 10:
            log.warning("input ended %.0f s ago but sessions are still open; exiting anyway", waited)
            return True
        return False

    def _flush_output(self, timeout_s: float = 3.0) -> None:
        ring = self.rings["responder.in"]
        deadline = time.monotonic() + timeout_s
        while ring.stats().occupancy and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # the responder writes the last event after taking it from the ring

    # ---- the loop ----------------------------------------------------------------------

    def _idle(self) -> bool:
        self.watchdog.tick(self.supervisor.health)
        if self._pump() == 0:
            time.sleep(0.01)
        return not self.stop_requested

    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        if signum is not None:
            log.info("signal %d: stopping", signum)
        self.stop_requested = True

    def run(self) -> int:
        started = time.monotonic()
        next_check = 0.0
        try:
            if self.http is not None:
                try:
                    self.http.start()
                except OSError as exc:  # taken since the pre-start check: one line, not a traceback
                    log.error("[http] %s:%d: cannot listen (%s)", self.config.http.host, self.config.http.port,
                              exc.strerror or exc)
                    return 2
                log.info("HTTP on http://%s:%d/ (/healthz, /metrics, /events)", self.config.http.host, self.http.port)
            # Capture starts last, once its readers have loaded their models: a replayed file
            # must not play to nobody (a live microphone loses nothing that matters by this).
            listeners = [name for name in self.worker_names if name != "capture"]
            if not self.stop_requested:  # a signal during start-up: spawn nothing
                self.supervisor.start(listeners)
            # A worker that cannot start (a missing model) is not waited for: the others go on without it.
            if not self.supervisor.wait_running(listeners, self.config.supervisor.start_timeout_s, self._idle) \
                    and not self.stop_requested:
                failed = self.supervisor.cannot_start()
                if failed:
                    log.error("starting without %s (cannot start)", ", ".join(failed))
                else:
                    log.warning("not every worker came up in %.0f s; starting capture anyway",
                                self.config.supervisor.start_timeout_s)
            if not self.stop_requested:
                self.supervisor.start(["capture"])
            last_busy = time.monotonic()
            while not self.stop_requested:
                now = time.monotonic()
                if self._pump():
                    last_busy = now
                else:  # poll fast while a session is moving, slowly when the kiosk is idle
                    busy = self.coordinator.sessions or now - last_busy < 2.0
                    time.sleep(0.002 if busy else 0.01)
                self.coordinator.tick()
                if now >= next_check:
                    next_check = now + 0.1
                    self.supervisor.poll()
                    self.watchdog.tick(self.supervisor.health)
                    self.coordinator.check_deadlines()
                    self._report_drops()
                    if self.options.exit_when_done and self._done():
                        self._flush_output()
                        break
                    if self.options.exit_when_done and "capture" in self.supervisor.cannot_start():
                        self._flush_output()
                        return 1  # the input can never end: nothing to wait for
                    if self.options.max_seconds and now - started > self.options.max_seconds:
                        log.warning("max run time reached")
                        break
            return 0
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.watchdog.stopping()
            if self.http is not None:
                self.http.stop()
            self.supervisor.stop()
        finally:
            self.backpressure.unlink_all()
            self.heartbeat.close()
            self.store.close()


def install_signal_handlers(pipeline: Pipeline) -> None:
    signal.signal(signal.SIGTERM, pipeline.request_stop)
    signal.signal(signal.SIGINT, pipeline.request_stop)
