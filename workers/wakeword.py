"""Wake-word worker: reads every audio frame and reports the frame where the phrase fired.

It starts at the newest frame (old audio is never a reason to wake) and reports the frame's
sequence number, so STT can read the request from the shared ring without a copy.
"""

from __future__ import annotations

import logging
import time

from core.messages import WakeDetected
from core.audio import SAMPLE_NS, SAMPLE_RATE
from workers.base import Worker
from engines.wake.detector import WakeDetector
from engines.wake import WakeEngineUnavailable, make_wake_engine
from engines.wake.gate import GatedEngine
from engines.wake.onset import OnsetProposer
from models.porcupine import ensure_porcupine_legacy


def select_engine(config, log: logging.Logger):
    """The configured wake engine; one that cannot start here falls back to openwakeword with a warning."""
    cfg = config.wake
    try:
        engine = make_wake_engine(cfg.engine, cfg, porcupine_legacy=lambda: ensure_porcupine_legacy(config.models.dir))
    except WakeEngineUnavailable as exc:
        if cfg.engine == "openwakeword":
            raise
        log.warning("wake engine %r cannot start (%s); falling back to openwakeword", cfg.engine, exc)
        engine = make_wake_engine("openwakeword", cfg)
    for note in engine.notes:
        log.warning("wake engine %s: %s", engine.name, note)
    return engine


class WakewordWorker(Worker):
    """Scores every frame of the audio ring; each turn of the loop reads one frame."""

    def setup(self) -> None:
        cfg = self.config.wake
        engine = select_engine(self.config, self.log)
        if cfg.gate:  # idle CPU: the engine sleeps through silence and steady noise, with no detection lost
            engine = GatedEngine(engine)
        self.engine = engine
        # Two-stage wake: the engine only proposes (low threshold) and each proposal is followed to its
        # peak (at most 480 ms, less once it is sure); the coordinator accepts a sure peak at once and
        # sends the rest to the verifier. Single stage: fire at the crossing of `threshold`, as before.
        two_stage = cfg.verify != "off"
        self.detector = WakeDetector(engine, threshold=cfg.proposal_threshold if two_stage else cfg.threshold,
                                     warmup_s=cfg.warmup_s, refractory_s=cfg.refractory_s,
                                     settle_score=cfg.sure_threshold if two_stage else cfg.threshold)
        # Two-stage only: every utterance start is a proposal too (the verifier decides), for the voices and
        # noise in which the engine stays under its proposal threshold (engines/wake/onset.py).
        self.onset = OnsetProposer(self.ctx.audio.frame_samples) if two_stage and cfg.onset else None
        self.warmup_frames = int(cfg.warmup_s * SAMPLE_RATE / self.ctx.audio.frame_samples)
        self.reader = self.ctx.audio.reader(slot=self.ctx.spec.audio_slot)
        self.reader.set_active(True)
        self.fed = 0

    def step(self) -> None:
        frame = self.reader.read_wait(0.25)
        if frame is None:
            return
        self.fed += 1
        if self.onset is not None and self.onset.feed(frame.samples) and self.fed > self.warmup_frames:
            self.ctx.send(WakeDetected(seq=frame.seq, score=0.0, engine="onset", audio_ns=frame.capture_ns,
                                       detected_ns=time.monotonic_ns(),
                                       start_seq=frame.seq - self.onset.propose_frames))
        detection = self.detector.feed(frame.samples)
        if detection is None:
            return
        # The detection is reported once its score stopped rising: point at the peak frame.
        seq = frame.seq - detection.frames_ago
        audio_ns = frame.capture_ns - detection.frames_ago * len(frame.samples) * SAMPLE_NS
        self.log.info("wake (peak score %.2f) at frame %d", detection.score, seq)
        self.ctx.send(WakeDetected(seq=seq, score=round(float(detection.score), 3), engine=self.engine.name,
                                   audio_ns=audio_ns, detected_ns=time.monotonic_ns(),
                                   sure=self.engine.graded and detection.score >= self.config.wake.sure_threshold))

    def close(self) -> None:
        if getattr(self, "reader", None) is not None:
            self.reader.set_active(False)
