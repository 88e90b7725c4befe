"""A WAV file replayed as if it were a microphone (``--input PATH.wav``, tests, the bench)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from core.audio import FRAME_SAMPLES, SAMPLE_RATE, load_wav
from engines.capture import Frame


class WavSource:
    """Replay a WAV file as if it were a microphone.

    ``realtime=True`` paces frames against an absolute schedule: frame k is
    released at ``t0 + (k+1)·frame_duration`` (the moment its last sample
    would have been captured), so sleep overshoot never accumulates.  Its
    ``capture_ns`` is that scheduled time, which makes ``t0_ns`` the ground
    truth for any position in the file (sample i ↔ ``t0_ns + i/16 kHz``).

    ``realtime=False`` yields as fast as the consumer pulls; ``capture_ns`` is
    then the actual monotonic time of the yield (a virtual schedule would lie
    in the future and make latencies negative).
    """

    def __init__(self, path: str | os.PathLike, frame_samples: int = FRAME_SAMPLES,
                 realtime: bool = True, loop: bool = False, tail_silence_s: float = 1.0) -> None:
        if frame_samples <= 0:
            raise ValueError("frame_samples must be positive")
        self.path = Path(path)
        self.frame_samples = frame_samples
        self.sample_rate = SAMPLE_RATE
        self.realtime = realtime
        self.loop = loop
        self.tail_silence_s = max(0.0, tail_silence_s)
        self.audio = load_wav(path)  # errors surface at construction, not mid-stream
        self.t0_ns: int | None = None
        self.frames_yielded = 0
        self._closed = False

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def _chunks(self) -> Iterator[np.ndarray]:
        """Fixed-size frames of the file (looped, or padded + tail silence)."""
        n, a = self.frame_samples, self.audio
        if self.loop:
            pos = 0
            while True:
                idx = (np.arange(pos, pos + n) % len(a))
                yield a[idx]
                pos = (pos + n) % len(a)
        tail = int(round(self.tail_silence_s * SAMPLE_RATE))
        total = len(a) + tail
        n_frames = -(-total // n)
        padded = np.zeros(n_frames * n, dtype=np.int16)
        padded[:len(a)] = a
        for k in range(n_frames):
            yield padded[k * n:(k + 1) * n]

    def frames(self, idle_s: float | None = None) -> Iterator[Frame | None]:
        """Yield ``(frame int16[frame_samples], capture_ns)``; see the class docstring.

        Never ``None``: a file waits at most one frame, so ``idle_s`` (see AudioSource) is moot.
        """
        frame_ns_exact = self.frame_samples * 1e9 / SAMPLE_RATE
        self.t0_ns = t0 = time.monotonic_ns()
        for k, chunk in enumerate(self._chunks()):
            if self._closed:
                return
            if self.realtime:
                due = t0 + int(round((k + 1) * frame_ns_exact))
                delay = due - time.monotonic_ns()
                if delay > 0:
                    time.sleep(delay / 1e9)
                capture_ns = due
            else:
                capture_ns = time.monotonic_ns()
            self.frames_yielded += 1
            yield chunk.copy(), capture_ns

    def close(self) -> None:
        """Stop a running ``frames()`` at the next frame."""
        self._closed = True
