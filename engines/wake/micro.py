"""microWakeWord (PyPI ``pymicro-wakeword``, bundled TFLite models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.audio import FRAME_SAMPLES
from engines.wake import WakeEngineUnavailable, _int16

class MicroWakeWordEngine:
    """microWakeWord (PyPI ``pymicro-wakeword``): a streaming TFLite model over 10 ms features.

    ``model``: a bundled model ("hey_jarvis", "alexa", "hey_mycroft", "okay_nabu")
    or a path to a microWakeWord ``.json`` config. A probability comes every
    30 ms (3 feature windows); the frame's score is the highest sliding-window
    mean probability (the model's own detection cutoff is ``cutoff``, 0.97 for
    hey_jarvis).
    """

    frame_samples = FRAME_SAMPLES
    graded = True
    notes: tuple[str, ...] = ()

    def __init__(self, model: str = "hey_jarvis") -> None:
        try:
            from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model
        except ImportError as exc:
            raise WakeEngineUnavailable(
                f"pymicro-wakeword is not installed ({exc}); pip install pymicro-wakeword") from exc
        builtin = {m.value: m for m in Model}
        try:
            if model in builtin:
                self._mww = MicroWakeWord.from_builtin(builtin[model])
            elif Path(model).is_file():
                self._mww = MicroWakeWord.from_config(model)
            else:
                raise WakeEngineUnavailable(f"microWakeWord has no model {model!r} (bundled: {', '.join(builtin)}; "
                                            "or a path to a model .json)")
        except (OSError, ValueError, KeyError) as exc:
            raise WakeEngineUnavailable(f"microWakeWord model {model!r} does not load: {exc}") from exc
        self._features = MicroWakeWordFeatures()
        self.cutoff = float(self._mww.probability_cutoff)
        self.name = f"microwakeword:{self._mww.id}"

    def score(self, frame: np.ndarray) -> float:
        best = 0.0
        for feats in self._features.process_streaming(_int16(frame).tobytes()):
            p = self._mww.process_streaming_prob(feats)
            if p is not None and p > best:
                best = float(p)
        return best

    def reset(self) -> None:
        self._features.reset()
        self._mww.reset()  # reloads the interpreter: its streaming state lives in the model's variables
