"""What every worker process shares: start-up, rings, heartbeat, stop, and one loop.

`worker_main` is the spawn target. It names the process `vigil-<name>`, asks the kernel to
SIGTERM it when the parent dies (so no orphan outlives a `kill -9` of the supervisor),
attaches the rings the parent created, and runs the worker.

A worker is a `Worker` subclass that writes only its handlers (the shape of wyoming's
`handle_event` or Pipecat's `process_frame`): `setup()` loads its engines, `handle(message)`
serves one message from its inbox, `step()` replaces the receive for workers that are driven
by audio instead (capture, wake word), `close()` releases what `setup()` took. The loop, the
heartbeat, the stop conditions and the rule "a Cancel for my session, or a newer
StartListening, takes over" (`interruption()`) live here, once. A handler inside one long
native call (a transcription, an embedding) wraps it in `with self.busy(max_s):` so the
heartbeat goes on for at most `max_s` seconds.

A `setup()` that fails in a way no restart can fix (a missing or corrupt model file, a bad
path: `CannotStart`, `ModelError`, a missing file or folder, or a subclass's `cannot_start`
errors) ends the process with `EXIT_CANNOT_START` after sending its one-line reason to the
supervisor, which reports it once and does not restart the worker.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from core.config import Config
from core.logs import configure_logging
from core.messages import Cancel, StartListening, decode, encode
from engines.model_files import ModelError
from shm.audio_ring import AudioRing
from shm.heartbeat import HeartbeatTable
from shm.message_ring import MessageRing, MessageTooLarge

_PR_SET_PDEATHSIG = 1
BUSY_BEAT_S = 0.25  # how often `Worker.busy()` beats from its helper thread
EXIT_CANNOT_START = 78  # sysexits.h EX_CONFIG: "restarting will not help, fix the configuration"


class CannotStart(RuntimeError):
    """`setup()` found a problem that no restart can fix; the message says which file or key."""


# What setup() may raise that a restart cannot fix (the file or folder is missing, unreadable, corrupt).
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    CannotStart, ModelError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


@dataclass(frozen=True)
class WorkerSpec:
    """How the supervisor starts one worker; everything here must pickle (spawn)."""

    name: str
    entry: str  # "module:Name": a Worker subclass (e.g. "workers.stt:SttWorker") or a function run(ctx)
    row: int  # heartbeat row
    heartbeat: str  # heartbeat segment name
    heartbeat_rows: int
    inbox: str | None = None  # parent → worker message ring
    outbox: str | None = None  # worker → parent message ring
    audio: str | None = None  # audio ring segment name
    audio_slot: int | None = None  # this worker's reader slot in the audio ring header
    events_path: str | None = None  # responder: append the JSONL event stream here
    stdout: bool = True  # responder: print the conversation for people


class WorkerContext:
    """A worker's handles: config, rings, heartbeat, and the stop condition."""

    def __init__(self, spec: WorkerSpec, config: Config) -> None:
        self.spec = spec
        self.name = spec.name
        self.config = config
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


class Stop:
    """`Worker.interruption()`'s answer when the process must stop (SIGTERM, parent gone)."""


STOP = Stop()


