"""Wake-word worker: reads every audio frame and reports the frame where the phrase fired.

It starts at the newest frame (old audio is never a reason to wake) and reports the frame's
sequence number, so STT can read the request from the shared ring without a copy.
"""

from __future__ import annotations

import time

from pipeline.messages import WakeDetected
from workers.runtime import WorkerContext
from workers.wake_engines import OpenWakeWordEngine, WakeDetector


def make_engine(ctx: WorkerContext):
    cfg = ctx.config.wake
    if cfg.engine == "openwakeword":
        return OpenWakeWordEngine(model=cfg.model)
    raise ValueError(f"unknown wake engine {cfg.engine!r}")


def run(ctx: WorkerContext) -> None:
    cfg = ctx.config.wake
    engine = make_engine(ctx)
    detector = WakeDetector(engine, threshold=cfg.threshold, warmup_s=cfg.warmup_s, refractory_s=cfg.refractory_s)
    reader = ctx.audio.reader(slot=ctx.spec.audio_slot)
    reader.set_active(True)
    while not ctx.should_stop():
        ctx.beat()
        frame = reader.read_wait(0.25)
        if frame is None:
            continue
        detection = detector.feed(frame.samples)
        if detection is not None:
            ctx.log.info("wake (score %.2f) at frame %d", detection.score, frame.seq)
            ctx.send(WakeDetected(seq=frame.seq, score=round(float(detection.score), 3), engine=engine.name,
                                  audio_ns=frame.capture_ns, detected_ns=time.monotonic_ns()))
    reader.set_active(False)
