"""Speaker-ID engines: a voice in, a unit-length voiceprint embedding out.

* :class:`ResemblyzerNumpy` (the offline default): a numpy-only port of
  ``resemblyzer==0.1.4``'s ``VoiceEncoder`` (GE2E, Wan et al. 2018): a 40-band
  mel power spectrogram (25 ms Hann window, 10 ms hop, 16 kHz), partial windows
  of 160 frames (1.6 s) at 1.3 per second, each through a 3-layer LSTM (hidden
  256) → linear 256→256 → ReLU → L2 norm; the partial embeddings are averaged
  and re-normalised (``embed_utterance``).  The weights are the ``pretrained.pt``
  that the resemblyzer wheel on PyPI ships (Apache-2.0, provisioned by
  :mod:`pipeline.models`); it is read *without torch*: a torch legacy checkpoint
  is a sequence of pickles plus raw storage bytes, parsed here with
  :mod:`pickle` (a custom ``Unpickler`` with ``persistent_load``) and numpy.
  Preprocessing follows ``resemblyzer.preprocess_wav``: volume raised (never
  lowered) to -30 dBFS, long silences trimmed — with an energy gate in place of
  webrtcvad, smoothed and dilated as resemblyzer does.
* :class:`SpeechbrainEcapa` (the user's named package): SpeechBrain's ECAPA-TDNN
  ``EncoderClassifier`` from a local folder.  No registry ships ECAPA weights;
  users with internet can point ``[speaker] model_dir`` at a folder they filled
  from the hub (``source="speechbrain/spkrec-ecapa-voxceleb"``).

Both take mono 16 kHz audio (int16, or float32 in [-1, 1]) and return a float32
unit vector; :class:`SpeakerError` (a ``ValueError``) says why audio was refused.
"""

from __future__ import annotations

import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SAMPLE_RATE = 16_000
MIN_VOICED_S = 0.5  # less voiced audio than this cannot be judged


class SpeakerError(ValueError):
    """Audio the engine cannot judge (too short, silent, wrong shape/dtype) or an unusable model."""


class SpeakerEngine(Protocol):
    name: str
    dim: int

    def embed(self, audio: np.ndarray) -> np.ndarray: ...


# --------------------------------------------------------------------------- audio helpers


def as_float_audio(audio: np.ndarray) -> np.ndarray:
    """int16 or float32/float64 mono → float32 in [-1, 1]; anything else is a SpeakerError."""
    if not isinstance(audio, np.ndarray):
        raise SpeakerError(f"audio must be a numpy array, not {type(audio).__name__}")
    if audio.ndim != 1:
        raise SpeakerError(f"audio must be mono 1-D samples, got shape {audio.shape}")
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768.0
    if audio.dtype in (np.float32, np.float64):
        if audio.size and not np.all(np.isfinite(audio)):
            raise SpeakerError("audio holds NaN or infinite samples")
        return audio.astype(np.float32, copy=False)
    raise SpeakerError(f"audio dtype must be int16 or float32, not {audio.dtype}")


