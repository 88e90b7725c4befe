"""Wake-word worker: reads every audio frame and reports the frame where the phrase fired.

It starts at the newest frame (old audio is never a reason to wake) and reports the frame's
sequence number, so STT can read the request from the shared ring without a copy.
"""

from __future__ import annotations

import logging
import time

from pipeline.messages import WakeDetected
from workers.runtime import WorkerContext
from workers.wake_engines import WakeDetector, WakeEngineUnavailable, make_wake_engine
from workers.wake_gate import GatedEngine
from workers.wake_onset import OnsetProposer


def select_engine(config, log: logging.Logger):
    """The configured wake engine; one that cannot start here falls back to openwakeword with a warning."""
    cfg = config.wake
    try:
        engine = make_wake_engine(cfg.engine, cfg, models_dir=config.models.dir)
    except WakeEngineUnavailable as exc:
        if cfg.engine == "openwakeword":
            raise
        log.warning("wake engine %r cannot start (%s); falling back to openwakeword", cfg.engine, exc)
        engine = make_wake_engine("openwakeword", cfg)
    for note in getattr(engine, "notes", ()):
        log.warning("wake engine %s: %s", engine.name, note)
    return engine


def run(ctx: WorkerContext) -> None:
    cfg = ctx.config.wake
    engine = select_engine(ctx.config, ctx.log)
    if cfg.gate:  # idle CPU: the engine sleeps through silence and steady noise, with no detection lost
        engine = GatedEngine(engine)
    # Two-stage wake: the engine only proposes (low threshold) and each proposal is followed to its
    # peak (at most 480 ms, less once it is sure); the coordinator accepts a sure peak at once and
    # sends the rest to the verifier. Single stage: fire at the crossing of `threshold`, as before.
    threshold = cfg.proposal_threshold if cfg.verify != "off" else cfg.threshold
    settle = cfg.sure_threshold if cfg.verify != "off" else cfg.threshold
    graded = getattr(engine, "graded", True)
    detector = WakeDetector(engine, threshold=threshold, warmup_s=cfg.warmup_s, refractory_s=cfg.refractory_s,
                            settle_score=settle)
    # Two-stage only: every utterance start is a proposal too (the verifier decides), for the voices and
    # noise in which the engine stays under its proposal threshold (workers/wake_onset.py).
    onset = OnsetProposer(ctx.audio.frame_samples) if cfg.verify != "off" and cfg.onset else None
    warmup_frames = int(cfg.warmup_s * 16_000 / ctx.audio.frame_samples)
    reader = ctx.audio.reader(slot=ctx.spec.audio_slot)
    reader.set_active(True)
    fed = 0
    while not ctx.should_stop():
        ctx.beat()
        frame = reader.read_wait(0.25)
        if frame is None:
            continue
        fed += 1
        if onset is not None and onset.feed(frame.samples) and fed > warmup_frames:
            ctx.send(WakeDetected(seq=frame.seq, score=0.0, engine="onset", audio_ns=frame.capture_ns,
                                  detected_ns=time.monotonic_ns(), start_seq=frame.seq - onset.propose_frames))
        detection = detector.feed(frame.samples)
        if detection is not None:
            # The detection is reported once its score stopped rising: point at the peak frame.
            seq = frame.seq - detection.frames_ago
            audio_ns = frame.capture_ns - detection.frames_ago * len(frame.samples) * 1_000_000_000 // 16_000
            ctx.log.info("wake (peak score %.2f) at frame %d", detection.score, seq)
            ctx.send(WakeDetected(seq=seq, score=round(float(detection.score), 3), engine=engine.name,
                                  audio_ns=audio_ns, detected_ns=time.monotonic_ns(),
                                  sure=graded and detection.score >= cfg.sure_threshold))
    reader.set_active(False)
