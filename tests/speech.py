"""Spoken test clips for engine tests: one voice, trimmed to the speech, padded as a test needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.synth import tts_samples

SR = 16_000


def synth(text: str, voice: str, folder: Path | None = None) -> np.ndarray:
    """`voice` is an espeak-ng voice ("en-us", "en+f3") or "flite:NAME"; returns int16 speech, trimmed."""
    engine, name = ("flite", voice[len("flite:"):]) if voice.startswith("flite:") else ("espeak-ng", voice)
    x = tts_samples(text, engine=engine, voice=name)
    loud = np.nonzero(np.abs(x.astype(np.int32)) > 50)[0]
    return x[loud[0]: loud[-1] + 1]


def pad(x: np.ndarray, lead_s: float, tail_s: float) -> np.ndarray:
    z = lambda s: np.zeros(int(s * SR), dtype=np.int16)  # noqa: E731
    return np.concatenate([z(lead_s), x, z(tail_s)])