def normalize_volume(wav: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    """Raise (never lower) the RMS level to ``target_dbfs``, as resemblyzer's ``increase_only``."""
    rms = float(np.sqrt(np.mean((wav.astype(np.float64) * 32767) ** 2))) if wav.size else 0.0
    if rms <= 0:
        return wav
    change = target_dbfs - 20 * np.log10(rms / 32767)
    if change < 0:
        return wav
    return (wav * np.float32(10 ** (change / 20))).astype(np.float32)


_VAD_WINDOW = 480  # 30 ms, resemblyzer's vad_window_length
_VAD_AVERAGE = 8  # vad_moving_average_width
_VAD_MAX_SILENCE = 6  # vad_max_silence_length


def voiced_mask(wav: np.ndarray, floor_dbfs: float = -55.0, below_peak_db: float = 25.0) -> np.ndarray:
    """Per 30 ms window: voiced? An energy gate in place of webrtcvad (mode 3): a window is
    voiced when it is above ``floor_dbfs`` and within ``below_peak_db`` of the loudest window.
    Judge the audio as captured (before any gain), or a quiet room is amplified into "speech"."""
    n = len(wav) // _VAD_WINDOW
    if n == 0:
        return np.zeros(0, dtype=bool)
    windows = wav[: n * _VAD_WINDOW].astype(np.float64).reshape(n, _VAD_WINDOW)
    db = 10 * np.log10(np.mean(windows**2, axis=1) + 1e-12)
    return (db > floor_dbfs) & (db > db.max() - below_peak_db)


def trim_long_silences(wav: np.ndarray, flags: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Keep voiced windows and silences up to ~200 ms around them (resemblyzer's smoothing and
    dilation); returns the trimmed audio and the number of raw voiced samples."""
    flags = voiced_mask(wav) if flags is None else flags
    if flags.size == 0:
        return wav[:0], 0
    width = _VAD_AVERAGE
    padded = np.concatenate((np.zeros((width - 1) // 2), flags.astype(np.float64), np.zeros(width // 2)))
    ret = np.cumsum(padded)
    ret[width:] = ret[width:] - ret[:-width]
    mask = np.round(ret[width - 1 :] / width).astype(bool)
    # binary dilation with a structure of 7 ones (centred), without scipy
    k = _VAD_MAX_SILENCE + 1
    left = k // 2
    dilated = np.zeros_like(mask)
    for shift in range(-left, k - left):
        src = np.roll(mask, shift)
        if shift > 0:
            src[:shift] = False
        elif shift < 0:
            src[shift:] = False
        dilated |= src
    sample_mask = np.repeat(dilated, _VAD_WINDOW)
    trimmed = wav[: len(sample_mask)][sample_mask]
    return trimmed, int(flags.sum()) * _VAD_WINDOW


def prepare(audio: np.ndarray, min_voiced_s: float = MIN_VOICED_S) -> np.ndarray:
    """Validate, normalise the level and trim silences; SpeakerError when too little speech."""
    wav = as_float_audio(audio)
    if len(wav) < min_voiced_s * SAMPLE_RATE:
        raise SpeakerError(f"audio too short: {len(wav) / SAMPLE_RATE:.2f} s (need at least "
                           f"{min_voiced_s:.1f} s of speech)")
    wav = wav - np.float32(wav.mean())  # a microphone's DC offset is not voice
    if not np.any(np.abs(wav) > 1e-4):
        raise SpeakerError("audio is silent")
    flags = voiced_mask(wav)  # on the level as captured
    wav = normalize_volume(wav)
    trimmed, voiced = trim_long_silences(wav, flags)
    if voiced < min_voiced_s * SAMPLE_RATE:
        raise SpeakerError(f"too little speech: {voiced / SAMPLE_RATE:.2f} s voiced (need at least "
                           f"{min_voiced_s:.1f} s)")
    return trimmed


def unit_vector(v: np.ndarray, dtype=np.float32) -> np.ndarray:
    """``v`` scaled to length 1 (cosine similarity is then a dot product); SpeakerError if it can't be."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0:
        raise SpeakerError("the embedding is zero or not finite")
    return (v / norm).astype(dtype)


# --------------------------------------------------------------------------- torch checkpoints without torch

_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = np.dtype(_DTYPES[name])


class _Storage:
    """A torch storage: filled after the main pickle (legacy format) or from a zip member."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.data: np.ndarray | None = None


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def numpy(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise SpeakerError("checkpoint tensor without data")
        item = data.itemsize
        return np.lib.stride_tricks.as_strided(data[self.offset :], shape=self.size,
                                               strides=[s * item for s in self.stride]).copy()


def _rebuild_tensor(storage, offset, size, stride, *_args):
    return _Tensor(storage, offset, size, stride)


class _TorchUnpickler(pickle.Unpickler):
    """Resolves only what a plain state-dict checkpoint needs; anything else is refused."""

    def __init__(self, file, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *_: data
        raise pickle.UnpicklingError(f"checkpoint refers to {module}.{name}, which a weights file should not")

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype)
        return self.storages[key]


def _to_numpy(obj: Any) -> Any:
    if isinstance(obj, _Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(v) for v in obj)
    return obj


def load_torch_checkpoint(path: Path) -> Any:
    """Read a torch ``.pt`` (legacy pickle sequence or the newer zip) into numpy arrays, no torch."""
    path = Path(path)
    storages: dict[str, _Storage] = {}
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                root = names[0].split("/", 1)[0]
                with zf.open(f"{root}/data.pkl") as f:
                    obj = _TorchUnpickler(f, storages).load()
                for key, st in storages.items():
                    st.data = np.frombuffer(zf.read(f"{root}/data/{key}"), dtype=st.dtype)
            return _to_numpy(obj)
        with open(path, "rb") as f:
            magic = pickle.load(f)
            if magic != 0x1950A86A20F9469CFC6C:
                raise SpeakerError(f"{path}: not a torch checkpoint (bad magic)")
            protocol = pickle.load(f)
            if protocol != 1001:
                raise SpeakerError(f"{path}: unsupported torch checkpoint protocol {protocol}")
            pickle.load(f)  # sys info
            obj = _TorchUnpickler(f, storages).load()
            keys = pickle.load(f)
            for key in keys:
                st = storages[str(key)]
                numel = int.from_bytes(f.read(8), "little")
                raw = f.read(numel * st.dtype.itemsize)
                if len(raw) != numel * st.dtype.itemsize:
                    raise SpeakerError(f"{path}: truncated storage {key}")
                st.data = np.frombuffer(raw, dtype=st.dtype)
        return _to_numpy(obj)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, OSError) as exc:
        if isinstance(exc, SpeakerError):
            raise
        raise SpeakerError(f"{path}: cannot read the checkpoint ({exc})") from exc


# --------------------------------------------------------------------------- resemblyzer port


def _stft_power(wav: np.ndarray, n_fft: int = 400, hop: int = 160) -> np.ndarray:
    """|STFT|² as librosa computes it (centered, zero-padded, periodic Hann): [frames, n_fft//2+1]."""
    padded = np.pad(wav, (n_fft // 2, n_fft // 2), mode="constant")
    n_frames = 1 + (len(padded) - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(padded, shape=(n_frames, n_fft),
                                             strides=(padded.strides[0] * hop, padded.strides[0]))
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    spec = np.fft.rfft(frames * window, axis=1)
    return (spec.real**2 + spec.imag**2).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


class ResemblyzerNumpy:
    """resemblyzer 0.1.4's VoiceEncoder in numpy (see the module docstring)."""

    name = "resemblyzer"
    dim = 256
    PARTIAL_FRAMES = 160
    HOP = 160
    RATE = 1.3
    MIN_COVERAGE = 0.75

    def __init__(self, weights: Path, threads: int = 1) -> None:
        started = time.perf_counter()
        checkpoint = load_torch_checkpoint(Path(weights))
        state = checkpoint.get("model_state") if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise SpeakerError(f"{weights}: no 'model_state' in the checkpoint")
        try:
            self.layers = []
            for k in range(3):
                w_ih = state[f"lstm.weight_ih_l{k}"].astype(np.float32)
                w_hh = state[f"lstm.weight_hh_l{k}"].astype(np.float32)
                bias = (state[f"lstm.bias_ih_l{k}"] + state[f"lstm.bias_hh_l{k}"]).astype(np.float32)
                if w_hh.shape != (1024, 256) or w_ih.shape[0] != 1024:
                    raise SpeakerError(f"{weights}: LSTM layer {k} has shape {w_ih.shape}/{w_hh.shape}")
                # torch's gate order is i, f, g, o; regroup to i, f, o, g so one sigmoid covers three gates
                order = np.r_[0:512, 768:1024, 512:768]
                self.layers.append((np.ascontiguousarray(w_ih[order].T), np.ascontiguousarray(w_hh[order].T),
                                    bias[order]))
            self.linear_w = np.ascontiguousarray(state["linear.weight"].astype(np.float32).T)
            self.linear_b = state["linear.bias"].astype(np.float32)
        except KeyError as exc:
            raise SpeakerError(f"{weights}: missing tensor {exc}") from None
        from pipeline.whisper_convert import mel_filterbank

        self.mel_basis = mel_filterbank(40, SAMPLE_RATE, 400).T.astype(np.float32)  # [201, 40]
        self.threads = threads
        self.load_s = time.perf_counter() - started

    # -- the network
    def forward(self, mels: np.ndarray) -> np.ndarray:
        """[batch, frames, 40] mel power → [batch, 256] unit embeddings (VoiceEncoder.forward)."""
        x = mels.astype(np.float32)
        batch, steps, _ = x.shape
        h = np.zeros((batch, 256), dtype=np.float32)
        for w_ih_t, w_hh_t, bias in self.layers:
            gates_x = x @ w_ih_t + bias  # [batch, steps, 1024], all time steps at once
            h = np.zeros((batch, 256), dtype=np.float32)
            c = np.zeros((batch, 256), dtype=np.float32)
            out = np.empty((batch, steps, 256), dtype=np.float32)
            g = np.empty((batch, 1024), dtype=np.float32)
            for t in range(steps):
                np.matmul(h, w_hh_t, out=g)
                g += gates_x[:, t]
                ifo = g[:, :768]
                ifo *= 0.5  # sigmoid(x) = (tanh(x/2) + 1) / 2, in place
                np.tanh(ifo, out=ifo)
                ifo += 1.0
                ifo *= 0.5
                np.tanh(g[:, 768:], out=g[:, 768:])
                c *= g[:, 256:512]
                c += g[:, :256] * g[:, 768:]
                h = g[:, 512:768] * np.tanh(c)
                out[:, t] = h
            x = out
        raw = np.maximum(h @ self.linear_w + self.linear_b, 0.0)
        norm = np.linalg.norm(raw, axis=1, keepdims=True)
        return raw / np.maximum(norm, 1e-12)

    def mel(self, wav: np.ndarray) -> np.ndarray:
        return (_stft_power(wav) @ self.mel_basis).astype(np.float32)

    @classmethod
    def partial_slices(cls, n_samples: int) -> list[slice]:
        """Mel-frame slices of the 1.6 s partials, as resemblyzer's compute_partial_slices."""
        n_frames = int(np.ceil((n_samples + 1) / cls.HOP))
        frame_step = int(np.round((SAMPLE_RATE / cls.RATE) / cls.HOP))
        steps = max(1, n_frames - cls.PARTIAL_FRAMES + frame_step + 1)
        slices = [slice(i, i + cls.PARTIAL_FRAMES) for i in range(0, steps, frame_step)]
        coverage = (n_samples - slices[-1].start * cls.HOP) / (cls.PARTIAL_FRAMES * cls.HOP)
        if coverage < cls.MIN_COVERAGE and len(slices) > 1:
            slices = slices[:-1]
        return slices

    def embed_preprocessed(self, wav: np.ndarray) -> np.ndarray:
        """``VoiceEncoder.embed_utterance`` on audio already preprocessed (float32)."""
        slices = self.partial_slices(len(wav))
        needed = slices[-1].stop * self.HOP
        if needed >= len(wav):
            wav = np.pad(wav, (0, needed - len(wav)))
        mel = self.mel(wav.astype(np.float32))
        mels = np.stack([mel[s] for s in slices])
        partials = self.forward(mels)
        return unit_vector(partials.mean(axis=0))

    def embed(self, audio: np.ndarray) -> np.ndarray:
        return self.embed_preprocessed(prepare(audio))


# --------------------------------------------------------------------------- speechbrain ECAPA

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


def make_speaker_engine(cfg, models_dir: Path | str | None = None) -> SpeakerEngine:
    """The engine ``[speaker] engine`` names; the resemblyzer weights are provisioned into ``models_dir``."""
    if cfg.engine == "resemblyzer":
        if cfg.model_dir and Path(cfg.model_dir).is_file():
            weights = Path(cfg.model_dir)  # an explicit pretrained.pt
        else:
            from pipeline.models import ensure_speaker_model

            weights = ensure_speaker_model(Path(models_dir) if models_dir else None, progress=False)
        return ResemblyzerNumpy(weights, threads=cfg.threads)
    if cfg.engine == "speechbrain":
        return SpeechbrainEcapa(cfg.model_dir, threads=cfg.threads)
    raise SpeakerError(f"unknown speaker engine {cfg.engine!r} (expected 'resemblyzer' or 'speechbrain')")
