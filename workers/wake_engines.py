"""Wake-word engines and the detector policy around them.

An engine turns one fixed-size int16 frame (16 kHz mono) into a score 0..1.
``WakeDetector`` adds the policy the pipeline needs and the engines lack:
a warm-up (openWakeWord scores a spurious ~1 s after start-up because its
feature buffer is seeded with random noise), a threshold, and one detection
per utterance (reset + refractory time, or the tail of the same phrase fires
again).

The default engine is openWakeWord 0.5.1 with its bundled ``hey_jarvis`` ONNX
model, loaded by path so nothing is ever downloaded. openWakeWord already
builds every onnxruntime session with 1 intra-op and 1 inter-op thread
(melspectrogram, embedding and wake model); ``session_threads()`` reports it so
a test can keep it that way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

SAMPLE_RATE = 16_000


class WakeEngine(Protocol):
    """A streaming wake-word scorer fed with consecutive frames."""

    name: str
    frame_samples: int

    def score(self, frame: np.ndarray) -> float:
        """Score one int16 frame of ``frame_samples`` samples; 0..1."""

    def reset(self) -> None:
        """Forget recent scores (called after a detection)."""


def oww_models_dir() -> Path:
    """The folder of models bundled in the openwakeword 0.5.1 wheel."""
    import openwakeword

    return Path(openwakeword.__file__).resolve().parent / "resources" / "models"


class OpenWakeWordEngine:
    """openWakeWord with a bundled model, 1280-sample (80 ms) frames.

    ``model`` is a bundled model name ("hey_jarvis", "alexa", "hey_mycroft",
    ...) or a path to a custom ``.onnx``/``.tflite`` model.
    """

    frame_samples = 1280

    def __init__(self, model: str = "hey_jarvis", inference_framework: str = "onnx") -> None:
        ext = "onnx" if inference_framework == "onnx" else "tflite"
        path = Path(model)
        if not path.is_file():
            matches = sorted(oww_models_dir().glob(f"{model}_v*.{ext}"))
            if not matches:
                raise FileNotFoundError(f"no bundled openWakeWord model {model!r} ({ext}) in {oww_models_dir()}")
            path = matches[-1]
        from openwakeword.model import Model

        # An existing path is used as-is: openwakeword never downloads here.
        # Melspectrogram/embedding models default to the bundled resources.
        self._model = Model(wakeword_models=[str(path)], inference_framework=inference_framework)
        self._key = next(iter(self._model.models))
        self.name = f"openwakeword:{self._key}"
        self.model_path = path

    def score(self, frame: np.ndarray) -> float:
        if frame.dtype != np.int16:
            raise TypeError(f"expected int16 audio, got {frame.dtype}")
        return float(self._model.predict(frame)[self._key])

    def reset(self) -> None:
        # Clears the prediction buffer; openWakeWord then reports 0 for the
        # next 5 frames, which is what stops an immediate re-trigger.
        self._model.reset()

    def session_threads(self) -> dict[str, tuple[int, int]]:
        """(intra_op, inter_op) threads of every onnxruntime session, for checks."""
        sessions = {"wake": self._model.models[self._key]}
        pre = self._model.preprocessor
        for attr in ("melspec_model", "embedding_model"):
            sessions[attr] = getattr(pre, attr)
        out = {}
        for k, s in sessions.items():
            if hasattr(s, "get_session_options"):
                o = s.get_session_options()
                out[k] = (o.intra_op_num_threads, o.inter_op_num_threads)
        return out


@dataclass(frozen=True)
class Detection:
    """A wake detection: the score and the 0-based index of the frame that fired."""

    score: float
    frame_index: int


class WakeDetector:
    """Threshold + warm-up + once-per-utterance policy over a ``WakeEngine``.

    Every frame goes to the engine (its features must stay continuous), but
    scores are ignored during ``warmup_s`` after construction or ``reset()``
    and for ``refractory_s`` after a detection.
    """

    def __init__(
        self,
        engine: WakeEngine,
        threshold: float = 0.5,
        warmup_s: float = 1.5,
        refractory_s: float = 2.0,
    ) -> None:
        self.engine = engine
        self.threshold = threshold
        frame_s = engine.frame_samples / SAMPLE_RATE
        self._warmup_frames = int(np.ceil(warmup_s / frame_s))
        self._refractory_frames = int(np.ceil(refractory_s / frame_s))
        self.frames_fed = 0
        self.detections = 0
        self.last_score = 0.0
        self._ignore_until = self._warmup_frames

    def feed(self, frame: np.ndarray) -> Detection | None:
        """Score one frame; return a Detection the first time it crosses the threshold."""
        index = self.frames_fed
        self.frames_fed += 1
        score = self.engine.score(frame)
        self.last_score = score
        if index < self._ignore_until or score < self.threshold:
            return None
        self.engine.reset()
        self._ignore_until = index + 1 + self._refractory_frames
        self.detections += 1
        return Detection(score=score, frame_index=index)

    def reset(self) -> None:
        """Restart: reset the engine and apply the warm-up again (frame count continues)."""
        self.engine.reset()
        self._ignore_until = self.frames_fed + self._warmup_frames
