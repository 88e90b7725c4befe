"""Spoken test clips for engine tests: one voice, trimmed to the speech, padded as a test needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.audio import SAMPLE_RATE as SR
from bench.synth import pink_noise, speech_bounds, tts_samples, write_wav16



def synth(text: str, voice: str, folder: Path | None = None) -> np.ndarray:
    """`voice` is an espeak-ng voice ("en-us", "en+f3") or "flite:NAME"; returns int16 speech, trimmed."""
    engine, name = ("flite", voice[len("flite:"):]) if voice.startswith("flite:") else ("espeak-ng", voice)
    x = tts_samples(text, engine=engine, voice=name)
    loud = np.nonzero(np.abs(x.astype(np.int32)) > 50)[0]
    return x[loud[0]: loud[-1] + 1]


def pad(x: np.ndarray, lead_s: float, tail_s: float) -> np.ndarray:
    z = lambda s: np.zeros(int(s * SR), dtype=np.int16)  # noqa: E731
    return np.concatenate([z(lead_s), x, z(tail_s)])


def tiny_wake_corpus(folder: Path) -> None:
    """Two wake utterances, one near miss and a noise clip in the wake corpus format."""
    rows = []
    lead = np.zeros(SR // 2, dtype=np.int16)
    for i, (eng, voice) in enumerate([("espeak-ng", "en-us"), ("flite", "kal")]):
        a = np.concatenate([lead, tts_samples("Hey Jarvis, what time is it", eng, voice)])
        start, end = speech_bounds(a)
        _, w_end = speech_bounds(np.concatenate([lead, tts_samples("Hey Jarvis", eng, voice)]))
        a = np.concatenate([a, np.zeros(SR, dtype=np.int16)])
        write_wav16(folder / f"pos{i}.wav", a)
        rows.append({"wav": f"pos{i}.wav", "set": "positive", "condition": "clean", "wake": True,
                     "transcript": "what time is it", "speaker": f"{eng}-{voice}", "speech_end_s": end,
                     "kind": "command", "voice": f"{eng}:{voice}", "split": "tune" if i == 0 else "heldout",
                     "wake_start_s": start, "wake_end_s": w_end, "text": "Hey Jarvis, what time is it"})
    a = np.concatenate([lead, tts_samples("I bought jars of honey", "espeak-ng", "en-us"), lead])
    write_wav16(folder / "near.wav", a)
    rows.append({"wav": "near.wav", "set": "near_miss", "condition": "clean", "wake": False,
                 "transcript": "I bought jars of honey", "speaker": "espeak-ng-en-us", "speech_end_s": 1.0,
                 "kind": "negative", "split": "tune", "text": "I bought jars of honey"})
    write_wav16(folder / "noise.wav", pink_noise(8.0, rms=300.0, seed=1))
    rows.append({"wav": "noise.wav", "set": "noise", "condition": "clean", "wake": False, "transcript": "",
                 "speaker": "", "speech_end_s": 0.0, "kind": "negative", "split": "all"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
