"""openWakeWord 0.5.1 with a model bundled in its wheel (the default wake engine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.audio import FRAME_SAMPLES

def oww_models_dir() -> Path:
    """The folder of models bundled in the openwakeword 0.5.1 wheel."""
    import openwakeword

    return Path(openwakeword.__file__).resolve().parent / "resources" / "models"


class OpenWakeWordEngine:
    """openWakeWord with a bundled model, 1280-sample (80 ms) frames.

    ``model`` is a bundled model name ("hey_jarvis", "alexa", "hey_mycroft",
    ...) or a path to a custom ``.onnx``/``.tflite`` model.
    """

    frame_samples = FRAME_SAMPLES
    graded = True
    notes: tuple[str, ...] = ()

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
