"""Spoken test audio from the offline TTS engines installed on the box.

Why: tests and benchmarks need real speech (wake phrase + request) without
shipping recordings.  espeak-ng and flite are Debian packages; their output
(22.05 kHz / 8–16 kHz) is resampled to the pipeline's 16 kHz mono int16 and
padded with silence, because each playback start through PulseAudio can lose
its first few milliseconds (DESIGN.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from workers.audio_sources import SAMPLE_RATE, load_wav

ENGINES = ("espeak-ng", "flite")
MIN_PAD_S = 0.05


def engine_available(engine: str) -> bool:
    return engine in ENGINES and shutil.which(engine) is not None


def write_wav16(path: str | os.PathLike, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Write int16 mono samples as a plain 16-bit PCM WAV."""
    p = Path(path)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return p


def synthesize(text: str, path: str | os.PathLike, engine: str = "espeak-ng", voice: str | None = None,
               rate: int | None = None, pad_s: float = 0.3) -> Path:
    """Speak ``text`` into ``path`` as a 16 kHz mono int16 WAV with ``pad_s`` of silence each side.

    ``voice``: an espeak-ng voice (e.g. "en-us", "en+f3") or a flite voice
    (default "kal").  ``rate``: speaking rate in words per minute (espeak-ng
    ``-s``; for flite it becomes ``duration_stretch = 170 / rate``).
    Padding is at least 50 ms whatever ``pad_s`` says.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    if not text.strip():
        raise ValueError("text is empty")
    exe = shutil.which(engine)
    if exe is None:
        raise FileNotFoundError(f"{engine} is not installed")
    out = Path(path)
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
        speech = load_wav(raw)  # resampled to 16 kHz mono with soxr (HQ)
    pad = np.zeros(int(round(max(pad_s, MIN_PAD_S) * SAMPLE_RATE)), dtype=np.int16)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_wav16(out, np.concatenate([pad, speech, pad]))
