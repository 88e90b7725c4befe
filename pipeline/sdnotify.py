"""systemd's notify protocol (sd_notify) without a dependency, and the watchdog policy.

`Notifier` sends `KEY=VALUE` lines in one AF_UNIX datagram to `$NOTIFY_SOCKET` (a path, or
`@name` for the abstract namespace); with no `NOTIFY_SOCKET` every call is a cheap no-op, so
the same code runs under systemd, in a terminal and in tests. Sending never blocks and never
raises: a notification that cannot be delivered is counted and logged once.

`WatchdogPolicy` decides what to tell systemd from the supervisor's health, once per loop
tick of the parent: READY=1 once every worker runs; then WATCHDOG=1 every half watchdog
period, but only while the pipeline is healthy — every worker running, or a worker down for
less than `grace_s` (the supervisor's own restart is usually enough). A worker that stays
down, a restart loop, or a wedged parent loop stops the pings, and systemd (WatchdogSec=,
Restart=always) restarts the whole service. STATUS= carries a one-line summary, STOPPING=1
the shutdown.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("vigil.sdnotify")

Health = Mapping[str, Any]


class Notifier:
    """One datagram per notification to systemd's socket; a no-op when there is none."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None
        self._last_error: str | None = None
        self._target: str | bytes | None = None
        if self.address is not None:
            if self.address.startswith("@"):
                self._target = b"\0" + self.address[1:].encode()  # abstract namespace
            elif self.address.startswith("/"):
                self._target = self.address
            else:  # e.g. "vsock:…" (systemd ≥ 254 in VMs): not supported here
                log.warning("NOTIFY_SOCKET=%r is not a unix socket path; notifications disabled", self.address)
                self.address = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, unset_environment: bool = False) -> Notifier:
        """From $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID, as sd_notify(3) reads them.

        The watchdog is off when WATCHDOG_PID names another process (the variables were
        inherited). `unset_environment` removes the variables from os.environ so child
        processes do not inherit them (not needed with NotifyAccess=main).
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC", "").strip()
        if raw:
            try:
                usec = int(raw)
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not an integer; watchdog off", raw)
        pid = env.get("WATCHDOG_PID", "").strip()
        if usec and pid:
            try:
                if int(pid) != os.getpid():
                    usec = None
            except ValueError:
                usec = None
        if unset_environment and environ is None:
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(name, None)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self._target is not None

    def watchdog_timeout_s(self) -> float | None:
        """The watchdog timeout systemd enforces ($WATCHDOG_USEC), or None when there is none."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 1e6

    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half of $WATCHDOG_USEC (as sd_watchdog_enabled(3) advises), or None."""
        timeout = self.watchdog_timeout_s()
        return None if timeout is None else timeout / 2

    def notify(self, *fields: str) -> bool:
        """Send `KEY=VALUE` fields in one datagram; True when systemd's socket took it."""
        if self._target is None:
            return False
        payload = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, socket.MSG_DONTWAIT, self._target)
        except OSError as exc:
            self.failed += 1
            text = f"{type(exc).__name__}: {exc}"
            if text != self._last_error:  # log each distinct failure once, not at every tick
                log.warning("sd_notify to %s failed (%d so far): %s", self.address, self.failed, text)
                self._last_error = text
            return False
        self.sent += 1
        self._last_error = None
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _cannot_start(info: Mapping[str, Any]) -> bool:
    """The supervisor gave up on this worker for the run (its setup failed for a reason no restart fixes)."""
    return str(info.get("reason", "")).startswith("cannot start")


