"""Speech-to-text with whisper.cpp through pywhispercpp, tuned for short commands.

Why the care:
* pywhispercpp 1.5.1 accepts a corrupt model silently and then segfaults in
  the first transcription, and treats a path that does not exist as a model
  *name* to download — so the file is validated first and always passed as an
  existing absolute path.
* whisper.cpp pads every clip to 30 s (1500 encoder frames).  For a 2–3 s
  command, a smaller ``audio_ctx`` cuts the encoder work ~3×.  Measured on
  tiny.en (2 cores): below ~512 frames the text degrades and the decoder can
  loop ("turn off the bedroom fan" ×4), so the context never goes below
  :data:`MIN_AUDIO_CTX` and always leaves a margin past the clip.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np

from core.audio import SAMPLE_RATE
from core.dsp import to_float32
from engines.model_files import validate_ggml

FRAME_SAMPLES = 320  # one encoder frame (after conv stride 2) = 20 ms
MAX_AUDIO_CTX = 1500  # 30 s: whisper's full window
MIN_AUDIO_CTX = 512  # smaller contexts measurably hurt tiny.en (wrong words, repetition loops)
AUDIO_CTX_MARGIN = 64  # frames (1.28 s) beyond the clip
MIN_CLIP_S = 0.1
MAX_TOKENS = 128  # per transcription (see the decode params)


def audio_ctx_for(n_samples: int) -> int:
    """Encoder context for a clip: a multiple of 64 comfortably past its length, within [512, 1500].

    Clips longer than ~28.7 s get the full window (0 would mean the same).
    """
    frames = math.ceil(n_samples / FRAME_SAMPLES) + AUDIO_CTX_MARGIN
    ctx = max(MIN_AUDIO_CTX, math.ceil(frames / 64) * 64)
    return min(ctx, MAX_AUDIO_CTX)


class WhisperEngine:
    """One loaded whisper.cpp model; not thread-safe, so calls are serialised."""

    def __init__(self, model_path: Path, n_threads: int = 2, language: str = "en",
                 initial_prompt: str | None = None) -> None:
        path = Path(model_path).expanduser().resolve()
        validate_ggml(path)  # raises ModelError; pywhispercpp would crash later instead
        from pywhispercpp.model import Model  # import late: a bad path fails before loading C code

        self.model_path = path
        self.n_threads = n_threads
        self._lock = threading.Lock()
        # Decode params passed to Model persist for every transcribe() call.
        params: dict[str, object] = dict(
            language=language,
            no_timestamps=True,
            single_segment=True,
            no_context=True,
            greedy={"best_of": 1},
            temperature=0.0,
            print_realtime=False,
            # A decode that loops ("Jarvis Jarvis Jarvis…" on noise) must end: a 12 s request is
            # ~60 words, and an unbounded loop runs to 448 tokens — seconds with the worker deaf.
            max_tokens=MAX_TOKENS,
        )
        if initial_prompt:  # the binding rejects None
            params["initial_prompt"] = initial_prompt
        self._initial_prompt = initial_prompt or ""
        self._model = Model(str(path), n_threads=n_threads, print_progress=False,
                            redirect_whispercpp_logs_to=None, **params)

    def transcribe(self, audio: np.ndarray) -> str:
        """Text of a mono 16 kHz clip (int16, or float32 in [-1, 1]); "" for < 0.1 s."""
        samples = to_float32(audio)
        if samples.size < MIN_CLIP_S * SAMPLE_RATE:
            return ""
        with self._lock:
            segments = self._model.transcribe(samples, audio_ctx=audio_ctx_for(samples.size))
        return "".join(seg.text for seg in segments).strip()

    def transcribe_tokens(self, audio: np.ndarray, initial_prompt: str | None = None,
                          max_tokens: int = MAX_TOKENS) -> tuple[str, list[tuple[str, float]]]:
        """Text and its tokens with their probabilities, decoded with ``initial_prompt`` for this call only.

        Decode params persist in pywhispercpp, so the prompt is set for this call and the
        engine's own prompt (or none) is put back before the lock is released: a later
        ``transcribe()`` never inherits it.  Special tokens ([_EOT_] ...) are left out.
        """
        samples = to_float32(audio)
        if samples.size < MIN_CLIP_S * SAMPLE_RATE:
            return "", []
        import _pywhispercpp as pw

        with self._lock:
            try:
                segments = self._model.transcribe(samples, audio_ctx=audio_ctx_for(samples.size),
                                                  initial_prompt=initial_prompt or "", max_tokens=max_tokens)
                ctx = self._model._ctx
                tokens = []
                for i in range(pw.whisper_full_n_segments(ctx)):
                    for j in range(pw.whisper_full_n_tokens(ctx, i)):
                        text = pw.whisper_full_get_token_text(ctx, i, j)
                        if isinstance(text, bytes):
                            text = text.decode("utf-8", errors="replace")
                        if text.startswith("[_") or text.startswith("<|"):
                            continue
                        tokens.append((text, float(pw.whisper_full_get_token_p(ctx, i, j))))
            finally:
                self._model._set_params({"initial_prompt": self._initial_prompt, "max_tokens": MAX_TOKENS})
        return "".join(seg.text for seg in segments).strip(), tokens
