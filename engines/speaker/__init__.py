"""Speaker-ID engines: a voice in, a unit-length voiceprint embedding out.

* :class:`ResemblyzerNumpy` (the offline default): a numpy-only port of
  ``resemblyzer==0.1.4``'s ``VoiceEncoder`` (GE2E, Wan et al. 2018): a 40-band
  mel power spectrogram (25 ms Hann window, 10 ms hop, 16 kHz), partial windows
  of 160 frames (1.6 s) at 1.3 per second, each through a 3-layer LSTM (hidden
  256) → linear 256→256 → ReLU → L2 norm; the partial embeddings are averaged
  and re-normalised (``embed_utterance``).  The weights are the ``pretrained.pt``
  that the resemblyzer wheel on PyPI ships (Apache-2.0, provisioned by
  :mod:`models.provision`); it is read *without torch*: a torch legacy checkpoint
  is a sequence of pickles plus raw storage bytes, parsed here with
  :mod:`pickle` (a custom ``Unpickler`` with ``persistent_load``) and numpy.
  Preprocessing follows ``resemblyzer.preprocess_wav``: volume raised (never
  lowered) to -30 dBFS, long silences trimmed — with an energy gate in place of
  webrtcvad, smoothed and dilated as resemblyzer does.
* :class:`SpeechbrainEcapa` (the user's named package): SpeechBrain's ECAPA-TDNN
  ``EncoderClassifier`` from a local folder.  No registry ships ECAPA weights;
  users with internet can point ``[speaker] model_dir`` at a folder they filled
  from the hub (``source="speechbrain/spkrec-ecapa-voxceleb"``).

Both take mono 16 kHz audio (int16, or float32 in [-1, 1]) and return a float32
unit vector; :class:`SpeakerError` (a ``ValueError``) says why audio was refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from core.audio import SAMPLE_RATE

MIN_VOICED_S = 0.5  # less voiced audio than this cannot be judged


class SpeakerError(ValueError):
    """Audio the engine cannot judge (too short, silent, wrong shape/dtype) or an unusable model."""


class SpeakerEngine(Protocol):
    name: str
    dim: int

    def embed(self, audio: np.ndarray) -> np.ndarray: ...


# --------------------------------------------------------------------------- audio helpers


def as_float_audio(audio: np.ndarray) -> np.ndarray:
    """int16 or float32/float64 mono → float32 in [-1, 1]; anything else is a SpeakerError."""
    if not isinstance(audio, np.ndarray):
        raise SpeakerError(f"audio must be a numpy array, not {type(audio).__name__}")
    if audio.ndim != 1:
        raise SpeakerError(f"audio must be mono 1-D samples, got shape {audio.shape}")
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768.0
    if audio.dtype in (np.float32, np.float64):
        if audio.size and not np.all(np.isfinite(audio)):
            raise SpeakerError("audio holds NaN or infinite samples")
        return audio.astype(np.float32, copy=False)
    raise SpeakerError(f"audio dtype must be int16 or float32, not {audio.dtype}")


def normalize_volume(wav: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    """Raise (never lower) the RMS level to ``target_dbfs``, as resemblyzer's ``increase_only``."""
    rms = float(np.sqrt(np.mean((wav.astype(np.float64) * 32767) ** 2))) if wav.size else 0.0
    if rms <= 0:
        return wav
    change = target_dbfs - 20 * np.log10(rms / 32767)
    if change < 0:
        return wav
    return (wav * np.float32(10 ** (change / 20))).astype(np.float32)


_VAD_WINDOW = 480  # 30 ms, resemblyzer's vad_window_length
_VAD_AVERAGE = 8  # vad_moving_average_width
_VAD_MAX_SILENCE = 6  # vad_max_silence_length


