"""pocketsphinx keyword spotting with its bundled en-us model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.audio import FRAME_SAMPLES
from engines.wake import WakeEngineUnavailable, _int16

class PocketsphinxEngine:
    """pocketsphinx keyword spotting (PyPI ``pocketsphinx`` 5.1.1, bundled en-us model); binary score.

    ``keyphrase`` words must be in the bundled CMU dictionary ("hey", "jarvis"
    are). ``threshold`` is pocketsphinx's ``kws_threshold``: smaller fires more
    readily (1e-30 measured best for "hey jarvis" on synthetic voices).
    """

    notes: tuple[str, ...] = ()
    graded = False  # scores are 0 or 1: a 1.0 says nothing about how sure it is

    frame_samples = FRAME_SAMPLES

    def __init__(self, keyphrase: str = "hey jarvis", threshold: float = 1e-30) -> None:
        try:
            from pocketsphinx import Decoder, get_model_path
        except ImportError as exc:
            raise WakeEngineUnavailable(f"pocketsphinx is not installed ({exc}); pip install pocketsphinx") from exc
        model = Path(get_model_path()) / "en-us"
        dictionary = model / "cmudict-en-us.dict"
        known = set()
        with open(dictionary, encoding="utf-8") as fh:
            for line in fh:
                known.add(line.split(" ", 1)[0])
        missing = [w for w in keyphrase.lower().split() if w not in known]
        if not keyphrase.strip() or missing:
            raise WakeEngineUnavailable(f"pocketsphinx keyphrase {keyphrase!r}: not in the dictionary: {missing}")
        try:
            self._decoder = Decoder(hmm=str(model / "en-us"), dict=str(dictionary), keyphrase=keyphrase.lower(),
                                    kws_threshold=threshold, loglevel="FATAL")
        except (RuntimeError, ValueError) as exc:
            raise WakeEngineUnavailable(f"pocketsphinx does not start: {exc}") from exc
        self.keyphrase = keyphrase.lower()
        self.name = f"pocketsphinx:{self.keyphrase.replace(' ', '_')}"
        self._decoder.start_utt()

    def score(self, frame: np.ndarray) -> float:
        self._decoder.process_raw(_int16(frame).tobytes(), False, False)
        if self._decoder.hyp() is None:
            return 0.0
        self.reset()  # kws keeps reporting the hypothesis until the utterance restarts
        return 1.0

    def reset(self) -> None:
        self._decoder.end_utt()
        self._decoder.start_utt()
