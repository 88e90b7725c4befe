"""resemblyzer 0.1.4's GE2E voice encoder in numpy, reading its ``pretrained.pt`` without torch."""

from __future__ import annotations

import pickle
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from core.audio import SAMPLE_RATE
from core.dsp import mel_filterbank
from engines.speaker import SpeakerError, prepare, unit_vector


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