def voiced_mask(wav: np.ndarray, floor_dbfs: float = -55.0, below_peak_db: float = 25.0) -> np.ndarray:
    """Per 30 ms window: voiced? An energy gate in place of webrtcvad (mode 3): a window is
    voiced when it is above ``floor_dbfs`` and within ``below_peak_db`` of the loudest window.
    Judge the audio as captured (before any gain), or a quiet room is amplified into "speech"."""
    n = len(wav) // _VAD_WINDOW
    if n == 0:
        return np.zeros(0, dtype=bool)
    windows = wav[: n * _VAD_WINDOW].astype(np.float64).reshape(n, _VAD_WINDOW)
    db = 10 * np.log10(np.mean(windows**2, axis=1) + 1e-12)
    return (db > floor_dbfs) & (db > db.max() - below_peak_db)


def trim_long_silences(wav: np.ndarray, flags: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Keep voiced windows and silences up to ~200 ms around them (resemblyzer's smoothing and
    dilation); returns the trimmed audio and the number of raw voiced samples."""
    flags = voiced_mask(wav) if flags is None else flags
    if flags.size == 0:
        return wav[:0], 0
    width = _VAD_AVERAGE
    padded = np.concatenate((np.zeros((width - 1) // 2), flags.astype(np.float64), np.zeros(width // 2)))
    ret = np.cumsum(padded)
    ret[width:] = ret[width:] - ret[:-width]
    mask = np.round(ret[width - 1 :] / width).astype(bool)
    # binary dilation with a structure of 7 ones (centred), without scipy
    k = _VAD_MAX_SILENCE + 1
    left = k // 2
    dilated = np.zeros_like(mask)
    for shift in range(-left, k - left):
        src = np.roll(mask, shift)
        if shift > 0:
            src[:shift] = False
        elif shift < 0:
            src[shift:] = False
        dilated |= src
    sample_mask = np.repeat(dilated, _VAD_WINDOW)
    trimmed = wav[: len(sample_mask)][sample_mask]
    return trimmed, int(flags.sum()) * _VAD_WINDOW


def prepare(audio: np.ndarray, min_voiced_s: float = MIN_VOICED_S) -> np.ndarray:
    """Validate, normalise the level and trim silences; SpeakerError when too little speech."""
    wav = as_float_audio(audio)
    if len(wav) < min_voiced_s * SAMPLE_RATE:
        raise SpeakerError(f"audio too short: {len(wav) / SAMPLE_RATE:.2f} s (need at least "
                           f"{min_voiced_s:.1f} s of speech)")
    wav = wav - np.float32(wav.mean())  # a microphone's DC offset is not voice
    if not np.any(np.abs(wav) > 1e-4):
        raise SpeakerError("audio is silent")
    flags = voiced_mask(wav)  # on the level as captured
    wav = normalize_volume(wav)
    trimmed, voiced = trim_long_silences(wav, flags)
    if voiced < min_voiced_s * SAMPLE_RATE:
        raise SpeakerError(f"too little speech: {voiced / SAMPLE_RATE:.2f} s voiced (need at least "
                           f"{min_voiced_s:.1f} s)")
    return trimmed


def unit_vector(v: np.ndarray, dtype=np.float32) -> np.ndarray:
    """``v`` scaled to length 1 (cosine similarity is then a dot product); SpeakerError if it can't be."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0:
        raise SpeakerError("the embedding is zero or not finite")
    return (v / norm).astype(dtype)


def make_speaker_engine(cfg, resemblyzer_weights: Path | None = None) -> SpeakerEngine:
    """The engine ``[speaker] engine`` names. ``resemblyzer_weights``: the provisioned ``pretrained.pt``
    (``[speaker] model_dir`` may name another one)."""
    if cfg.engine == "resemblyzer":
        from engines.speaker.resemblyzer import ResemblyzerNumpy

        weights = Path(cfg.model_dir) if cfg.model_dir and Path(cfg.model_dir).is_file() else resemblyzer_weights
        if weights is None:
            raise SpeakerError("resemblyzer: no pretrained.pt given (provision it with `python -m pipeline models`)")
        return ResemblyzerNumpy(weights, threads=cfg.threads)
    if cfg.engine == "speechbrain":
        from engines.speaker.speechbrain import SpeechbrainEcapa

        return SpeechbrainEcapa(cfg.model_dir, threads=cfg.threads)
    raise SpeakerError(f"unknown speaker engine {cfg.engine!r} (expected 'resemblyzer' or 'speechbrain')")
