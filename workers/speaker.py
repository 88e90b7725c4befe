"""Speaker-ID worker: after a wake, read the speaker's voice from the shared ring and name them.

It reads the same shared frames STT reads, from ``[speaker] lead_s`` before the wake frame (the
wake phrase is the speaker's voice too), in parallel with STT and without copying audio through
the parent.  It stops reading at
``[speaker] window_s`` seconds of audio, or earlier once at least a second of speech has been
heard and followed by a pause (a short request must not wait for a full window), embeds the
voice (:mod:`workers.speaker_engines`), compares it with the enrolled voiceprints
(:mod:`pipeline.voiceprints`, reloaded when the file changes) and sends one ``SpeakerResult``:
an enrolled name, or ``"unknown"`` below ``[speaker] threshold`` or when there was too little
speech (score 0.0).  A ``Cancel`` for the session sends nothing; a newer ``StartListening``
supersedes the current one.

Fault injection (tests, bench): ``[speaker] fault_delay_ms`` > 0 sleeps that long (beating the
heartbeat) before each result, to exercise the coordinator's speaker deadline.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline.messages import Cancel, SpeakerResult, StartListening
from pipeline.voiceprints import VoiceprintError, VoiceprintStore
from workers.runtime import WorkerContext
from workers.speaker_engines import SpeakerError, make_speaker_engine

EARLY_MIN_VOICED_S = 1.0  # enough speech to judge a voice ...
EARLY_PAUSE_S = 0.3  # ... followed by this much quiet: the request has probably ended


def limit_threads(threads: int) -> None:
    """Pin numpy's BLAS (and OpenMP) pools: the worker runs beside STT on 2 cores."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=max(1, threads))
    except ImportError:  # the env vars only help before numpy loads; better than nothing
        pass


class Voiceprints:
    """The store, reloaded when its file changes; a broken file means "unknown" for all, not a crash."""

    def __init__(self, ctx: WorkerContext, engine) -> None:
        self.ctx = ctx
        state_dir = ctx.extra.get("state_dir") or ctx.config.metrics.state_dir
        self.store: VoiceprintStore | None = None
        self.error = ""
        try:
            self.store = VoiceprintStore(state_dir, engine.name, engine.dim)
        except VoiceprintError as exc:
            self.error = str(exc)
            ctx.log.error("voiceprints unusable, every speaker is 'unknown': %s", exc)
        self.state_dir = state_dir
        self.engine = engine

    def identify(self, embedding: np.ndarray, threshold: float) -> tuple[str, float]:
        try:
            if self.store is None:
                self.store = VoiceprintStore(self.state_dir, self.engine.name, self.engine.dim)
            elif self.store.refresh():
                self.ctx.log.info("voiceprints reloaded: %s", ", ".join(self.store.names()) or "(none)")
            return self.store.identify(embedding, threshold)
        except VoiceprintError as exc:
            if str(exc) != self.error:
                self.ctx.log.error("voiceprints unusable, speaker is 'unknown': %s", exc)
                self.error = str(exc)
            return "unknown", 0.0


def _frame_db(samples: np.ndarray) -> float:
    x = samples.astype(np.float64) / 32768.0
    return float(10 * np.log10(np.mean(x * x) + 1e-12))


def collect(ctx: WorkerContext, reader, request: StartListening):
    """Audio for ``request``: (request, samples) — the request may be a newer one — or None when cancelled."""
    cfg = ctx.config.speaker
    fs = ctx.audio.frame_samples
    while True:
        # From `[speaker] lead_s` before the wake frame: the wake phrase is the speaker's voice too.
        lead = int(round(cfg.lead_s * 16_000 / fs))
        reader.seek(request.wake_seq + 1 - lead)
        want = int(cfg.window_s * 16_000)
        frames: list[np.ndarray] = []
        have = voiced = quiet = 0
        peak_db = -120.0
        idle_deadline = time.monotonic() + cfg.window_s + 5.0  # audio stopped flowing: judge what we have
        switched = None
        while have < want:
            ctx.beat()
            if ctx.should_stop():
                return None
            message = ctx.recv(0.0)
            if isinstance(message, Cancel) and message.session == request.session:
                return None
            if isinstance(message, StartListening):
                switched = message
                break
            frame = reader.read_wait(0.1)
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
            if voiced >= EARLY_MIN_VOICED_S * 16_000 and quiet >= EARLY_PAUSE_S * 16_000:
                break
        if switched is not None:
            request = switched
            continue
        return request, (np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16))


def judge(ctx: WorkerContext, engine, prints: Voiceprints, request: StartListening, audio: np.ndarray,
          started_ns: int, pending: list) -> SpeakerResult | None:
    cfg = ctx.config.speaker
    if cfg.fault_delay_ms > 0:  # documented fault injection: a slow speaker worker
        until = time.monotonic() + cfg.fault_delay_ms / 1000
        while time.monotonic() < until:
            ctx.beat()
            message = ctx.recv(min(0.05, max(0.0, until - time.monotonic())))
            if isinstance(message, Cancel) and message.session == request.session:
                return None
            if isinstance(message, StartListening):  # a newer wake: serve it next, this one is superseded
                pending.append(message)
                return None
    t0 = time.perf_counter()
    try:
        embedding = engine.embed(audio)
        name, score = prints.identify(embedding, cfg.threshold)
    except SpeakerError as exc:
        ctx.log.info("session %d: no judgement (%s)", request.session, exc)
        name, score = "unknown", 0.0
    compute_ms = (time.perf_counter() - t0) * 1000
    return SpeakerResult(request.session, name, round(float(score), 4), engine.name, started_ns,
                         time.monotonic_ns(), round(compute_ms, 1))


def run(ctx: WorkerContext) -> None:
    cfg = ctx.config.speaker
    limit_threads(cfg.threads)
    models_dir = ctx.extra.get("models_dir") or ctx.config.models.dir
    engine = make_speaker_engine(cfg, Path(models_dir) if models_dir else None)
    try:  # the first call allocates; do it before a user waits
        rng = np.random.default_rng(0)
        engine.embed((rng.standard_normal(16_000) * 3000).astype(np.int16))
    except SpeakerError:
        pass
    prints = Voiceprints(ctx, engine)
    ctx.log.info("speaker ID ready (%s, %d-d, threshold %.2f, enrolled: %s)", engine.name, engine.dim,
                 cfg.threshold, ", ".join(prints.store.names()) if prints.store else "?")
    reader = ctx.audio.reader(slot=ctx.spec.audio_slot)
    reader.set_active(False)
    pending: list[StartListening] = []
    while not ctx.should_stop():
        ctx.beat()
        message = pending.pop() if pending else ctx.recv(0.1)
        if not isinstance(message, StartListening):
            continue
        started_ns = time.monotonic_ns()
        reader.set_active(True)
        try:
            got = collect(ctx, reader, message)
        finally:
            reader.set_active(False)
        if got is None:
            continue
        request, audio = got
        if request is not message:
            started_ns = time.monotonic_ns()
        result = judge(ctx, engine, prints, request, audio, started_ns, pending)
        if result is not None:
            ctx.log.info("session %d: %s (%.3f, %.0f ms)", result.session, result.name, result.score,
                         result.compute_ms)
            ctx.send(result)
