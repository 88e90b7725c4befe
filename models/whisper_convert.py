"""Convert a CTranslate2 Whisper model to whisper.cpp's legacy ggml ``.bin``.

Why: no ggml Whisper model is published on PyPI, but CTranslate2 conversions
of OpenAI's Whisper are (float16, MIT).  This module rewrites one into the
file layout whisper.cpp's loader expects, with numpy only, in about a second.

ggml layout (as written by whisper.cpp's ``models/convert-pt-to-ggml.py``)::

    u32 magic 0x67676d6c
    11 x i32 hparams: n_vocab, n_audio_ctx, n_audio_state, n_audio_head,
        n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer,
        n_mels, ftype (1 = f16; 2007 = q8_0, quantization version 2)
    i32 n_mels, i32 n_fft_bins (201), f32 filterbank[n_mels * 201]
    i32 n_tokens, n_tokens x (i32 len, bytes)   # up to, excluding <|endoftext|>
    per tensor: i32 n_dims, i32 name_len, i32 ftype (0 f32, 1 f16),
        i32 ne[n_dims] (shape reversed), name, data

whisper.cpp checks every tensor's shape and type: big 2-D/3-D weights are f16;
1-D tensors, conv biases (as ``[n, 1]``) and positional embeddings are f32.

``weights="q8_0"`` stores the 2-D weight matrices the way whisper.cpp's own
``quantize`` tool does (ggml type 8: blocks of 32 int8 with one f16 scale; the
conv kernels stay f16).  Why: on this 2-core x86 box ggml's int8 dot products
make tiny.en's decode ~18 % faster (199 -> 164 ms p50 on the hearing study's
240 utterances) with the same WER (0.346 f16, 0.335 q8_0).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from core.dsp import mel_filterbank
from engines.model_files import GGML_MAGIC

_FTYPE_F32 = 0
_FTYPE_F16 = 1
_TYPE_Q8_0 = 8  # ggml_type of a q8_0 tensor
_QK8_0 = 32  # values per q8_0 block
# header ftype: GGML_FTYPE_MOSTLY_Q8_0 (7) + quantization version 2 x GGML_QNT_VERSION_FACTOR (1000)
_HEADER_FTYPE = {"f16": _FTYPE_F16, "q8_0": 2 * 1000 + 7}
_EOT = "<|endoftext|>"
# Order of the i32 hparams in the ggml header (ftype follows).
HPARAM_NAMES = (
    "n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
    "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer", "n_mels",
)

# CTranslate2 dtype codes -> numpy dtypes.
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class ConversionError(ValueError):
    """The CTranslate2 input is not a Whisper model this converter understands."""


# --------------------------------------------------------------------------- CT2 reader


def read_ct2_model(path: Path) -> dict[str, np.ndarray]:
    """Read a CTranslate2 ``model.bin`` into ``{name: array}`` (aliases resolved).

    Arrays are views into one bytes buffer, so reading costs one file read.
    """
    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return value

    def take_str() -> str:
        nonlocal pos
        n = take("H")  # length includes the trailing NUL
        text = buf[pos : pos + n - 1].decode("utf-8")
        pos += n
        return text

    try:
        version = take("I")
        if version < 4:
            raise ConversionError(f"{path}: CTranslate2 binary version {version} is too old (need >= 4)")
        spec = take_str()
        take("I")  # spec revision
        if "Whisper" not in spec:
            raise ConversionError(f"{path}: model spec is {spec!r}, not a Whisper model")
        variables: dict[str, np.ndarray] = {}
        for _ in range(take("I")):
            name = take_str()
            rank = take("B")
            shape = tuple(take("I") for _ in range(rank))
            dtype_code = take("B")
            nbytes = take("I")
            dtype = _CT2_DTYPES.get(dtype_code)
            if dtype is None:  # bf16 or unknown: not produced for Whisper here
                raise ConversionError(f"{path}: variable {name!r} has unsupported dtype code {dtype_code}")
            if pos + nbytes > len(buf):
                raise ConversionError(f"{path}: truncated in variable {name!r}")
            arr = np.frombuffer(buf, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=pos)
            variables[name] = arr.reshape(shape)
            pos += nbytes
        for _ in range(take("I")):
            alias, target = take_str(), take_str()
            variables[alias] = variables[target]
    except struct.error as exc:
        raise ConversionError(f"{path}: truncated CTranslate2 file ({exc})") from exc
    return variables


# --------------------------------------------------------------------------- vocabulary


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table (printable stand-ins for bytes)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping: dict[str, int] = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            mapping[chr(256 + extra)] = b
            extra += 1
    return mapping


def load_tokens(ct2_dir: Path) -> list[str]:
    """Token strings (GPT-2 byte-level form) in id order, from vocabulary.txt or tokenizer.json."""
    vocab_txt = ct2_dir / "vocabulary.txt"
    if vocab_txt.is_file():
        # split("\n"), not splitlines(): a token may hold other line-break characters
        lines = vocab_txt.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return lines
    tok_json = ct2_dir / "tokenizer.json"
    if tok_json.is_file():
        data = json.loads(tok_json.read_text(encoding="utf-8"))
        by_id = {i: t for t, i in data["model"]["vocab"].items()}
        by_id.update({a["id"]: a["content"] for a in data.get("added_tokens", [])})
        return [by_id[i] for i in range(max(by_id) + 1)]
    raise ConversionError(f"{ct2_dir}: neither vocabulary.txt nor tokenizer.json found")


def ggml_vocab(tokens: list[str]) -> list[bytes]:
    """Byte strings of the ordinary tokens, up to (excluding) ``<|endoftext|>``.

    whisper.cpp adds the special tokens itself from n_vocab.
    """
    try:
        eot = tokens.index(_EOT)
    except ValueError as exc:
        raise ConversionError(f"vocabulary has no {_EOT} token") from exc
    dec = _byte_decoder()
    out = []
    for tok in tokens[:eot]:
        try:
            out.append(bytes(dec[c] for c in tok))
        except KeyError:  # not byte-level encoded: keep as UTF-8
            out.append(tok.encode("utf-8"))
    return out


# --------------------------------------------------------------------------- tensors


def _count_layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in variables:
        n += 1
    return n


def _scalar(variables: dict[str, np.ndarray], name: str) -> int:
    if name not in variables:
        raise ConversionError(f"missing scalar {name!r}")
    return int(variables[name].reshape(-1)[0])


def hparams_from_ct2(variables: dict[str, np.ndarray]) -> dict[str, int]:
    """Whisper dims derived from tensor shapes, layer names and head-count scalars."""
    try:
        n_audio_ctx, n_audio_state = variables["encoder/position_encodings/encodings"].shape
        n_text_ctx, n_text_state = variables["decoder/position_encodings/encodings"].shape
        n_vocab = variables["decoder/embeddings/weight"].shape[0]
        n_mels = variables["encoder/conv1/weight"].shape[1]
    except KeyError as exc:
        raise ConversionError(f"missing tensor {exc}") from exc
    return {
        "n_vocab": n_vocab,
        "n_audio_ctx": n_audio_ctx,
        "n_audio_state": n_audio_state,
        "n_audio_head": _scalar(variables, "encoder/num_heads"),
        "n_audio_layer": _count_layers(variables, "encoder"),
        "n_text_ctx": n_text_ctx,
        "n_text_state": n_text_state,
        "n_text_head": _scalar(variables, "decoder/num_heads"),
        "n_text_layer": _count_layers(variables, "decoder"),
        "n_mels": n_mels,
    }


def _linear(v: dict[str, np.ndarray], src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{dst}.weight", v[f"{src}/weight"]
    yield f"{dst}.bias", v[f"{src}/bias"]


def _norm(v: dict[str, np.ndarray], src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{dst}.weight", v[f"{src}/gamma"]
    yield f"{dst}.bias", v[f"{src}/beta"]


def _split_fused(v: dict[str, np.ndarray], src: str, dst: str, parts: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """Split a fused projection ([k*d, d]) into whisper's separate ones.

    whisper's key projection has no bias; CT2 stores a zero slice for it.
    """
    weights = np.split(v[f"{src}/weight"], len(parts), axis=0)
    biases = np.split(v[f"{src}/bias"], len(parts), axis=0)
    for part, w, b in zip(parts, weights, biases):
        yield f"{dst}.{part}.weight", w
        if part == "key":
            if np.any(b != 0):
                raise ConversionError(f"{src}: key bias is not zero; unexpected layout")
            continue
        yield f"{dst}.{part}.bias", b


def _block(v: dict[str, np.ndarray], src: str, dst: str, cross: bool) -> Iterator[tuple[str, np.ndarray]]:
    yield from _split_fused(v, f"{src}/self_attention/linear_0", f"{dst}.attn", ["query", "key", "value"])
    yield from _linear(v, f"{src}/self_attention/linear_1", f"{dst}.attn.out")
    yield from _norm(v, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
    if cross:
        yield from _linear(v, f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
        yield from _split_fused(v, f"{src}/attention/linear_1", f"{dst}.cross_attn", ["key", "value"])
        yield from _linear(v, f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
        yield from _norm(v, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
    yield from _linear(v, f"{src}/ffn/linear_0", f"{dst}.mlp.0")
    yield from _linear(v, f"{src}/ffn/linear_1", f"{dst}.mlp.2")
    yield from _norm(v, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")


def ggml_tensors(v: dict[str, np.ndarray], hp: dict[str, int]) -> Iterator[tuple[str, np.ndarray]]:
    """(ggml name, array) pairs in whisper naming; arrays keep CT2's dtype."""
    try:
        yield "encoder.positional_embedding", v["encoder/position_encodings/encodings"]
        for i in (1, 2):
            yield from _linear(v, f"encoder/conv{i}", f"encoder.conv{i}")
        for i in range(hp["n_audio_layer"]):
            yield from _block(v, f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
        yield from _norm(v, "encoder/layer_norm", "encoder.ln_post")
        yield "decoder.positional_embedding", v["decoder/position_encodings/encodings"]
        yield "decoder.token_embedding.weight", v["decoder/embeddings/weight"]
        for i in range(hp["n_text_layer"]):
            yield from _block(v, f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
        yield from _norm(v, "decoder/layer_norm", "decoder.ln")
    except KeyError as exc:
        raise ConversionError(f"missing tensor {exc}") from exc


_F32_NAMES = {"encoder.conv1.bias", "encoder.conv2.bias",
              "encoder.positional_embedding", "decoder.positional_embedding"}


def quantize_q8_0(data: np.ndarray) -> bytes:
    """ggml's q8_0 blocks along the last axis: per 32 values an f16 scale ``max|x| / 127``
    and 32 int8 ``round(x / scale)`` (34 bytes), as ggml's reference quantizer writes them."""
    rows = np.asarray(data, dtype=np.float32).reshape(-1, _QK8_0)
    scale = np.abs(rows).max(axis=1) / 127.0
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
    blocks = np.empty(rows.shape[0], dtype=[("d", "<f2"), ("qs", "i1", _QK8_0)])
    blocks["d"] = scale
    blocks["qs"] = np.clip(np.round(rows * inverse[:, None]), -127, 127)
    return blocks.tobytes()


def _write_tensor(f: BinaryIO, name: str, data: np.ndarray, weights: str) -> None:
    if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
        data = data.reshape(-1, 1)
    if data.ndim < 2 or name in _F32_NAMES:
        data, ftype = np.ascontiguousarray(data, dtype="<f4"), _FTYPE_F32
    elif weights == "q8_0" and data.ndim == 2:
        if data.shape[-1] % _QK8_0:
            raise ConversionError(f"{name}: width {data.shape[-1]} is not a multiple of {_QK8_0}; cannot store q8_0")
        data, ftype = np.asarray(data), _TYPE_Q8_0
    else:
        data, ftype = np.ascontiguousarray(data, dtype="<f2"), _FTYPE_F16
    encoded = name.encode("utf-8")
    f.write(struct.pack("<iii", data.ndim, len(encoded), ftype))
    f.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
    f.write(encoded)
    f.write(quantize_q8_0(data) if ftype == _TYPE_Q8_0 else data.tobytes())


# --------------------------------------------------------------------------- entry point


def convert_ct2_to_ggml(ct2_dir: Path, out_path: Path, weights: str = "f16") -> None:
    """Write ``out_path`` (ggml; weight matrices ``"f16"`` or ``"q8_0"``) from the CTranslate2
    Whisper model in ``ct2_dir``.

    Written to a temporary file and renamed, so a crash never leaves a
    half-written model where the loader would find it.
    """
    if weights not in _HEADER_FTYPE:
        raise ValueError(f"weights must be one of {sorted(_HEADER_FTYPE)}, not {weights!r}")
    ct2_dir, out_path = Path(ct2_dir), Path(out_path)
    variables = read_ct2_model(ct2_dir / "model.bin")
    hp = hparams_from_ct2(variables)
    vocab = ggml_vocab(load_tokens(ct2_dir))
    filters = mel_filterbank(hp["n_mels"])

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<I", GGML_MAGIC))
            f.write(struct.pack("<10i", *(hp[k] for k in HPARAM_NAMES)))
            f.write(struct.pack("<i", _HEADER_FTYPE[weights]))
            f.write(struct.pack("<ii", *filters.shape))
            f.write(filters.astype("<f4").tobytes())
            f.write(struct.pack("<i", len(vocab)))
            f.write(b"".join(struct.pack("<i", len(tok)) + tok for tok in vocab))
            for name, data in ggml_tensors(variables, hp):
                _write_tensor(f, name, data, weights)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)


if __name__ == "__main__":  # python -m models.whisper_convert CT2_DIR OUT.bin [f16|q8_0]
    import sys

    convert_ct2_to_ggml(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:4])
