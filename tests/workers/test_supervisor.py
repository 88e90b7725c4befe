"""PipelineSupervisor with real spawned processes: restart, backoff, budget, hang detection, stop."""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import psutil
import pytest

from core.config import load_config
from pipeline.supervisor import PipelineSupervisor
from shm.heartbeat import HeartbeatTable
from workers.base import WorkerSpec


@pytest.fixture
def heartbeat():
    table = HeartbeatTable.create(f"vigil-{os.getpid()}-test-heartbeat", 3)
    yield table
    table.close()


def make(heartbeat, faults: dict[str, str], **supervisor):
    # The fault doubles beat every 50 ms: timings under the operator's floors ([supervisor] heartbeat_timeout_s
    # >= 1 s for real workers) keep these tests short, so they bypass the loader's check.
    config = load_config(None, environ={})
    config = dataclasses.replace(config, supervisor=dataclasses.replace(config.supervisor, **supervisor))
    specs = [WorkerSpec(name, f"tests.fault_workers:{fault}", row=i, heartbeat=f"vigil-{os.getpid()}-test-heartbeat",
                        heartbeat_rows=3) for i, (name, fault) in enumerate(faults.items())]
    events: list[dict] = []
    return PipelineSupervisor(config, specs, heartbeat, on_event=lambda e: events.append(e.to_dict())), events


def poll_until(supervisor, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervisor.poll()
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_crash_loop_backs_off_then_fails_but_keeps_retrying(heartbeat):
    sup, events = make(heartbeat, {"good": "healthy", "bad": "crash"}, backoff_initial_s=0.1, backoff_max_s=1.0,
                       restart_budget=3, restart_window_s=30)
    sup.start()
    backoffs: list[float] = []

    def failed() -> bool:
        backoff = sup.workers["bad"].backoff_s
        if backoff and (not backoffs or backoffs[-1] != backoff):
            backoffs.append(backoff)
        return sup.workers["bad"].state == "failed"

    try:
        assert poll_until(sup, failed, 20), sup.health()
        restarts = [e for e in events if e["name"] == "bad" and e["event"] == "restarted"]
        assert len(restarts) >= 3
        assert backoffs[:3] == [0.1, 0.2, 0.4] and backoffs[-1] == 1.0, backoffs  # exponential, capped
        health = sup.health()
        assert health["status"] == "degraded" and health["workers"]["good"]["state"] == "running"
        assert all(e["exitcode"] == 3 for e in events if e["event"] == "exited")
        before = sup.workers["bad"].restarts
        assert poll_until(sup, lambda: sup.workers["bad"].restarts > before, 5), "a failed worker is still retried"
    finally:
        sup.stop()
    assert all(h.process is None for h in sup.workers.values())


def test_silent_worker_is_killed_as_hung_and_restarted(heartbeat):
    sup, events = make(heartbeat, {"stuck": "hang_after_start"}, heartbeat_timeout_s=0.5, backoff_initial_s=0.1)
    sup.start()
    try:
        first = sup.workers["stuck"].pid
        assert poll_until(sup, lambda: any(e["event"] == "hung" for e in events), 10), events
        assert poll_until(sup, lambda: sup.workers["stuck"].pid not in (None, first), 10)
        assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    finally:
        sup.stop()


def test_sigstopped_worker_is_detected_and_stop_kills_everything(heartbeat):
    sup, events = make(heartbeat, {"a": "healthy", "b": "healthy"}, heartbeat_timeout_s=0.5, stop_timeout_s=1.0)
    sup.start()
    assert poll_until(sup, lambda: sup.all_running(), 30)
    frozen = sup.workers["b"].pid
    os.kill(frozen, signal.SIGSTOP)
    try:
        assert poll_until(sup, lambda: any(e["event"] == "hung" and e["name"] == "b" for e in events), 10)
    finally:
        pids = [h.pid for h in sup.workers.values() if h.pid]
        started = time.monotonic()
        sup.stop()
        took = time.monotonic() - started
    assert took < 5
    assert not [p for p in pids + [frozen] if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


def test_worker_over_its_rss_limit_is_recycled_gracefully_without_spending_the_budget(heartbeat):
    """LeakyWorker grows 100 MB/s; over the limit it gets SIGTERM, exits cleanly, and is back at once."""
    sup, events = make(heartbeat, {"steady": "healthy", "leaky": "leak"}, rss_limit_mb=200, rss_check_interval_s=0.2,
                       restart_budget=1, backoff_initial_s=5, heartbeat_timeout_s=5)
    sup.start()
    try:
        steady = sup.workers["steady"].pid
        first = sup.workers["leaky"].pid
        assert poll_until(sup, lambda: sup.workers["leaky"].restarts >= 2 and sup.workers["leaky"].state == "running",
                          40), (sup.health(), events)
        errors = [e for e in events if e["type"] == "error" and e["where"] == "leaky"]
        assert errors and "rss" in errors[0]["message"] and "recycled" in errors[0]["message"], errors
        exits = [e for e in events if e.get("event") == "exited" and e["name"] == "leaky"]
        assert exits and all(e["exitcode"] == 0 for e in exits), exits  # SIGTERM honoured: a clean exit
        recycled = [e for e in events if e.get("event") == "recycled" and e["name"] == "leaky"]
        assert len(recycled) >= 2
        handle = sup.workers["leaky"]
        # Not a crash: no backoff (5 s here) and no entry in the budget, so restart_budget=1 never marks it failed.
        assert not handle.recent_restarts and handle.state != "failed"
        assert handle.pid != first and sup.health()["workers"]["leaky"]["recycles"] >= 2
        assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
        assert sup.workers["steady"].pid == steady and sup.workers["steady"].recycles == 0
        assert all(rss < 200 for name, rss in sup.rss_mb().items() if name == "steady")
    finally:
        sup.stop()
    assert all(h.process is None for h in sup.workers.values())
