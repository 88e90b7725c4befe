"""The detector policy over a wake engine: warm-up, threshold, peak, once per utterance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.audio import SAMPLE_RATE
from engines.wake import WakeEngine

@dataclass(frozen=True)
class Detection:
    """A wake detection, reported once its peak is over (see ``WakeDetector``).

    ``score``: the PEAK score of the detection (with ``settle_score`` reached:
    the first score at or above it). ``frame_index``: 0-based index of that
    frame. ``frames_ago``: how many frames before the frame just fed
    the peak was (0 = the frame just fed), so the worker reports the peak's
    ring seq as ``frame.seq - frames_ago``. ``crossed_index``: the frame where
    the score first crossed the threshold.
    """

    score: float
    frame_index: int
    frames_ago: int = 0
    crossed_index: int = -1


class WakeDetector:
    """Threshold + warm-up + peak + once-per-utterance policy over a ``WakeEngine``.

    Every frame goes to the engine (its features must stay continuous), but
    scores are ignored during ``warmup_s`` after construction or ``reset()``
    and for ``refractory_s`` after a detection.

    Peak: once a score crosses ``threshold`` the detector follows the scores
    for at most ``peak_frames`` more frames (6 = 480 ms; 0 = report at the
    crossing) and reports the highest one and its frame, or reports as soon as
    a score reaches ``settle_score`` (nothing above it changes a decision:
    the wake worker passes the normal threshold, so a proposal at 0.1 that
    reaches 0.5 is reported exactly when single-stage wake would have fired;
    binary engines such as porcupine give 1.0 and are reported at once).
    It neither stops at the first dip nor when the score falls back below the
    threshold: openWakeWord rises unevenly and crosses a low threshold up to
    ~5 frames before its peak (espeak en-us "hey jarvis": 0.11, 0.25, 0.07,
    0.67, 0.22, 0.98; flite slt: 0.10, 0.14, 0.13, 0.42, 0.98), and reporting
    early would lose the peak (the engine is reset after a detection).
    """

    def __init__(
        self,
        engine: WakeEngine,
        threshold: float = 0.5,
        warmup_s: float = 1.5,
        refractory_s: float = 2.0,
        peak_frames: int = 6,
        settle_score: float = 0.95,
    ) -> None:
        if peak_frames < 0:
            raise ValueError(f"peak_frames must be >= 0, got {peak_frames}")
        self.engine = engine
        self.threshold = threshold
        self.peak_frames = peak_frames
        self.settle_score = max(settle_score, threshold)
        frame_s = engine.frame_samples / SAMPLE_RATE
        self._warmup_frames = int(np.ceil(warmup_s / frame_s))
        self._refractory_frames = int(np.ceil(refractory_s / frame_s))
        self.frames_fed = 0
        self.detections = 0
        self.last_score = 0.0
        self._ignore_until = self._warmup_frames
        self._peak: tuple[float, int, int] | None = None  # (score, index, crossed index) while following a peak

    def feed(self, frame: np.ndarray) -> Detection | None:
        """Score one frame; return a Detection (with the peak score) once the peak is over."""
        index = self.frames_fed
        self.frames_fed += 1
        score = float(self.engine.score(frame))
        self.last_score = score
        if self._peak is None:
            if index < self._ignore_until or score < self.threshold:
                return None
            self._peak = (score, index, index)
        elif score > self._peak[0]:
            self._peak = (score, index, self._peak[2])
        peak, _, crossed = self._peak
        if peak >= self.settle_score or index - crossed >= self.peak_frames:
            return self._fire(index)
        return None

    def _fire(self, index: int) -> Detection:
        assert self._peak is not None
        score, peak_index, crossed = self._peak
        self._peak = None
        self.engine.reset()
        self._ignore_until = index + 1 + self._refractory_frames
        self.detections += 1
        return Detection(score=score, frame_index=peak_index, frames_ago=index - peak_index, crossed_index=crossed)

    def reset(self) -> None:
        """Restart: reset the engine and apply the warm-up again (frame count continues)."""
        self.engine.reset()
        self._peak = None
        self._ignore_until = self.frames_fed + self._warmup_frames
