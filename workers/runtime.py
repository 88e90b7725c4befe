"""What every worker process shares: start-up, rings, heartbeat, stop conditions.

`worker_main` is the spawn target. It names the process `vigil-<name>`, asks the kernel
to SIGTERM it when the parent dies (so no orphan outlives a `kill -9` of the supervisor),
attaches the rings the parent created, and hands a `WorkerContext` to the worker
module's `run(ctx)`.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Config
from pipeline.logs import configure_logging
from pipeline.messages import decode, encode
from shm.audio_ring import AudioRing
from shm.heartbeat import HeartbeatTable
from shm.message_ring import MessageRing, MessageTooLarge

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerSpec:
    """How the supervisor starts one worker; everything here must pickle (spawn)."""

    name: str
    module: str  # e.g. "workers.stt"; must define run(ctx)
    row: int  # heartbeat row
    heartbeat: str  # heartbeat segment name
    heartbeat_rows: int
    inbox: str | None = None  # parent → worker message ring
    outbox: str | None = None  # worker → parent message ring
    audio: str | None = None  # audio ring segment name
    audio_slot: int | None = None  # this worker's reader slot in the audio ring header
    extra: dict[str, Any] = field(default_factory=dict)


class WorkerContext:
    """A worker's handles: config, rings, heartbeat, and the stop condition."""

    def __init__(self, spec: WorkerSpec, config: Config) -> None:
        self.spec = spec
        self.name = spec.name
        self.config = config
        self.extra = spec.extra
        self.log = logging.getLogger(f"vigil.{spec.name}")
        self._stop = False
        self._parent = os.getppid()
        self._pid = os.getpid()
        self._heartbeat = HeartbeatTable.attach(spec.heartbeat, spec.heartbeat_rows)
        self.audio = AudioRing.attach(spec.audio) if spec.audio else None
        self.inbox = MessageRing.attach(spec.inbox, decoder=decode) if spec.inbox else None
        self.outbox = MessageRing.attach(spec.outbox) if spec.outbox else None

    def request_stop(self, *_: Any) -> None:
        self._stop = True

    def should_stop(self) -> bool:
        """True once SIGTERM arrived or the parent is gone (then we must not linger)."""
        return self._stop or os.getppid() != self._parent

    def beat(self) -> None:
        """Tell the supervisor this worker's main loop is alive; call it at least every second."""
        self._heartbeat.beat(self.spec.row, self._pid)

    def send(self, message: Any) -> bool:
        if self.outbox is None:
            raise RuntimeError(f"{self.name} has no outbox")
        try:
            return self.outbox.put(encode(message))
        except MessageTooLarge as exc:
            self.log.error("message dropped, too large for a slot: %s", exc)
            return False

    def recv(self, timeout: float = 0.0) -> Any | None:
        if self.inbox is None:
            time.sleep(timeout)
            return None
        return self.inbox.get(timeout)

    def close(self) -> None:
        for ring in (self.audio, self.inbox, self.outbox):
            if ring is not None:
                ring.close()
        self._heartbeat.close()


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # the getppid() check in should_stop() still catches an orphaned worker


def worker_main(spec: WorkerSpec, config: Config) -> None:
    """Spawn entry point of every worker process."""
    try:
        from setproctitle import setproctitle

        setproctitle(f"vigil-{spec.name}")
    except ImportError:
        pass
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent leads the stop
    configure_logging(f"vigil-{spec.name}")
    ctx = WorkerContext(spec, config)
    signal.signal(signal.SIGTERM, ctx.request_stop)
    try:
        module = importlib.import_module(spec.module)
        module.run(ctx)
    finally:
        ctx.close()
