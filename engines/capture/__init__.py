"""The capture worker's sources: the microphone (PyAudio) or a WAV file, one interface.

Every source yields fixed frames of 16 kHz mono int16 (``frame_samples`` long, 1280 = 80 ms
by default) with ``capture_ns``: the ``time.monotonic_ns()`` at which the *last* sample of the
frame was captured. CLOCK_MONOTONIC is comparable across processes on Linux, so every stage
measures latency against it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

Frame = tuple[np.ndarray, int]  # (int16 samples, capture_ns of the last sample)


class AudioSource(Protocol):
    frame_samples: int
    t0_ns: int | None  # capture time of sample 0 once frames() began, when the source knows it (a file)

    def frames(self, idle_s: float | None = None) -> Iterator[Frame | None]:
        """Frames until the source ends (a file) or ``close()`` (a microphone never ends by itself).

        With ``idle_s``, ``None`` each time no frame came for that long (a microphone waiting for
        its device), so the caller's loop keeps turning; a file never waits that long.
        """

    def close(self) -> None: ...


def open_source(spec: str | os.PathLike, **kw: Any) -> AudioSource:
    """``"mic"`` → the microphone; anything else is a WAV path. Keyword arguments go to the source."""
    if str(spec) == "mic":
        from engines.capture.mic import PyAudioSource

        return PyAudioSource(**kw)
    from engines.capture.wav import WavSource

    return WavSource(spec, **kw)
