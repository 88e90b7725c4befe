"""Skip the wake engine while the room holds only silence or steady noise.

openWakeWord runs a melspectrogram, an embedding model and a classifier on every 80 ms frame:
~6 % of one core on this kind of box, forever, mostly on nothing.  Nothing can wake without
a sound that stands out from the room, so ``GatedEngine`` runs the engine only from such a
sound on, and returns 0.0 (no proposal) otherwise.

The gate must change no detection.  The engine's score at a frame depends on the last ~2 s
of audio (openWakeWord: 76 mel frames per embedding, 16 embeddings of 80 ms per score), so
the frames it skipped are kept for ``PREROLL_S`` and fed to it first when the gate opens:
from then on it sees exactly what it would have seen ungated.  The gate stays open
``HANGOVER_S`` after the last loud frame (the score peaks after the phrase ends).  "Loud" is
``GATE_DB`` over a noise floor that follows the room quickly (a low percentile of the last
``FLOOR_WINDOW_S``), so steady noise closes the gate within seconds; babble keeps it open.

Every wake eval checks this (``bench.wake_eval.gate_check``, report.json ``wake.gate``): on the
wake corpus no proposal changed in any stream with speech; in the noise-only stream, where
openWakeWord scores up to 0.11 on steady noise, the gate drops such proposals (the verifier
rejected all of them).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from core.audio import SAMPLE_RATE

from engines.wake.onset import SILENCE_DBFS, frame_dbfs

PREROLL_S = 2.5       # > openWakeWord's ~2.04 s receptive field
HANGOVER_S = 2.5      # the peak follows the phrase end by up to ~0.5 s; the detector follows it 0.48 s more
GATE_DB = 6.0         # a frame this far over the floor opens the gate (speech at 10 dB SNR does)
FLOOR_WINDOW_S = 3.0  # the floor: FLOOR_PERCENTILE of the frame levels over this long
FLOOR_PERCENTILE = 20.0


class GatedEngine:
    """A wake engine that runs only while the room is not quiet (same interface as the engine)."""

    def __init__(self, engine, gate_db: float = GATE_DB, preroll_s: float = PREROLL_S,
                 hangover_s: float = HANGOVER_S) -> None:
        self.engine = engine
        self.name = engine.name
        self.frame_samples = engine.frame_samples
        self.graded = engine.graded
        self.notes = engine.notes
        self.gate_db = gate_db
        frame_s = self.frame_samples / SAMPLE_RATE
        self._hangover = max(1, int(round(hangover_s / frame_s)))
        self._unseen: deque[np.ndarray] = deque(maxlen=max(1, int(round(preroll_s / frame_s))))
        self._levels: deque[float] = deque(maxlen=max(1, int(round(FLOOR_WINDOW_S / frame_s))))
        self._open_for = 0
        self.frames = 0
        self.skipped_frames = 0
        self.catchups = 0

    def is_loud(self, frame: np.ndarray) -> bool:
        """Does this frame stand out from the room (and update what the room sounds like)?"""
        db = frame_dbfs(frame)
        floor = float(np.percentile(self._levels, FLOOR_PERCENTILE)) if self._levels else db
        self._levels.append(db)
        return db > SILENCE_DBFS and db - floor >= self.gate_db

    def score(self, frame: np.ndarray) -> float:
        self.frames += 1
        if self.is_loud(frame):
            self._open_for = self._hangover
        if self._open_for <= 0:
            self._unseen.append(frame)
            self.skipped_frames += 1
            return 0.0
        self._open_for -= 1
        if self._unseen:  # catch up on what it skipped, so its features are those of an ungated run
            self.catchups += 1
            for old in self._unseen:
                self.engine.score(old)
            self._unseen.clear()
        return float(self.engine.score(frame))

    def reset(self) -> None:
        self.engine.reset()

    def __getattr__(self, name: str):
        return getattr(self.engine, name)  # session_threads, close, ... of the engine
