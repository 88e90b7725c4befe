"""PipelineSupervisor: starts the worker processes, watches them, restarts them, stops them.

Each worker is a `spawn`ed process (no inherited locks or threads from the parent). It is
restarted when it exits or when its shared-memory heartbeat goes quiet (a hang or a
SIGSTOP), after an exponential backoff; more than `restart_budget` restarts within
`restart_window_s` mark it "failed" (health turns degraded) but it is still retried at the
longest backoff, because a kiosk must heal itself when the cause goes away.

A worker whose `setup()` cannot start for a reason no restart can fix (a missing or corrupt
model file, a bad path: it exits with `EXIT_CANNOT_START` and sends its reason) is marked
"failed" with that reason, reported once (an `error` event) and not restarted in this run:
the operator fixes the file or the config and restarts Vigil. The other workers go on.

A worker whose resident memory grows past `rss_limit_mb` (a leak, drift in a C library) is
recycled: SIGTERM, a bounded wait, SIGKILL if it does not go, and an immediate restart that
does not count against the restart budget (it did not crash).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from core.config import Config
from core.events import ErrorEvent, Event, WorkerEvent, WorkerEventKind
from shm.heartbeat import HeartbeatTable
from workers.base import EXIT_CANNOT_START, WorkerSpec, worker_main

log = logging.getLogger("vigil.supervisor")


@dataclass
class WorkerHandle:
    spec: WorkerSpec
    process: multiprocessing.process.BaseProcess | None = None
    state: str = "pending"  # pending (not started yet) | starting | running | restarting | failed | stopped
    restarts: int = 0
    started_at: float = 0.0
    next_start_at: float = 0.0
    backoff_s: float = 0.0
    recent_restarts: deque = field(default_factory=lambda: deque(maxlen=64))
    recycle_deadline: float | None = None  # set while a recycled worker is being stopped (SIGTERM sent)
    recycles: int = 0
    report: Any = None  # read end of the pipe on which the worker says why it cannot start
    cannot_start: str | None = None  # that reason, once it came: the worker stays down for this run

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class PipelineSupervisor:
    def __init__(self, config: Config, specs: list[WorkerSpec], heartbeat: HeartbeatTable,
                 on_event: Callable[[Event], None] | None = None) -> None:
        self.cfg = config.supervisor
        self.config = config
        self.heartbeat = heartbeat
        self.workers = {spec.name: WorkerHandle(spec) for spec in specs}
        self.on_event = on_event or (lambda event: None)
        self._mp = multiprocessing.get_context("spawn")
        self._next_rss_check = 0.0

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self, names: list[str] | None = None) -> None:
        """Start the named workers (all by default); the others stay pending until started."""
        for name, handle in self.workers.items():
            if names is None or name in names:
                self._spawn(handle)

    def wait_running(self, names: list[str], timeout_s: float, idle: Callable[[], bool]) -> bool:
        """Poll until the named workers have loaded their models and beat; True if all of them did.

        Returns early when each is running or cannot start (it will not come up: waiting longer
        would only keep the others deaf). `idle()` runs between polls and returns False to give
        up early (a stop request).
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll()
            handles = [self.workers[name] for name in names]
            if all(h.state == "running" or h.cannot_start is not None for h in handles):
                return all(h.state == "running" for h in handles)
            if not idle():
                return False
        return False

    def cannot_start(self) -> dict[str, str]:
        """The workers that cannot start in this run, with their reasons."""
        return {name: h.cannot_start for name, h in self.workers.items() if h.cannot_start is not None}

    def _spawn(self, handle: WorkerHandle) -> None:
        self.heartbeat.clear(handle.spec.row)
        report, writer = self._mp.Pipe(duplex=False)
        process = self._mp.Process(target=worker_main, args=(handle.spec, self.config, writer),
                                   name=f"vigil-{handle.spec.name}", daemon=False)
        try:
            process.start()
        finally:
            writer.close()  # the child has its copy; ours would keep the pipe open past the child's exit
        self._close_report(handle)
        handle.report = report
        handle.process = process
        handle.started_at = time.monotonic()
        if handle.state != "failed":  # "failed" stays visible until the worker stays up for a window
            handle.state = "starting"
        log.info("started %s (pid %d)", handle.spec.name, process.pid)
        self._event(handle, "started" if handle.restarts == 0 else "restarted")

    def _event(self, handle: WorkerHandle, event: WorkerEventKind, exitcode: int | None = None,
               pid: int | None = None) -> None:
        self.on_event(WorkerEvent(name=handle.spec.name, event=event, pid=pid or handle.pid, exitcode=exitcode))

    def _schedule_restart(self, handle: WorkerHandle, reason: str) -> None:
        now = time.monotonic()
        handle.recent_restarts.append(now)
        recent = sum(1 for t in handle.recent_restarts if now - t <= self.cfg.restart_window_s)
        stable = now - handle.started_at > self.cfg.restart_window_s
        handle.backoff_s = self.cfg.backoff_initial_s if stable or not handle.backoff_s else min(
            handle.backoff_s * 2, self.cfg.backoff_max_s)
        if recent > self.cfg.restart_budget:
            handle.state = "failed"
            handle.backoff_s = self.cfg.backoff_max_s
            log.error("%s failed %d times within %.0f s; retrying every %.0f s", handle.spec.name, recent,
                      self.cfg.restart_window_s, handle.backoff_s)
        else:
            handle.state = "restarting"
        handle.next_start_at = now + handle.backoff_s
        log.warning("%s %s; restart in %.1f s", handle.spec.name, reason, handle.backoff_s)

    def poll(self) -> None:
        """Check every worker once: exited → restart later; silent too long → kill, restart later."""
        now = time.monotonic()
        for handle in self.workers.values():
            process = handle.process
            if handle.state in ("stopped", "pending") or handle.cannot_start is not None:
                continue
            if process is None:
                if now >= handle.next_start_at:
                    handle.restarts += 1
                    self._spawn(handle)
                continue
            if process.exitcode is not None:
                code, pid = process.exitcode, process.pid
                process.join(0)
                process.close()
                handle.process = None
                self._event(handle, "exited", code, pid=pid)
                if code == EXIT_CANNOT_START and handle.recycle_deadline is None:
                    self._give_up(handle)
                    continue
                if handle.recycle_deadline is not None:  # we stopped it ourselves: back at once, no crash
                    handle.recycle_deadline = None
                    if handle.state != "failed":
                        handle.state = "restarting"
                    handle.next_start_at = now
                    log.info("%s recycled (exit code %s); restarting", handle.spec.name, code)
                else:
                    self._schedule_restart(handle, f"exited with code {code}")
                continue
            if handle.recycle_deadline is not None:
                if now >= handle.recycle_deadline:
                    log.warning("%s did not stop within %.1f s of its recycle; killing", handle.spec.name,
                                self.cfg.stop_timeout_s)
                    try:
                        os.kill(handle.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    handle.recycle_deadline = now + 5.0  # the exit is picked up above on a later poll
                continue
            age = self.heartbeat.age_s(handle.spec.row)
            if age is None:
                if now - handle.started_at > self.cfg.start_timeout_s:
                    self._kill_hung(handle, f"no heartbeat {self.cfg.start_timeout_s:.0f} s after start")
                continue
            if handle.state in ("starting", "restarting"):
                handle.state = "running"
            elif handle.state == "failed" and now - handle.started_at > self.cfg.restart_window_s:
                handle.state = "running"  # it stayed up long enough: it healed
            if age > self.cfg.heartbeat_timeout_s:
                self._kill_hung(handle, f"heartbeat silent for {age:.1f} s")
        if self.cfg.rss_limit_mb and now >= self._next_rss_check:
            self._next_rss_check = now + self.cfg.rss_check_interval_s
            self._check_rss()

    def _close_report(self, handle: WorkerHandle) -> None:
        if handle.report is not None:
            handle.report.close()
            handle.report = None

    def _give_up(self, handle: WorkerHandle) -> None:
        """The worker cannot start (a missing or corrupt model, a bad path): report it once, keep it down."""
        reason = f"exit code {EXIT_CANNOT_START}"
        try:
            if handle.report is not None and handle.report.poll(0):
                reason = str(handle.report.recv())[:500]
        except (EOFError, OSError):
            pass
        self._close_report(handle)
        handle.cannot_start = reason
        handle.state = "failed"
        handle.next_start_at = float("inf")
        log.error("%s cannot start: %s; not restarting it (fix this and restart Vigil)", handle.spec.name, reason)
        self.on_event(ErrorEvent(where=handle.spec.name, message=f"cannot start: {reason}; not restarted"))

    def resources(self) -> dict[str, dict[str, float]]:
        """Every live worker's resident memory (`rss_bytes`) and CPU time so far (`cpu_s`, user + system),
        read with psutil from the pids this supervisor started (a restarted worker's CPU time starts at 0).

        Safe to call from another thread (a /metrics scrape) while `poll()` replaces a process.
        """
        out = {}
        for name, handle in self.workers.items():
            child = handle.process
            try:
                if child is None or child.exitcode is not None:
                    continue
                process = psutil.Process(child.pid)
                with process.oneshot():
                    cpu = process.cpu_times()
                    out[name] = {"rss_bytes": float(process.memory_info().rss), "cpu_s": cpu.user + cpu.system}
            except (psutil.Error, ValueError):  # ValueError: poll() closed the process object meanwhile
                continue
        return out

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of every live worker, in MB (psutil)."""
        return {name: r["rss_bytes"] / 2**20 for name, r in self.resources().items()}

    def _check_rss(self) -> None:
        for name, rss in self.rss_mb().items():
            handle = self.workers[name]
            if rss <= self.cfg.rss_limit_mb or handle.recycle_deadline is not None or handle.state == "stopped":
                continue
            self.recycle(handle, f"rss {rss:.0f} MB over the {self.cfg.rss_limit_mb} MB limit")

    def recycle(self, handle: WorkerHandle, reason: str) -> None:
        """Stop a worker gracefully (SIGTERM now, SIGKILL after stop_timeout_s) and restart it at once.

        Never blocks the caller: the exit is collected by a later poll().
        """
        log.warning("%s: %s; recycling pid %s", handle.spec.name, reason, handle.pid)
        if time.monotonic() - handle.started_at < self.cfg.restart_window_s:
            log.error("%s was recycled %.0f s after its start: its working set may be above [supervisor] "
                      "rss_limit_mb", handle.spec.name, time.monotonic() - handle.started_at)
        handle.recycles += 1
        handle.recycle_deadline = time.monotonic() + self.cfg.stop_timeout_s
        self.on_event(ErrorEvent(where=handle.spec.name, message=f"{reason}; recycled"))
        self._event(handle, "recycled")
        try:
            os.kill(handle.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def _kill_hung(self, handle: WorkerHandle, reason: str) -> None:
        log.warning("%s hung (%s); killing pid %s", handle.spec.name, reason, handle.pid)
        self._event(handle, "hung")
        try:
            os.kill(handle.pid, signal.SIGKILL)  # SIGTERM cannot reach a SIGSTOPped or stuck process
        except ProcessLookupError:
            pass
        handle.process.join(5)

    def health(self) -> dict[str, Any]:
        workers = {}
        for name, handle in self.workers.items():
            age = self.heartbeat.age_s(handle.spec.row)
            workers[name] = {"pid": handle.pid, "state": handle.state, "restarts": handle.restarts,
                             "heartbeat_age_s": None if age is None else round(age, 2)}
            if handle.recycles:
                workers[name]["recycles"] = handle.recycles
            if handle.cannot_start is not None:
                workers[name]["reason"] = f"cannot start: {handle.cannot_start}"
        ok = all(w["state"] == "running" for w in workers.values())
        return {"status": "ok" if ok else "degraded", "workers": workers}

    def all_running(self) -> bool:
        return all(h.state == "running" for h in self.workers.values())

    def stop(self) -> None:
        """SIGTERM everyone, join with a timeout, then terminate, then kill. Never raises."""
        handles = [h for h in self.workers.values() if h.process is not None]
        for handle in handles:
            handle.state = "stopped"
            try:
                os.kill(handle.pid, signal.SIGTERM)
            except (ProcessLookupError, TypeError):
                pass
            except OSError as exc:
                log.warning("could not signal %s: %s", handle.spec.name, exc)
        deadline = time.monotonic() + self.cfg.stop_timeout_s
        for handle in handles:
            handle.process.join(max(0.0, deadline - time.monotonic()))
        for handle in handles:
            if handle.process.exitcode is None:
                log.warning("%s did not stop in %.1f s; killing", handle.spec.name, self.cfg.stop_timeout_s)
                handle.process.kill()
                handle.process.join(2)
        for handle in self.workers.values():
            handle.state = "stopped"
            if handle.process is not None and handle.process.exitcode is not None:
                handle.process.close()
            handle.process = None
            self._close_report(handle)
