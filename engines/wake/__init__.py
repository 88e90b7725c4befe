"""Wake-word engines: one Protocol, a registry, and a factory.

An engine turns one int16 frame (16 kHz mono, ``frame_samples`` long — the
ring's 1280-sample / 80 ms frames) into a score 0..1; engines whose native
frame is different (porcupine 512 samples, microWakeWord 10 ms features,
pocketsphinx any length) buffer and re-chunk internally. ``WakeDetector`` adds
the policy the pipeline needs and the engines lack: a warm-up (openWakeWord
scores a spurious ~1 s after start-up because its feature buffer is seeded
with random noise), a threshold, the PEAK score of a detection (two-stage
wake compares it with the normal threshold when the verifier is down), and
one detection per utterance (reset + refractory time, or the tail of the same
phrase fires again).

Engines (``make_wake_engine(name, config.wake)``; each ships its weights in a
PyPI package, nothing is fetched from a model hub):

* ``openwakeword`` (default): openWakeWord 0.5.1 with its bundled ``hey_jarvis``
  ONNX model, loaded by path. openWakeWord builds every onnxruntime session
  with 1 intra-op and 1 inter-op thread; ``session_threads()`` reports it.
* ``porcupine``: Picovoice Porcupine, keyword "jarvis" (built-in) or a ``.ppn``
  path. With an AccessKey (``$PICOVOICE_ACCESS_KEY``) the current
  ``pvporcupine`` (4.x) — it validates the key online, so it fails on an
  offline kiosk ("AccessKey is invalid"). Without a key, the offline
  ``pvporcupine==1.9.5`` build: its wheel (Apache-2.0) carries the x86_64
  library, the model and the built-in keywords, and needs no key. Both
  releases are the same import name, so 1.9.5 is never installed: its wheel
  is fetched with ``pip download --no-deps`` into the models dir and its
  library is driven through ctypes (unpacked by ``models.porcupine``).
  Porcupine gives no score: 1.0 on a detection, else 0.0; its
  ``sensitivity`` is the knob.
* ``microwakeword``: PyPI ``pymicro-wakeword`` 2.5.0 (bundled TFLite runtime and
  ``hey_jarvis``/``alexa``/``hey_mycroft``/``okay_nabu`` models); score = the
  model's sliding-window mean probability (its own cutoff is 0.97).
* ``pocketsphinx``: PyPI ``pocketsphinx`` 5.1.1 keyword spotting with its
  bundled en-us acoustic model and CMU dictionary; keyphrase from the wake
  model name ("hey_jarvis" → "hey jarvis"); binary score like porcupine.

``python -m models porcupine`` fetches the porcupine 1.9.5 wheel ahead of time;
``python -m bench.wake_measure`` runs every engine over synthesized wake phrases and
negatives and prints detection, CPU, RSS and delay. The detector policy (warm-up, peak,
once per utterance) is :mod:`engines.wake.detector`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

ENGINES = ("openwakeword", "porcupine", "microwakeword", "pocketsphinx")


class WakeEngineUnavailable(RuntimeError):
    """A wake engine cannot start here; the message says why (and what would fix it)."""


class WakeEngine(Protocol):
    """A streaming wake-word scorer fed with consecutive frames."""

    name: str
    frame_samples: int
    graded: bool  # scores carry confidence (openWakeWord); False for engines that answer only 0 or 1
    notes: Sequence[str]  # what the worker should log at start (e.g. which porcupine build runs and why)

    def score(self, frame: np.ndarray) -> float:
        """Score one int16 frame of ``frame_samples`` samples; 0..1."""

    def reset(self) -> None:
        """Forget recent audio and scores (called after a detection)."""


def _int16(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.int16:
        raise TypeError(f"expected int16 audio, got {frame.dtype}")
    return frame


class _Rechunker:
    """Buffers int16 audio and hands out consecutive chunks of exactly ``n`` samples."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._buf = np.zeros(0, dtype=np.int16)

    def chunks(self, frame: np.ndarray) -> list[np.ndarray]:
        buf = np.concatenate([self._buf, frame]) if self._buf.size else frame
        k = buf.size // self.n
        out = [np.ascontiguousarray(buf[i * self.n:(i + 1) * self.n]) for i in range(k)]
        self._buf = buf[k * self.n:].copy()
        return out

    def clear(self) -> None:
        self._buf = np.zeros(0, dtype=np.int16)



def make_wake_engine(name: str, cfg: Any = None, porcupine_legacy: Callable[[], Path] | None = None) -> WakeEngine:
    """The engine called ``name``, configured from ``cfg`` (a ``WakeConfig``; defaults when None).

    Raises ``WakeEngineUnavailable`` (a RuntimeError) with the reason when the
    engine is unknown or cannot start here.
    """
    if cfg is None:
        from core.config import WakeConfig

        cfg = WakeConfig()
    model = getattr(cfg, "model", "hey_jarvis")
    if name == "openwakeword":
        from engines.wake.oww import OpenWakeWordEngine

        try:
            return OpenWakeWordEngine(model=model)
        except (FileNotFoundError, ValueError, ImportError) as exc:
            raise WakeEngineUnavailable(f"openWakeWord cannot start: {exc}") from exc
    if name == "porcupine":
        from engines.wake.porcupine import PorcupineEngine

        env = getattr(cfg, "porcupine_access_key_env", "PICOVOICE_ACCESS_KEY")
        return PorcupineEngine(keyword=getattr(cfg, "porcupine_keyword", "jarvis"),
                               sensitivity=getattr(cfg, "porcupine_sensitivity", 0.7),
                               access_key=os.environ.get(env, "").strip(), legacy=porcupine_legacy,
                               access_key_env=env)
    if name == "microwakeword":
        from engines.wake.micro import MicroWakeWordEngine

        return MicroWakeWordEngine(model=model)
    if name == "pocketsphinx":
        from engines.wake.sphinx import PocketsphinxEngine

        return PocketsphinxEngine(keyphrase=Path(model).stem.replace("_", " "))
    raise WakeEngineUnavailable(f"unknown wake engine {name!r}; choose one of {', '.join(ENGINES)}")

