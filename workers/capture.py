"""Capture worker: the only writer of the audio ring.

The source is the microphone (PyAudio) or a WAV file paced in real time. The writer never
waits for readers, except in `--fast` replay, where it holds back until the slowest
active reader is within half a ring, so a test can run faster than real time without
losing audio.
"""

from __future__ import annotations

import logging
import threading
import time

from pipeline.messages import InputEnded, InputStarted, WorkerState
from workers.audio_sources import PyAudioSource, WavSource
from workers.runtime import WorkerContext


def _wait_for_readers(ctx: WorkerContext, stall_limit_s: float = 2.0) -> None:
    """--fast replay: hold back while the slowest active reader is about to lose a frame.

    A reader that makes no progress for `stall_limit_s` (it died or hangs; the supervisor
    will restart it) no longer holds the replay back: it loses frames, and they are counted.
    """
    ring = ctx.audio
    last_cursor, since = None, time.monotonic()
    while not ctx.should_stop():
        headroom = ring.headroom()
        if headroom is None or headroom > 0:
            return
        cursor = ring.min_active_cursor()
        if cursor != last_cursor:
            last_cursor, since = cursor, time.monotonic()
        elif time.monotonic() - since > stall_limit_s:
            return
        ctx.beat()
        time.sleep(0.002)


def run(ctx: WorkerContext) -> None:
    cfg = ctx.config.audio
    ring = ctx.audio
    spec = cfg.input

    outbox = threading.Lock()  # the outbox has one producer: states come from PyAudio's helper threads too

    def send(message) -> None:
        with outbox:
            ctx.send(message)

    def on_state(state: str, detail: str) -> None:
        level = logging.INFO if state in ("running", "opening", "closed") else logging.WARNING
        ctx.log.log(level, "microphone %s: %s", state, detail)
        send(WorkerState(worker=ctx.name, state=state, detail=detail, t_ns=time.monotonic_ns()))

    if spec == "mic":
        source = PyAudioSource(device=cfg.device or None, frame_samples=ring.frame_samples, on_state=on_state,
                               restart_every_s=cfg.engine_restart_s or None)
    else:
        source = WavSource(spec, frame_samples=ring.frame_samples, realtime=not cfg.fast, loop=cfg.loop)
    ctx.beat()
    started = False
    last_seq = ring.write_seq - 1
    try:
        for frame, capture_ns in source.frames():
            if not started:
                t0 = getattr(source, "t0_ns", capture_ns)
                send(InputStarted(source=spec, seq=ring.write_seq, t0_ns=int(t0)))
                started = True
            if cfg.fast:
                _wait_for_readers(ctx)
            last_seq = ring.write(frame, capture_ns)
            ctx.beat()
            if ctx.should_stop():
                return
        send(InputEnded(source=spec, last_seq=last_seq, t_ns=time.monotonic_ns()))
        # The input is over; stay alive (beating) so the supervisor does not restart and replay it.
        while not ctx.should_stop():
            ctx.beat()
            time.sleep(0.2)
    finally:
        close = getattr(source, "close", None)
        if close:
            close()
