"""Speaker-ID worker: after a wake, read the speaker's voice from the shared ring and name them.

It reads the same shared frames STT reads, from ``[speaker] lead_s`` before the wake frame (the
wake phrase is the speaker's voice too), in parallel with STT and without copying audio through
the parent.  It stops reading at
``[speaker] window_s`` seconds of audio, or earlier once at least a second of speech has been
heard and followed by a pause (a short request must not wait for a full window), embeds the
voice (:mod:`engines.speaker.engines`), compares it with the enrolled voiceprints
(:mod:`engines.speaker.voiceprints`, reloaded when the file changes) and sends one ``SpeakerResult``:
an enrolled name, or ``"unknown"`` below ``[speaker] threshold`` or when there was too little
speech (score 0.0).  A ``Cancel`` for the session sends nothing; a newer ``StartListening``
supersedes the current one.

Fault injection (tests, bench): ``[speaker] fault_delay_ms`` > 0 sleeps that long (beating the
heartbeat) before each result, to exercise the coordinator's speaker deadline.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from core.audio import SAMPLE_RATE
from core.messages import SpeakerResult, StartListening
from engines.speaker.voiceprints import VoiceprintError, VoiceprintStore
from workers.base import Worker
from engines.speaker import SpeakerError, make_speaker_engine
from models.provision import speaker_weights

EARLY_MIN_VOICED_S = 1.0  # enough speech to judge a voice ...
EARLY_PAUSE_S = 0.1  # ... followed by a pause as short as the one STT judges the end of a turn in
# One embedding of a 2.5 s window takes ~20 ms (resemblyzer); the heartbeat goes on this long during it (a bigger
# model on a slower kiosk must not look hung), then stops, so a wedged call is still caught as hung.
EMBED_BUSY_S = 30.0


def limit_threads(threads: int) -> None:
    """Pin numpy's BLAS (and OpenMP) pools: the worker runs beside STT on 2 cores."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=max(1, threads))
    except ImportError:  # the env vars only help before numpy loads; better than nothing
        pass


class Voiceprints:
    """The store, reloaded when its file changes. A damaged or unreadable file means "unknown" for
    everyone (logged once per distinct problem) until it is repaired -- never a crash, never a write."""

    def __init__(self, log: logging.Logger, state_dir: str, engine) -> None:
        self.log = log
        self.state_dir = state_dir
        self.engine = engine
        self.store: VoiceprintStore | None = None
        self.error = ""
        self._open()

    def _open(self) -> bool:
        try:
            if self.store is None:
                self.store = VoiceprintStore(self.state_dir, self.engine.name, self.engine.dim)
            elif not self.store.refresh():
                return True
        except VoiceprintError as exc:
            self.store = None  # nobody is named from a file that is not whole
            if str(exc) != self.error:
                self.error = str(exc)
                self.log.error("voiceprints unusable, every speaker is 'unknown' until the file is fixed: %s", exc)
            return False
        if self.error:
            self.log.info("voiceprints usable again")
        self.error = ""
        self.log.info("voiceprints loaded: %s", ", ".join(self.store.names()) or "(none)")
        return True

    def identify(self, embedding: np.ndarray, threshold: float) -> tuple[str, float]:
        if not self._open():
            return "unknown", 0.0
        try:
            return self.store.identify(embedding, threshold)
        except VoiceprintError as exc:  # an embedding of the wrong size: this request only
            self.log.error("speaker not identified: %s", exc)
            return "unknown", 0.0


def _frame_db(samples: np.ndarray) -> float:
    x = samples.astype(np.float64) / 32768.0
    return float(10 * np.log10(np.mean(x * x) + 1e-12))