class WatchdogPolicy:
    """What the parent tells systemd, decided from `PipelineSupervisor.health()` at each tick.

    - READY=1 the first time every worker is "running" (models loaded, heartbeat seen).
    - WATCHDOG=1 every `ping_period_s` (default: half of $WATCHDOG_USEC) while healthy:
      every worker running, or each one that is not has been down for less than `grace_s`.
      A worker counts as down while its state is not "running" (starting, restarting,
      failed) or its heartbeat is older than `grace_s` -- except one that cannot start
      (a missing model file: /healthz says so, degraded), which restarting the service would
      only repeat every minute. No pings before READY: systemd arms
      the watchdog only once start-up is complete (TimeoutStartSec= covers the model load).
    - STATUS= a one-line summary whenever it changes.
    - STOPPING=1 once, from `stopping()`; nothing is sent after it.
    """

    def __init__(self, notifier: Notifier, grace_s: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 ping_period_s: float | None = None) -> None:
        if grace_s <= 0:
            raise ValueError(f"grace_s must be > 0, got {grace_s!r}")
        self.notifier = notifier
        self.grace_s = float(grace_s)
        self.clock = clock
        self.ping_period_s = ping_period_s if ping_period_s is not None else notifier.watchdog_interval_s()
        self.ready_sent = False
        self.stopped = False
        self.pings = 0
        self.healthy = True
        self.last_status: str | None = None
        self._down_since: dict[str, float] = {}
        self._next_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled

    def tick(self, health: Health | Callable[[], Health]) -> None:
        """Call once per loop tick; `health` is the supervisor's health dict or a callable giving it
        (called only when systemd is listening, so the tick costs nothing otherwise)."""
        if self.stopped or not self.notifier.enabled:
            return
        if callable(health):
            health = health()
        now = self.clock()
        workers: Mapping[str, Mapping[str, Any]] = health.get("workers", {}) or {}
        down = self._update_down(workers, now)
        if not self.ready_sent:
            status = self._starting_status(workers, down)
            if not down:
                self.ready_sent = True
                self.last_status = status = self._status(workers, down, now)
                self.notifier.ready(status)
                self._next_ping = now  # the first ping at once
            elif status != self.last_status:
                self.last_status = status
                self.notifier.status(status)
            if not self.ready_sent:
                return
        overdue = {name: now - since for name, since in down.items() if now - since >= self.grace_s}
        was_healthy, self.healthy = self.healthy, not overdue
        if self.healthy != was_healthy:
            if self.healthy:
                log.info("pipeline healthy again: watchdog pings resume")
            else:
                log.error("%s down for more than %.0f s: withholding watchdog pings so systemd restarts the "
                          "service", ", ".join(sorted(overdue)), self.grace_s)
        if self.healthy and self.ping_period_s and now >= self._next_ping:
            if self.notifier.watchdog():
                self.pings += 1
            self._next_ping = now + self.ping_period_s
        status = self._status(workers, down, now)
        if status != self.last_status:
            self.last_status = status
            self.notifier.status(status)

    def stopping(self, reason: str = "stopping") -> None:
        """STOPPING=1 (once), when shutdown begins."""
        if self.stopped:
            return
        self.stopped = True
        self.notifier.stopping(reason)

    # ---- assessment --------------------------------------------------------------------

    def _update_down(self, workers: Mapping[str, Mapping[str, Any]], now: float) -> dict[str, float]:
        """Track since when each worker has been down; returns {name: since}."""
        for name, info in workers.items():
            age = info.get("heartbeat_age_s")
            up = info.get("state") == "running" and (age is None or age < self.grace_s)
            if up or _cannot_start(info):  # a restart of the service cannot fix it: it is degraded, not down
                self._down_since.pop(name, None)
                continue
            if up:
                self._down_since.pop(name, None)
            else:
                self._down_since.setdefault(name, now)
        for name in list(self._down_since):
            if name not in workers:
                del self._down_since[name]
        return dict(self._down_since)

    @staticmethod
    def _starting_status(workers: Mapping[str, Mapping[str, Any]], down: Mapping[str, float]) -> str:
        waiting = ", ".join(f"{name} {workers[name].get('state')}" for name in sorted(down))
        return f"starting: {len(workers) - len(down)}/{len(workers)} workers running ({waiting})"

    def _status(self, workers: Mapping[str, Mapping[str, Any]], down: Mapping[str, float], now: float) -> str:
        restarts = sum(int(info.get("restarts") or 0) for info in workers.values())
        running = f"{len(workers) - len(down)}/{len(workers)} workers running, {restarts} restarts"
        if not down:
            return f"ok: {running}"
        parts = ", ".join(f"{name} {workers[name].get('state')}" for name in sorted(down))
        if self.healthy:
            return f"degraded: {running}; {parts} (watchdog grace {self.grace_s:.0f} s)"
        return f"unhealthy: {running}; {parts} down > {self.grace_s:.0f} s, watchdog pings withheld"
