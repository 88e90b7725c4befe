"""Model files checked before native code sees them: whisper.cpp ggml and llama.cpp gguf.

Why: pywhispercpp accepts a corrupt model silently and segfaults on the first transcription,
and llama.cpp aborts the process on a bad gguf. A file that fails here is a ``ModelError``
naming the file and the reason, raised in Python where a worker can report it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

GGML_MAGIC = 0x67676D6C  # "ggml" (little-endian u32), whisper.cpp's legacy model format


class ModelError(RuntimeError):
    """A model file is missing or unusable, or could not be provisioned."""


def openwakeword_models_dir() -> Path | None:
    """The models bundled in the openwakeword 0.5.1 wheel (its wake models, and the Silero VAD the STT worker
    uses), found without importing openwakeword: its import loads its whole model stack, ~1.2 s of a worker's
    start for a folder name. None when openwakeword is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("openwakeword")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent / "resources" / "models"


# ggml tensor types: id -> (block size in elements, bytes per block).
_GGML_TYPES = {
    0: (1, 4), 1: (1, 2),  # f32, f16
    2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),  # q4_0 q4_1 q5_0 q5_1 q8_0 q8_1
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),  # k-quants
    24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 30: (1, 2),  # i8 i16 i32 i64 f64 bf16
}


# ggml_ftype (modulo the quantization-version factor 1000) -> the tensor type whisper.cpp then
# expects for the weight matrices: f32, f16, q4_0, q4_1, q8_0, q5_0, q5_1, q2_k..q6_k.
_WHISPER_WTYPE = {0: 0, 1: 1, 2: 2, 3: 3, 7: 8, 8: 6, 9: 7, 10: 10, 11: 11, 12: 12, 13: 13, 14: 14}


def _whisper_tensor_names(n_audio_layer: int, n_text_layer: int) -> set[str]:
    """The exact tensor set whisper.cpp's loader requires (it fails on any other)."""
    def linear(p: str) -> list[str]:
        return [f"{p}.weight", f"{p}.bias"]

    def block(p: str, cross: bool) -> list[str]:
        names = [*linear(f"{p}.attn.query"), f"{p}.attn.key.weight", *linear(f"{p}.attn.value"),
                 *linear(f"{p}.attn.out"), *linear(f"{p}.attn_ln"),
                 *linear(f"{p}.mlp.0"), *linear(f"{p}.mlp.2"), *linear(f"{p}.mlp_ln")]
        if cross:
            names += [*linear(f"{p}.cross_attn.query"), f"{p}.cross_attn.key.weight",
                      *linear(f"{p}.cross_attn.value"), *linear(f"{p}.cross_attn.out"),
                      *linear(f"{p}.cross_attn_ln")]
        return names

    names = {"encoder.positional_embedding", *linear("encoder.conv1"), *linear("encoder.conv2"),
             *linear("encoder.ln_post"), "decoder.positional_embedding", "decoder.token_embedding.weight",
             *linear("decoder.ln")}
    for i in range(n_audio_layer):
        names.update(block(f"encoder.blocks.{i}", cross=False))
    for i in range(n_text_layer):
        names.update(block(f"decoder.blocks.{i}", cross=True))
    return names


