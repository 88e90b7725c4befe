"""SpeechBrain's ECAPA-TDNN speaker encoder from a local folder (the user's named package)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from core.audio import SAMPLE_RATE
from engines.speaker import SpeakerError, prepare, unit_vector


ECAPA_FILES = ("hyperparams.yaml", "embedding_model.ckpt")


class SpeechbrainEcapa:
    """SpeechBrain's ECAPA-TDNN speaker encoder, loaded from a local folder (never the hub)."""

    name = "speechbrain"

    def __init__(self, model_dir: Path | str, threads: int = 1) -> None:
        if not str(model_dir or "").strip() or not Path(model_dir).expanduser().is_dir():
            raise SpeakerError(f"speechbrain model_dir {str(model_dir or '') or '(unset)'!r} is not a folder; set "
                               "[speaker] model_dir to a folder with hyperparams.yaml and embedding_model.ckpt")
        model_dir = Path(model_dir).expanduser().resolve()
        missing = [f for f in ECAPA_FILES if not (model_dir / f).is_file()]
        if missing:
            raise SpeakerError(f"speechbrain model_dir {model_dir}: missing {', '.join(missing)}")
        started = time.perf_counter()
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        torch.set_num_threads(max(1, threads))
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass  # already set in this process
        from speechbrain.inference.speaker import EncoderClassifier

        self._torch = torch
        self.model = EncoderClassifier.from_hparams(source=str(model_dir), savedir=str(model_dir),
                                                    overrides={"pretrained_path": str(model_dir)},
                                                    run_opts={"device": "cpu"})
        self.model.eval()
        with torch.no_grad():
            probe = self.model.encode_batch(torch.zeros(1, SAMPLE_RATE))
        self.dim = int(probe.shape[-1])
        self.load_s = time.perf_counter() - started

    def embed(self, audio: np.ndarray) -> np.ndarray:
        wav = prepare(audio)
        torch = self._torch
        with torch.no_grad():
            emb = self.model.encode_batch(torch.from_numpy(np.ascontiguousarray(wav)).unsqueeze(0))
        return unit_vector(emb.detach().cpu().numpy())
