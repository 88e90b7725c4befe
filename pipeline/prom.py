"""Prometheus metrics for the pipeline, fed from the event stream (core/events.py).

The parent passes every emitted event to `PipelineMetrics.observe_event()` and the latest
supervisor health to `set_health()` (or gives a health callable to the constructor, which
`render()` then polls at scrape time); `watch_workers()` and `watch_sse()` add figures read at
scrape time. `render()` returns the text exposition for `/metrics`, in base units (seconds,
bytes) as Prometheus wants them: `promtool check metrics` accepts it.

Everything lives on a private `CollectorRegistry`, so several instances (tests, bench runs)
never collide, and nothing here raises into the pipeline: a malformed event is counted in
`vigil_bad_events_total` and otherwise ignored. Label values are bounded (a fixed set of
spans, at most `MAX_LABELS` distinct workers, rings, stages, routes) so a bug upstream cannot
grow the registry without limit.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.events import EventType, WorkerEventKind
from pipeline.latency import finite

log = logging.getLogger(__name__)

# Seconds: fine steps around the 1 s budget, coarse ones out to 10 s.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0,
)
# Per-stage compute: starts lower (a warm LLM first token is ~50 ms).
STAGE_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
)
ENDPOINT_BUCKETS_S: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0, 3.0)
# Spans of a `response` event's latency_ms that get a histogram (pipeline.latency.SPANS).
SPANS: tuple[str, ...] = (
    "speech_end_to_first_token",
    "wake_to_first_token",
    "speech_end_to_transcript",
    "transcript_to_first_token",
    "wake_to_speech_end",
    "first_token_to_done",
)
MAX_LABELS = 32  # distinct values per label (workers, rings, stages, routes, error sites)
OTHER = "other"


class _Bounded:
    """Maps label values to themselves until `limit` distinct ones were seen, then to "other"."""

    def __init__(self, limit: int = MAX_LABELS) -> None:
        self._seen: set[str] = set()
        self._limit = limit
        self._lock = threading.Lock()

    def __call__(self, value: Any) -> str:
        text = str(value if value is not None else "unknown")[:64]
        with self._lock:
            if text in self._seen:
                return text
            if len(self._seen) < self._limit:
                self._seen.add(text)
                return text
        return OTHER


class _SourceCollector(Collector):
    """Calls a stats function at scrape time (the HTTP server's SSE figures)."""

    def __init__(self, source: Callable[[], dict]) -> None:
        self._source = source

    def collect(self) -> Iterable:
        try:
            stats = self._source() or {}
        except Exception:  # a scrape must never fail because of a source
            log.debug("SSE stats source failed", exc_info=True)
            return []
        out = []
        g = GaugeMetricFamily("vigil_sse_clients", "Connected Server-Sent Events clients.")
        g.add_metric([], float(stats.get("clients", 0)))
        out.append(g)
        c = CounterMetricFamily("vigil_sse_events_published", "Events published to SSE clients.")
        c.add_metric([], float(stats.get("published", 0)))
        out.append(c)
        c = CounterMetricFamily("vigil_sse_events_dropped",
                                "Events a slow SSE client lost (oldest first), over all clients.")
        c.add_metric([], float(stats.get("dropped", 0)))
        out.append(c)
        return out


class _WorkerCollector(Collector):
    """Each worker's resident memory and CPU time, read at scrape time (`PipelineSupervisor.resources`)."""

    def __init__(self, source: Callable[[], dict], label: Callable[[Any], str]) -> None:
        self._source = source
        self._label = label

    def collect(self) -> Iterable:
        rss: dict[str, float] = {}
        cpu: dict[str, float] = {}
        try:
            for name, figures in (self._source() or {}).items():
                if not isinstance(figures, dict):
                    continue
                worker = self._label(name)  # bounded: several past the limit add up under "other"
                for into, key in ((rss, "rss_bytes"), (cpu, "cpu_s")):
                    value = finite(figures.get(key))
                    if value is not None and value >= 0:
                        into[worker] = into.get(worker, 0.0) + value
        except Exception:  # a scrape must never fail because of a source
            log.debug("worker resources source failed", exc_info=True)
            return []
        g = GaugeMetricFamily("vigil_worker_resident_memory_bytes", "Resident memory of the worker process.",
                              labels=["worker"])
        for worker, value in sorted(rss.items()):
            g.add_metric([worker], value)
        c = CounterMetricFamily("vigil_worker_cpu_seconds",
                                "CPU time (user + system) of the worker process; starts from 0 when it restarts.",
                                labels=["worker"])
        for worker, value in sorted(cpu.items()):
            c.add_metric([worker], value)
        return [g, c]


class PipelineMetrics:
    """Counters, histograms and gauges of one pipeline, on their own registry."""

    def __init__(self, health: Callable[[], dict] | None = None, *, max_sessions: int = 4096) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._health = health
        r = self.registry
        ProcessCollector(registry=r)  # the parent's own process_* figures (memory, CPU, open files)
        self.sessions = Counter("vigil_sessions", "Sessions started (one per accepted wake).", registry=r)
        self.wakes = Counter("vigil_wakes", "Wake-word proposals by result.", ["result"], registry=r)
        self.responses = Counter("vigil_responses", "Responses finished, by route and degraded.",
                                 ["route", "degraded"], registry=r)
        self.tokens = Counter("vigil_tokens", "Response tokens streamed.", registry=r)
        self.transcripts = Counter("vigil_transcripts", "Final transcripts.", registry=r)
        self.worker_events = Counter("vigil_worker_events", "Worker lifecycle events.", ["worker", "event"],
                                     registry=r)
        self.worker_restarts = Counter("vigil_worker_restarts",
                                       "Worker restarts by the supervisor (after an exit, a hang or a recycle).",
                                       ["worker"], registry=r)
        self.drops = Counter("vigil_drops", "Messages or audio frames dropped, by ring.", ["ring"], registry=r)
        self.errors = Counter("vigil_errors", "Error events, by where.", ["where"], registry=r)
        self.bad_events = Counter("vigil_bad_events", "Events that could not be interpreted.", registry=r)
        self.latency = Histogram("vigil_latency_seconds", "Latency spans per response.",
                                 ["span"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.stage = Histogram("vigil_stage_compute_seconds", "Per-stage compute time per response.",
                               ["stage"], buckets=STAGE_BUCKETS_S, registry=r)
        # The endpoint decision (pipeline.latency "speech_end_to_endpoint"): how long the pause had lasted when
        # the request was taken as complete, by what decided it ("turn": the turn model and the transcript,
        # "silence": a fixed silence or the longest pause).
        self.endpoint_pause = Histogram("vigil_endpoint_pause_seconds",
                                        "Pause after the speech when the request was taken as complete.",
                                        ["decided_by"], buckets=ENDPOINT_BUCKETS_S, registry=r)
        self.health_ok = Gauge("vigil_health_ok", "1 when /healthz says ok, 0 when degraded.", registry=r)
        self.worker_up = Gauge("vigil_worker_up", "1 when the worker is running, else 0.", ["worker"], registry=r)
        self.worker_heartbeat_age = Gauge("vigil_worker_heartbeat_age_seconds",
                                          "Seconds since the worker's last heartbeat (NaN: none yet).",
                                          ["worker"], registry=r)
        self._workers, self._rings, self._stages = _Bounded(), _Bounded(), _Bounded()
        self._routes, self._wheres = _Bounded(), _Bounded()
        self._seen_sessions: OrderedDict[Any, None] = OrderedDict()
        self._max_sessions = max_sessions
        self._lock = threading.Lock()

    # -- inputs --------------------------------------------------------------------------
    def observe_event(self, event: dict) -> None:
        """Update from one contract event. Never raises."""
        try:
            self._observe(event)
        except Exception:  # metrics must never break the pipeline
            self.bad_events.inc()
            log.debug("metrics could not interpret event %r", event, exc_info=True)

    def _new_session(self, session: Any) -> None:
        if session is None:
            return
        with self._lock:
            if session in self._seen_sessions:
                return
            self._seen_sessions[session] = None
            while len(self._seen_sessions) > self._max_sessions:
                self._seen_sessions.popitem(last=False)
        self.sessions.inc()

    def _observe(self, event: dict) -> None:
        # A plain dict, not a parsed event: a malformed one still counts what it can (or as bad).
        kind = event.get("type")
        if kind == EventType.WAKE:
            self.wakes.labels("accepted").inc()
            self._new_session(event.get("session"))
        elif kind == EventType.WAKE_REJECTED:
            self.wakes.labels("rejected").inc()
        elif kind == EventType.TOKEN:
            self.tokens.inc()
        elif kind == EventType.TRANSCRIPT:
            if event.get("final", True):
                self.transcripts.inc()
        elif kind == EventType.RESPONSE:
            self._new_session(event.get("session"))  # a session without a wake event (e.g. a replay)
            route = self._routes(event.get("route") or "unknown")
            degraded = "true" if event.get("degraded") else "false"
            self.responses.labels(route, degraded).inc()
            for name, value in (event.get("latency_ms") or {}).items():
                ms = finite(value)
                if ms is None or ms < 0:
                    continue
                if name in SPANS:
                    self.latency.labels(name).observe(ms / 1000.0)
                if name == "speech_end_to_endpoint":
                    decided = "turn" if finite((event.get("latency_ms") or {}).get("endpoint_score")) is not None \
                        else "silence"
                    self.endpoint_pause.labels(decided).observe(ms / 1000.0)
                elif name.endswith("_compute"):
                    self.stage.labels(self._stages(name[: -len("_compute")])).observe(ms / 1000.0)
        elif kind == EventType.WORKER:
            worker = self._workers(event.get("name"))
            what = str(event.get("event") or "unknown")
            if what not in get_args(WorkerEventKind):
                what = OTHER
            self.worker_events.labels(worker, what).inc()
            if what == "restarted":
                self.worker_restarts.labels(worker).inc()
        elif kind == EventType.DROP:
            count = finite(event.get("count"))
            if count is not None and count > 0:
                self.drops.labels(self._rings(event.get("ring"))).inc(count)
        elif kind == EventType.ERROR:
            self.errors.labels(self._wheres(event.get("where"))).inc()
        elif not isinstance(kind, str):
            self.bad_events.inc()

    def set_health(self, health: dict) -> None:
        """Gauges from `PipelineSupervisor.health()` (the /healthz JSON). Never raises."""
        try:
            self.health_ok.set(1.0 if health.get("status") == "ok" else 0.0)
            for name, info in (health.get("workers") or {}).items():
                worker = self._workers(name)
                self.worker_up.labels(worker).set(1.0 if info.get("state") == "running" else 0.0)
                age = finite(info.get("heartbeat_age_s"))
                self.worker_heartbeat_age.labels(worker).set(math.nan if age is None else age)
                self.worker_restarts.labels(worker)  # every worker has its series, 0 until a restart
        except Exception:
            self.bad_events.inc()
            log.debug("metrics could not interpret health %r", health, exc_info=True)

    def watch_workers(self, resources: Callable[[], dict]) -> None:
        """Export each worker's memory and CPU time (`PipelineSupervisor.resources`) at scrape time. Call once."""
        self.registry.register(_WorkerCollector(resources, self._workers))

    def watch_sse(self, stats: Callable[[], dict]) -> None:
        """Export an SSE server's figures (`KioskHttpServer.stats`) at scrape time. Call once."""
        self.registry.register(_SourceCollector(stats))

    # -- output --------------------------------------------------------------------------
    def render(self) -> bytes:
        """Prometheus text exposition; refreshes health first when a health callable was given."""
        if self._health is not None:
            try:
                self.set_health(self._health())
            except Exception:
                self.health_ok.set(0.0)
                log.debug("health callable failed during a scrape", exc_info=True)
        return generate_latest(self.registry)


