"""Capture worker: the only writer of the audio ring.

The source is the microphone (PyAudio) or a WAV file paced in real time. The writer never
waits for readers, except in `--fast` replay, where it holds back until the slowest
active reader is within half a ring, so a test can run faster than real time without
losing audio.

A missing or lost microphone is a state, not a crash: the source hands back an empty turn at
least every `IDLE_S` while it waits for a device, so the loop keeps beating (the supervisor
must not take the wait for a hang) and a stop is seen at once; each state change goes to the
parent as a `WorkerState` (its /healthz shows `device: no_device` until audio flows again).
"""

from __future__ import annotations

import time

from core.messages import InputEnded, InputStarted, WorkerState
from engines.capture.mic import PyAudioSource
from engines.capture.wav import WavSource
from workers.base import Worker


IDLE_S = 0.2  # the longest turn of the loop while no audio comes
_END = object()  # the source is over (a file)


class CaptureWorker(Worker):
    """The only writer of the audio ring: one frame of the source per turn of the loop."""

    def setup(self) -> None:
        cfg = self.config.audio
        self.ring = self.ctx.audio
        if cfg.input == "mic":
            self.source = PyAudioSource(device=cfg.device or None, frame_samples=self.ring.frame_samples,
                                        on_state=self.on_state, restart_every_s=cfg.engine_restart_s or None)
        else:
            self.source = WavSource(cfg.input, frame_samples=self.ring.frame_samples, realtime=not cfg.fast,
                                    loop=cfg.loop)
        self.frames = self.source.frames(idle_s=IDLE_S)
        self.started = False
        self.ended = False
        self.last_seq = self.ring.write_seq - 1

    def on_state(self, state: str, detail: str) -> None:
        """The source's state, for the parent (the source has logged it: one line per change)."""
        self.ctx.send(WorkerState(worker=self.ctx.name, state=state, detail=detail, t_ns=time.monotonic_ns()))

    def step(self) -> None:
        if self.ended:  # the input is over; stay alive (beating) so the supervisor does not replay it
            time.sleep(0.2)
            return
        got = next(self.frames, _END)
        if got is None:  # no audio this turn (no device yet): back to the loop, which beats
            return
        if got is _END:
            self.ended = True
            self.ctx.send(InputEnded(source=self.config.audio.input, last_seq=self.last_seq, t_ns=time.monotonic_ns()))
            return
        frame, capture_ns = got
        if not self.started:
            t0 = self.source.t0_ns or capture_ns  # a file knows when its sample 0 played
            self.ctx.send(InputStarted(source=self.config.audio.input, seq=self.ring.write_seq, t0_ns=int(t0)))
            self.started = True
        if self.config.audio.fast:
            self.wait_for_readers()
        self.last_seq = self.ring.write(frame, capture_ns)

    def wait_for_readers(self, stall_limit_s: float = 2.0) -> None:
        """--fast replay: hold back while the slowest active reader is about to lose a frame.

        A reader that makes no progress for `stall_limit_s` (it died or hangs; the supervisor
        will restart it) no longer holds the replay back: it loses frames, and they are counted.
        """
        last_cursor, since = None, time.monotonic()
        while not self.ctx.should_stop():
            headroom = self.ring.headroom()
            if headroom is None or headroom > 0:
                return
            cursor = self.ring.min_active_cursor()
            if cursor != last_cursor:
                last_cursor, since = cursor, time.monotonic()
            elif time.monotonic() - since > stall_limit_s:
                return
            self.ctx.beat()
            time.sleep(0.002)

    def close(self) -> None:
        source = getattr(self, "source", None)
        if source is not None:
            source.close()
