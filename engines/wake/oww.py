"""openWakeWord 0.5.1 with a model bundled in its wheel (the default wake engine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.audio import FRAME_SAMPLES
from engines.model_files import openwakeword_models_dir

def oww_models_dir() -> Path:
    """The folder of models bundled in the openwakeword 0.5.1 wheel."""
    folder = openwakeword_models_dir()
    if folder is None:
        raise FileNotFoundError("openwakeword is not installed")
    return folder


def _never_trains(*args, **kwargs):
    raise NotImplementedError("openwakeword's custom-verifier training is not loaded in Vigil (it needs scikit-learn)")


def import_model_class():
    """``openwakeword.model.Model``, imported without scikit-learn.

    Why: openwakeword's package ``__init__`` imports its custom-verifier *trainer*, which imports scikit-learn:
    ~0.9 s of every wake worker start (and restart), for a training helper Vigil never calls, and the wake
    worker is the last one ready (the capture worker waits for it). That one submodule is stood in for by a
    module whose trainer raises; everything openwakeword runs (its models, features, VAD) is its own code.
    """
    import sys
    import types

    name = "openwakeword.custom_verifier_model"
    if "openwakeword" not in sys.modules and name not in sys.modules:
        stand_in = types.ModuleType(name, "stands in for openwakeword's custom-verifier trainer (see above)")
        stand_in.train_custom_verifier = _never_trains  # type: ignore[attr-defined]
        sys.modules[name] = stand_in
    from openwakeword.model import Model

    return Model


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
        Model = import_model_class()
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