class Worker:
    """One worker process's loop; subclasses write `setup`, `handle` (or `step`) and `close`."""

    poll_s = 0.1  # how long one turn waits for a message: bounds the reaction to a stop
    cannot_start: tuple[type[BaseException], ...] = ()  # the engine's own "this model is unusable" errors

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.log = ctx.log
        self.backlog: deque[Any] = deque()  # messages that came while a session was being served

    # ---- what a worker writes ------------------------------------------------------------

    def setup(self) -> None:
        """Load engines and warm them, before the first beat that says "running"."""

    def handle(self, message: Any) -> None:
        """Serve one message from the inbox."""

    def step(self) -> None:
        """One turn of the loop: by default, take one message (backlog first) and handle it."""
        message = self.next_message(self.poll_s)
        if message is not None:
            self.handle(message)

    def close(self) -> None:
        """Release what `setup` took (runs on every exit)."""

    # ---- what the base does -----------------------------------------------------------------

    def run(self) -> None:
        try:
            try:
                self.setup()
            except (*PERMANENT_ERRORS, *self.cannot_start) as exc:
                raise CannotStart(_one_line(exc)) from exc
            while not self.ctx.should_stop():
                self.ctx.beat()
                self.step()
        finally:
            self.close()

    def next_message(self, timeout: float) -> Any | None:
        if self.backlog:
            return self.backlog.popleft()
        return self.ctx.recv(timeout)

    def interruption(self, session: int, request: int = 0, takeover: bool = True) -> Any | None:
        """Between two steps of work on `session`: what ends that work, if it came.

        A `Cancel` for the session (request 0: all of it; else exactly `request`), a newer
        `StartListening` when `takeover` (barge-in: the newest request wins), or `STOP`.
        Anything else waits in the backlog for the loop, in order.
        """
        while (message := self.ctx.recv(0.0)) is not None:
            if isinstance(message, Cancel) and message.session == session and message.request in (0, request):
                return message
            if takeover and isinstance(message, StartListening):
                return message
            self.backlog.append(message)
        return STOP if self.ctx.should_stop() else None

    @contextmanager
    def busy(self, max_s: float) -> Iterator[None]:
        """Beat from a helper thread while the block runs, for at most `max_s` seconds.

        For one long call that cannot beat itself (whisper.cpp transcribing a long request, an
        embedding): it must not look hung to the supervisor however big the model is. After
        `max_s` the beats stop, so a call that is truly wedged is still killed as hung
        (`[supervisor] heartbeat_timeout_s` later). The call must release the GIL, as native
        engines do while they compute; otherwise no thread can beat.
        """
        done = threading.Event()
        until = time.monotonic() + max_s

        def beat() -> None:
            while time.monotonic() < until:
                self.ctx.beat()
                if done.wait(min(BUSY_BEAT_S, max(0.0, until - time.monotonic()))):
                    return
            if not done.is_set():
                self.log.warning("still busy after %.0f s: no more heartbeats until it returns", max_s)

        self.ctx.beat()
        helper = threading.Thread(target=beat, name=f"{self.ctx.name}-busy", daemon=True)
        helper.start()
        try:
            yield
        finally:
            done.set()
            helper.join()
            self.ctx.beat()

    def wait(self, seconds: float, session: int, request: int = 0) -> Any | None:
        """Sleep `seconds`, beating, unless an `interruption()` ends it first (then return that)."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            self.ctx.beat()
            if (ended := self.interruption(session, request)) is not None:
                return ended
            time.sleep(min(0.05, left))
        return None


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # the getppid() check in should_stop() still catches an orphaned worker


def _run_entry(entry: str, ctx: WorkerContext) -> None:
    """Run what a spec names: a `Worker` subclass, or a plain function of the context (test doubles)."""
    module_name, _, name = entry.partition(":")
    target = getattr(importlib.import_module(module_name), name)
    if isinstance(target, type) and issubclass(target, Worker):
        target(ctx).run()
    else:
        target(ctx)


def worker_main(spec: WorkerSpec, config: Config, report: Any = None) -> None:
    """Spawn entry point of every worker process.

    `report`: the write end of a pipe to the supervisor; a worker that cannot start sends its
    reason there (one line) and exits with EXIT_CANNOT_START.
    """
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
        _run_entry(spec.entry, ctx)
    except CannotStart as exc:
        reason = _one_line(exc)
        ctx.log.error("cannot start: %s", reason)
        if report is not None:
            try:
                report.send(reason)
            except OSError:
                pass  # the supervisor is gone; the exit code still says it
        raise SystemExit(EXIT_CANNOT_START) from None
    finally:
        ctx.close()
        if report is not None:
            report.close()
