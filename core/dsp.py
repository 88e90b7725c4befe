"""Shared DSP: Whisper's mel filterbank and log-mel features, and float conversion.

Engines (the forced wake verifier, speaker ID, the turn detector) and the model converter use
these one implementation, so Whisper's features are computed the same way everywhere.
"""

from __future__ import annotations

import numpy as np

from core.audio import SAMPLE_RATE

N_FFT = 400  # Whisper: 25 ms Hann window ...
HOP = 160  # ... 10 ms hop


def _hz_to_mel(hz: float | np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asanyarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    log_region = hz >= min_log_hz
    mels = np.where(log_region, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mels)
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


def mel_filterbank(n_mels: int, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-normalised mel filterbank, float32 ``[n_mels, n_fft//2 + 1]``.

    Same arithmetic as ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)``
    (the matrix OpenAI ships as ``mel_filters.npz``), without needing librosa.
    """
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_pts = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2.0), n_mels + 2)
    mel_f = _mel_to_hz(mel_pts)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((n_mels, len(fft_freqs)), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


def to_float32(audio: np.ndarray) -> np.ndarray:
    """Mono float32 in [-1, 1]: int16 is scaled, float kept (NaN/inf → 0); anything else is a ValueError."""
    a = np.asarray(audio)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {a.shape}")
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    if a.dtype.kind != "f":
        raise TypeError(f"expected int16 or float audio, got {a.dtype}")
    return np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def mel_power(audio: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Whisper's mel power spectrogram ``[n_mels, frames]`` (periodic Hann 400, hop 160, reflect-padded)."""
    a = to_float32(audio)
    padded = np.pad(a, (N_FFT // 2, N_FFT // 2), mode="reflect" if a.size > N_FFT // 2 else "constant")
    n = 1 + (padded.size - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)
    power = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2
    return filters @ power[:-1].T


def whisper_log_scale(mel: np.ndarray) -> np.ndarray:
    """Whisper's log scaling of mel power: log10, an 8-decade floor under the peak, (x + 4) / 4."""
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def log_mel(audio: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Whisper's log-mel features ``[n_mels, frames]``."""
    return whisper_log_scale(mel_power(audio, filters))


def suppress_late_reverb(mel: np.ndarray, t60_s: float = 0.6, delay_s: float = 0.05, keep: float = 0.1,
                         hop_s: float = HOP / SAMPLE_RATE) -> np.ndarray:
    """Late reverberation taken out of a power spectrogram ``[bands, frames]`` (mel or linear).

    Lebart's model (Lebart, Boucher & Denbigh 2001): in a room whose sound decays by 60 dB in ``t60_s``,
    what arrives ``delay_s`` after a frame is that frame's power times 10^(-6 delay / T60), so the late
    reverberation of each frame is estimated from the frame ``delay_s`` before and subtracted, never below
    ``keep`` of the original (no holes for a model to hear as silence). The direct sound and the early
    reflections (within ``delay_s``) stay; the smeared tails of earlier phonemes go.
    """
    d = max(1, int(round(delay_s / hop_s)))
    decay = 10.0 ** (-6.0 * d * hop_s / t60_s)
    late = np.zeros_like(mel)
    late[:, d:] = decay * mel[:, :-d]
    return np.maximum(mel - late, keep * mel)