@contextlib.contextmanager
def _mapped(path: Path, kind: str) -> Iterator[mmap.mmap]:
    """Map a regular, non-empty file read-only (pages are read only when touched)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{kind} model {path}: file does not exist")
    if not path.is_file():
        raise ModelError(f"{kind} model {path}: not a regular file")
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise ModelError(f"{kind} model {path}: file is empty")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                yield mm
    except OSError as exc:
        raise ModelError(f"{kind} model {path}: cannot read ({exc})") from exc


def validate_ggml(path: Path) -> None:
    """Check a whisper.cpp ggml model before pywhispercpp loads it.

    pywhispercpp raises nothing for a bad file and the first transcription
    segfaults, so walk the header, vocab and tensor table here and check that
    every tensor whisper.cpp needs is present and the file ends exactly where
    the tensor data does.  Raises :class:`ModelError` naming the path.
    """
    with _mapped(path, "whisper") as mm:
        size = len(mm)

        def bad(what: str) -> ModelError:
            return ModelError(f"whisper model {path}: {what}")

        if size < 4 or struct.unpack_from("<I", mm, 0)[0] != GGML_MAGIC:
            raise bad(f"bad magic {bytes(mm[:4]).hex(' ')!s} (expected 6c 6d 67 67: not a ggml whisper file)")
        if size < 4 + 11 * 4 + 8:
            raise bad(f"truncated header ({size} bytes)")
        hp = struct.unpack_from("<11i", mm, 4)
        (n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx, n_text_state, n_text_head,
         n_text_layer, n_mels, ftype) = hp
        if min(hp[:10]) <= 0 or max(hp[:10]) > 1 << 20 or n_audio_state != n_text_state:
            raise bad(f"implausible hyper-parameters {hp}")
        # whisper.cpp aborts (SIGABRT) on these instead of failing the load:
        if n_audio_state % n_audio_head or n_text_state % n_text_head:
            raise bad(f"head count does not divide the model width (hyper-parameters {hp})")
        if ftype < 0 or ftype % 1000 not in _WHISPER_WTYPE:
            raise bad(f"unknown weight type (ftype {ftype})")
        wtype = _WHISPER_WTYPE[ftype % 1000]
        # Every layer holds n_state x n_state matrices of >= 2 bits per weight; a (corrupt) layer
        # count beyond what the file can hold would otherwise build millions of expected names.
        if (n_audio_layer + n_text_layer) * n_audio_state**2 // 4 > size:
            raise bad(f"implausible layer counts for a {size}-byte file (hyper-parameters {hp})")
        # ... and on a wrong shape or size it logs an error, returns no context, and the first
        # transcription segfaults; so the hyper-parameters must match the tensors.
        shapes = {"encoder.positional_embedding": (n_audio_state, n_audio_ctx),
                  "decoder.positional_embedding": (n_text_state, n_text_ctx),
                  "decoder.token_embedding.weight": (n_text_state, n_vocab)}
        pos = 48
        n_mel, n_fft = struct.unpack_from("<ii", mm, pos)
        pos += 8 + 4 * n_mel * n_fft
        if n_mel != n_mels or not 0 < n_fft <= 4096:
            raise bad(f"bad mel filterbank header ({n_mel} x {n_fft}, n_mels {n_mels})")
        try:
            (n_tokens,) = struct.unpack_from("<i", mm, pos)
            pos += 4
            if not 0 <= n_tokens <= n_vocab:
                raise bad(f"bad vocabulary size {n_tokens} (n_vocab {n_vocab})")
            for _ in range(n_tokens):
                (tlen,) = struct.unpack_from("<I", mm, pos)
                pos += 4 + tlen
            if pos > size:
                raise struct.error("vocabulary runs past the end")
            expected = _whisper_tensor_names(n_audio_layer, n_text_layer)
            seen: set[str] = set()
            while pos < size:
                n_dims, name_len, ttype = struct.unpack_from("<iii", mm, pos)
                pos += 12
                if not 1 <= n_dims <= 4 or not 0 < name_len <= 256 or ttype not in _GGML_TYPES:
                    raise bad(f"corrupt tensor header at offset {pos - 12}")
                ne = struct.unpack_from(f"<{n_dims}i", mm, pos)
                pos += 4 * n_dims
                name = bytes(mm[pos : pos + name_len]).decode("utf-8", "replace")
                pos += name_len
                if name not in expected:
                    raise bad(f"unexpected tensor {name!r} at offset {pos}")
                if name in shapes and tuple(ne) != shapes[name]:
                    raise bad(f"tensor {name!r} has shape {tuple(ne)}, the header implies {shapes[name]}")
                if name == "decoder.token_embedding.weight" and ttype != wtype:  # always stored in wtype
                    raise bad(f"tensor {name!r} has type {ttype}, the header's ftype {ftype} implies {wtype}")
                block, block_bytes = _GGML_TYPES[ttype]
                n_elem = 1
                for d in ne:
                    n_elem *= d
                pos += n_elem // block * block_bytes
                if pos > size:
                    raise bad(f"truncated: tensor {name!r} needs {pos - size} more bytes than the file has "
                              f"({size} bytes)")
                seen.add(name)
        except (struct.error, OverflowError):
            raise bad(f"truncated ({size} bytes) before the end of the header or tensor table") from None
        missing = expected - seen
        if missing:
            raise bad(f"truncated or incomplete: {len(missing)} of {len(expected)} tensors missing "
                      f"(e.g. {sorted(missing)[0]!r})")


_GGUF_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # type id -> bytes
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def validate_gguf(path: Path) -> None:
    """Check a llama.cpp gguf model: magic, version, and that every tensor's
    data lies inside the file (a truncated download fails here, not in C)."""
    with _mapped(path, "LLM") as mm:
        size = len(mm)

        def bad(what: str) -> ModelError:
            return ModelError(f"LLM model {path}: {what}")

        if bytes(mm[:4]) != b"GGUF":
            raise bad(f"bad magic {bytes(mm[:4])!r} (expected b'GGUF')")
        try:
            version, n_tensors, n_kv = struct.unpack_from("<IQQ", mm, 4)
            if version not in (2, 3) or n_tensors == 0 or n_tensors > 1 << 20 or n_kv > 1 << 20:
                raise bad(f"implausible header (version {version}, {n_tensors} tensors, {n_kv} keys)")
            pos = 24

            def read_str() -> str:
                nonlocal pos
                (n,) = struct.unpack_from("<Q", mm, pos)
                if pos + 8 + n > size:
                    raise struct.error("string past the end")
                text = bytes(mm[pos + 8 : pos + 8 + n]).decode("utf-8", "replace")
                pos += 8 + n
                return text

            def skip_value(vtype: int) -> int | None:
                nonlocal pos
                if vtype in _GGUF_SCALAR:
                    value = int.from_bytes(mm[pos : pos + _GGUF_SCALAR[vtype]], "little")
                    pos += _GGUF_SCALAR[vtype]
                    return value
                if vtype == _GGUF_STRING:
                    read_str()
                elif vtype == _GGUF_ARRAY:
                    etype, count = struct.unpack_from("<IQ", mm, pos)
                    pos += 12
                    if etype in _GGUF_SCALAR:
                        pos += count * _GGUF_SCALAR[etype]
                    else:
                        for _ in range(count):
                            skip_value(etype)
                else:
                    raise bad(f"unknown metadata value type {vtype} at offset {pos}")
                return None

            alignment = 32
            for _ in range(n_kv):
                key = read_str()
                (vtype,) = struct.unpack_from("<I", mm, pos)
                pos += 4
                value = skip_value(vtype)
                if key == "general.alignment" and value:
                    alignment = value
            tensors = []
            for _ in range(n_tensors):
                name = read_str()
                (n_dims,) = struct.unpack_from("<I", mm, pos)
                if n_dims > 4:  # GGML_MAX_DIMS
                    raise bad(f"tensor {name!r} has {n_dims} dimensions (at most 4)")
                dims = struct.unpack_from(f"<{n_dims}Q", mm, pos + 4)
                ttype, offset = struct.unpack_from("<IQ", mm, pos + 4 + 8 * n_dims)
                pos += 4 + 8 * n_dims + 12
                tensors.append((name, dims, ttype, offset))
        except (struct.error, OverflowError):  # a length or count that points past the file
            raise bad(f"truncated ({size} bytes) inside the header") from None
        data_start = -(-pos // alignment) * alignment
        for name, dims, ttype, offset in tensors:
            n_elem = 1
            for d in dims:
                n_elem *= d
            block, block_bytes = _GGML_TYPES.get(ttype, (1, 0))  # unknown type: check the start only
            end = data_start + offset + n_elem // block * block_bytes
            if end > size or data_start + offset > size:
                raise bad(f"truncated: tensor {name!r} ends at byte {end}, file has {size}")
