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
from typing import Any

from core.messages import InputEnded, InputStarted, WorkerState
from engines.capture.mic import PyAudioSource
from engines.capture.wav import WavSource
from workers.base import Worker


class CaptureWorker(Worker):
    """The only writer of the audio ring: one frame of the source per turn of the loop."""

    def setup(self) -> None:
        cfg = self.config.audio
        self.ring = self.ctx.audio
        self._outbox = threading.Lock()  # one producer: states come from PyAudio's helper threads too
        if cfg.input == "mic":
            self.source = PyAudioSource(device=cfg.device or None, frame_samples=self.ring.frame_samples,
                                        on_state=self.on_state, restart_every_s=cfg.engine_restart_s or None)
        else:
            self.source = WavSource(cfg.input, frame_samples=self.ring.frame_samples, realtime=not cfg.fast,
                                    loop=cfg.loop)
        self.frames = self.source.frames()
        self.started = False
        self.ended = False
        self.last_seq = self.ring.write_seq - 1

    def send(self, message: Any) -> None:
        with self._outbox:
            self.ctx.send(message)

    def on_state(self, state: str, detail: str) -> None:
        level = logging.INFO if state in ("running", "opening", "closed") else logging.WARNING
        self.log.log(level, "microphone %s: %s", state, detail)
        self.send(WorkerState(worker=self.ctx.name, state=state, detail=detail, t_ns=time.monotonic_ns()))

    def step(self) -> None:
        if self.ended:  # the input is over; stay alive (beating) so the supervisor does not replay it
            time.sleep(0.2)
            return
        got = next(self.frames, None)
        if got is None:
            self.ended = True
            self.send(InputEnded(source=self.config.audio.input, last_seq=self.last_seq, t_ns=time.monotonic_ns()))
            return
        frame, capture_ns = got
        if not self.started:
            t0 = self.source.t0_ns or capture_ns  # a file knows when its sample 0 played
            self.send(InputStarted(source=self.config.audio.input, seq=self.ring.write_seq, t0_ns=int(t0)))
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
