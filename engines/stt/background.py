"""One transcription running beside the caller, so it keeps reading audio while whisper works.

Why: the turn endpoint wants the transcript of a pause as early as possible — the moment the
voice drops, not once the pause has lasted long enough to matter — yet most drops are gaps
between words. The decode runs on the engine's whisper thread (``WhisperEngine.submit``) while
the frame loop goes on feeding the VAD; when the voice comes back the decode is abandoned
(whisper.cpp's abort callback) and the cores are free again. whisper.cpp releases the GIL while
it computes, so the loop and the decode run side by side.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from engines.stt.whispercpp import Hearing, WhisperEngine


class BackgroundHearing:
    """``engine.hear(audio)`` started now; ``abort()`` abandons it, ``result()`` gives its cleaned text."""

    def __init__(self, engine: WhisperEngine, audio: np.ndarray, clean: Callable[[str], str] = str.strip) -> None:
        self._aborted = threading.Event()
        self._clean = clean
        self.started = time.monotonic()
        self._future = engine.submit(audio, abort=self._aborted.is_set)

    @property
    def done(self) -> bool:
        return self._future.done()

    @property
    def running_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def aborted(self) -> bool:
        """Whisper stopped early because of ``abort()``: there is no result."""
        return self.done and self._future.exception() is None and self._future.result().aborted

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the decode ends (True) or ``timeout`` passes (False)."""
        try:
            self._future.exception(timeout)
        except TimeoutError:
            return False
        return True

    def abort(self) -> None:
        """Abandon the decode: whisper stops at its next check; the result is never used."""
        self._aborted.set()

    def result(self) -> Hearing:
        """The finished decode, its text cleaned; re-raises what the decode raised."""
        if not self.done:
            raise RuntimeError("the decode is still running")
        hearing = self._future.result()
        if hearing.aborted:
            raise RuntimeError("the decode was abandoned: it has no text")
        return replace(hearing, text=self._clean(hearing.text))