class SpeakerWorker(Worker):
    """Names the speaker of each request from the shared audio, beside STT."""

    cannot_start = (SpeakerError,)  # in setup(): the speaker model is missing or unusable

    def setup(self) -> None:
        cfg = self.config.speaker
        limit_threads(cfg.threads)
        self.engine = make_speaker_engine(cfg, speaker_weights(cfg, self.config.models.dir))
        try:  # the first call allocates; do it before a user waits
            rng = np.random.default_rng(0)
            self.engine.embed((rng.standard_normal(SAMPLE_RATE) * 3000).astype(np.int16))
        except SpeakerError:
            pass
        self.prints = Voiceprints(self.log, self.config.metrics.state_dir, self.engine)
        self.log.info("speaker ID ready (%s, %d-d, threshold %.2f, enrolled: %s)", self.engine.name, self.engine.dim,
                      cfg.threshold, ", ".join(self.prints.store.names()) if self.prints.store else "?")
        self.reader = self.ctx.audio.reader(slot=self.ctx.spec.audio_slot)
        self.reader.set_active(False)

    def handle(self, message: Any) -> None:
        while isinstance(message, StartListening):  # a newer request takes over from the one being judged
            started_ns = time.monotonic_ns()
            self.reader.set_active(True)
            try:
                outcome = self.collect(message)
            finally:
                self.reader.set_active(False)
            if isinstance(outcome, StartListening):
                message = outcome
                continue
            if outcome is None:
                return
            outcome = self.judge(message, outcome, started_ns)
            if isinstance(outcome, StartListening):
                message = outcome
                continue
            if outcome is not None:
                self.log.info("session %d: %s (%.3f, %.0f ms)", outcome.session, outcome.name, outcome.score,
                              outcome.compute_ms)
                self.ctx.send(outcome)
            return

    def collect(self, request: StartListening) -> np.ndarray | StartListening | None:
        """The voice of ``request``'s speaker, a newer request that takes over, or None (cancelled, stopping)."""
        cfg = self.config.speaker
        fs = self.ctx.audio.frame_samples
        # From `[speaker] lead_s` before the wake frame: the wake phrase is the speaker's voice too.
        lead = int(round(cfg.lead_s * SAMPLE_RATE / fs))
        self.reader.seek(request.wake_seq + 1 - lead)
        want = int(cfg.window_s * SAMPLE_RATE)
        frames: list[np.ndarray] = []
        have = voiced = quiet = 0
        peak_db = -120.0
        idle_deadline = time.monotonic() + cfg.window_s + 5.0  # audio stopped flowing: judge what we have
        while have < want:
            self.ctx.beat()
            ended = self.interruption(request.session)
            if ended is not None:
                return ended if isinstance(ended, StartListening) else None
            frame = self.reader.read_wait(0.1)
            if frame is None:
                if time.monotonic() > idle_deadline:
                    break
                continue
            idle_deadline = time.monotonic() + cfg.window_s + 5.0
            frames.append(frame.samples.copy())
            have += len(frame.samples)
            db = _frame_db(frame.samples)
            peak_db = max(peak_db, db)
            if db > -50.0 and db > peak_db - 35.0:
                voiced += len(frame.samples)
                quiet = 0
            else:
                quiet += len(frame.samples)
            if voiced >= EARLY_MIN_VOICED_S * SAMPLE_RATE and quiet >= EARLY_PAUSE_S * SAMPLE_RATE:
                break
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)

    def judge(self, request: StartListening, audio: np.ndarray,
              started_ns: int) -> SpeakerResult | StartListening | None:
        cfg = self.config.speaker
        if cfg.fault_delay_ms > 0:  # documented fault injection: a slow speaker worker
            ended = self.wait(cfg.fault_delay_ms / 1000, request.session)
            if ended is not None:
                return ended if isinstance(ended, StartListening) else None
        t0 = time.perf_counter()
        try:
            with self.busy(EMBED_BUSY_S):
                embedding = self.engine.embed(audio)
            name, score = self.prints.identify(embedding, cfg.threshold)
        except SpeakerError as exc:
            self.log.info("session %d: no judgement (%s)", request.session, exc)
            name, score = "unknown", 0.0
        compute_ms = (time.perf_counter() - t0) * 1000
        return SpeakerResult(request.session, name, round(float(score), 4), self.engine.name, started_ns,
                             time.monotonic_ns(), round(compute_ms, 1))
