"""Wake-word engines and the detector policy around them.

An engine turns one int16 frame (16 kHz mono, ``frame_samples`` long — the
ring's 1280-sample / 80 ms frames) into a score 0..1; engines whose native
frame is different (porcupine 512 samples, microWakeWord 10 ms features,
pocketsphinx any length) buffer and re-chunk internally. ``WakeDetector`` adds
the policy the pipeline needs and the engines lack: a warm-up (openWakeWord
scores a spurious ~1 s after start-up because its feature buffer is seeded
with random noise), a threshold, the PEAK score of a detection (two-stage
wake compares it with the normal threshold when the verifier is down), and
one detection per utterance (reset + refractory time, or the tail of the same
phrase fires again).

Engines (``make_wake_engine(name, config.wake)``; each ships its weights in a
PyPI package, nothing is fetched from a model hub):

* ``openwakeword`` (default): openWakeWord 0.5.1 with its bundled ``hey_jarvis``
  ONNX model, loaded by path. openWakeWord builds every onnxruntime session
  with 1 intra-op and 1 inter-op thread; ``session_threads()`` reports it.
* ``porcupine``: Picovoice Porcupine, keyword "jarvis" (built-in) or a ``.ppn``
  path. With an AccessKey (``$PICOVOICE_ACCESS_KEY``) the current
  ``pvporcupine`` (4.x) — it validates the key online, so it fails on an
  offline kiosk ("AccessKey is invalid"). Without a key, the offline
  ``pvporcupine==1.9.5`` build: its wheel (Apache-2.0) carries the x86_64
  library, the model and the built-in keywords, and needs no key. Both
  releases are the same import name, so 1.9.5 is never installed: its wheel
  is fetched with ``pip download --no-deps`` into the models dir and its
  library is driven here through ctypes (``ensure_porcupine_legacy``).
  Porcupine gives no score: 1.0 on a detection, else 0.0; its
  ``sensitivity`` is the knob.
* ``microwakeword``: PyPI ``pymicro-wakeword`` 2.5.0 (bundled TFLite runtime and
  ``hey_jarvis``/``alexa``/``hey_mycroft``/``okay_nabu`` models); score = the
  model's sliding-window mean probability (its own cutoff is 0.97).
* ``pocketsphinx``: PyPI ``pocketsphinx`` 5.1.1 keyword spotting with its
  bundled en-us acoustic model and CMU dictionary; keyphrase from the wake
  model name ("hey_jarvis" → "hey jarvis"); binary score like porcupine.

``python -m workers.wake_engines --provision`` fetches the porcupine 1.9.5
wheel ahead of time; ``--measure`` runs every engine over synthesized wake
phrases and negatives and prints detection, CPU, RSS and delay.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SAMPLE_RATE = 16_000
RING_FRAME = 1280  # the frames the wake worker reads from the audio ring (80 ms)
ENGINES = ("openwakeword", "porcupine", "microwakeword", "pocketsphinx")


class WakeEngineUnavailable(RuntimeError):
    """A wake engine cannot start here; the message says why (and what would fix it)."""


class WakeEngine(Protocol):
    """A streaming wake-word scorer fed with consecutive frames."""

    name: str
    frame_samples: int

    def score(self, frame: np.ndarray) -> float:
        """Score one int16 frame of ``frame_samples`` samples; 0..1."""

    def reset(self) -> None:
        """Forget recent audio and scores (called after a detection)."""


def _int16(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.int16:
        raise TypeError(f"expected int16 audio, got {frame.dtype}")
    return frame


class _Rechunker:
    """Buffers int16 audio and hands out consecutive chunks of exactly ``n`` samples."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._buf = np.zeros(0, dtype=np.int16)

    def chunks(self, frame: np.ndarray) -> list[np.ndarray]:
        buf = np.concatenate([self._buf, frame]) if self._buf.size else frame
        k = buf.size // self.n
        out = [np.ascontiguousarray(buf[i * self.n:(i + 1) * self.n]) for i in range(k)]
        self._buf = buf[k * self.n:].copy()
        return out

    def clear(self) -> None:
        self._buf = np.zeros(0, dtype=np.int16)


def oww_models_dir() -> Path:
    """The folder of models bundled in the openwakeword 0.5.1 wheel."""
    import openwakeword

    return Path(openwakeword.__file__).resolve().parent / "resources" / "models"


class OpenWakeWordEngine:
    """openWakeWord with a bundled model, 1280-sample (80 ms) frames.

    ``model`` is a bundled model name ("hey_jarvis", "alexa", "hey_mycroft",
    ...) or a path to a custom ``.onnx``/``.tflite`` model.
    """

    frame_samples = 1280

    def __init__(self, model: str = "hey_jarvis", inference_framework: str = "onnx") -> None:
        ext = "onnx" if inference_framework == "onnx" else "tflite"
        path = Path(model)
        if not path.is_file():
            matches = sorted(oww_models_dir().glob(f"{model}_v*.{ext}"))
            if not matches:
                raise FileNotFoundError(f"no bundled openWakeWord model {model!r} ({ext}) in {oww_models_dir()}")
            path = matches[-1]
        from openwakeword.model import Model

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


# --------------------------------------------------------------------------- porcupine

PORCUPINE_LEGACY_VERSION = "1.9.5"
PORCUPINE_LEGACY_WHEEL = "pvporcupine-1.9.5-py3-none-any.whl"
PORCUPINE_LEGACY_SHA256 = "8f4e95c966f72258b417743e13e8c571d2fb79cdf2fe59571e6766638787481d"
_LEGACY_MEMBERS = {  # wheel member -> name in the unpacked folder
    "pvporcupine/lib/linux/x86_64/libpv_porcupine.so": "libpv_porcupine.so",
    "pvporcupine/lib/common/porcupine_params.pv": "porcupine_params.pv",
    "pvporcupine/LICENSE": "LICENSE",
}
_LEGACY_KEYWORDS = "pvporcupine/resources/keyword_files/linux/"


def _default_models_dir() -> Path:
    from pipeline.models import default_models_dir

    return default_models_dir()


def ensure_porcupine_legacy(models_dir: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The offline porcupine 1.9.5 build unpacked in ``<models>/pvporcupine-1.9.5/``; idempotent.

    The wheel is fetched once with ``pip download --no-deps`` (PyPI only) into
    ``<models>/wheels/``, checked against its pinned SHA-256, and only the
    Linux x86_64 library, the model and the Linux keyword files are unpacked.
    Raises ``WakeEngineUnavailable`` when that cannot be done here.
    """
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise WakeEngineUnavailable(
            f"the offline pvporcupine {PORCUPINE_LEGACY_VERSION} build is wired up for Linux x86_64 only "
            f"(this is {sys.platform}/{platform.machine()})")
    models = Path(models_dir).expanduser() if models_dir else _default_models_dir()
    dest = models / f"pvporcupine-{PORCUPINE_LEGACY_VERSION}"
    marker = dest / ".complete"
    if marker.is_file() and marker.read_text().strip() == PORCUPINE_LEGACY_SHA256:
        return dest
    wheels = models / "wheels"
    wheel = wheels / PORCUPINE_LEGACY_WHEEL
    if not wheel.is_file():
        if not download:
            raise WakeEngineUnavailable(f"the offline pvporcupine {PORCUPINE_LEGACY_VERSION} build is not in {dest} "
                                        "(run: python -m workers.wake_engines --provision)")
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--no-input", "--dest", str(wheels), f"pvporcupine=={PORCUPINE_LEGACY_VERSION}"]
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise WakeEngineUnavailable(f"could not download pvporcupine=={PORCUPINE_LEGACY_VERSION}: {exc}") from exc
        if proc.returncode != 0 or not wheel.is_file():
            tail = " / ".join(proc.stdout.strip().splitlines()[-3:])
            raise WakeEngineUnavailable(
                f"could not download pvporcupine=={PORCUPINE_LEGACY_VERSION} with pip (exit {proc.returncode}): {tail}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != PORCUPINE_LEGACY_SHA256:
        wheel.unlink(missing_ok=True)
        raise WakeEngineUnavailable(f"{wheel}: sha256 {digest} is not the pinned {PORCUPINE_LEGACY_SHA256}; removed it")
    models.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=models, prefix=".extract-pvporcupine-"))
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member, name in _LEGACY_MEMBERS.items():
                (tmp / name).write_bytes(zf.read(member))
            (tmp / "keywords").mkdir()
            for member in zf.namelist():
                if member.startswith(_LEGACY_KEYWORDS) and member.endswith("_linux.ppn"):
                    (tmp / "keywords" / Path(member).name).write_bytes(zf.read(member))
        (tmp / ".complete").write_text(PORCUPINE_LEGACY_SHA256 + "\n")
        if dest.exists():  # stale or partial: replace it whole
            shutil.rmtree(dest, ignore_errors=True)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process won the race: take its copy if complete
            if not (marker.is_file() and marker.read_text().strip() == PORCUPINE_LEGACY_SHA256):
                raise
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise WakeEngineUnavailable(f"could not unpack {wheel}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def porcupine_legacy_keywords(folder: Path) -> dict[str, Path]:
    """Built-in keywords of the offline build: {"jarvis": .../jarvis_linux.ppn, ...}."""
    return {p.name[: -len("_linux.ppn")]: p for p in sorted((folder / "keywords").glob("*_linux.ppn"))}


class _LegacyPorcupine:
    """pvporcupine 1.9.5's C library through ctypes (what its own 1.9.5 Python binding does)."""

    def __init__(self, folder: Path, keyword_path: Path, sensitivity: float) -> None:
        self._lib = lib = ctypes.CDLL(str(folder / "libpv_porcupine.so"))
        lib.pv_porcupine_init.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p),
                                          ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_void_p)]
        lib.pv_porcupine_init.restype = ctypes.c_int
        lib.pv_porcupine_process.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_short),
                                             ctypes.POINTER(ctypes.c_int)]
        lib.pv_porcupine_process.restype = ctypes.c_int
        lib.pv_porcupine_delete.argtypes = [ctypes.c_void_p]
        lib.pv_porcupine_delete.restype = None
        lib.pv_porcupine_version.restype = ctypes.c_char_p
        self.version = lib.pv_porcupine_version().decode()
        self.frame_length = int(lib.pv_porcupine_frame_length())
        self._args = (str(folder / "porcupine_params.pv").encode(), str(keyword_path).encode(), float(sensitivity))
        self._handle = ctypes.c_void_p()
        self._result = ctypes.c_int()
        self._open()

    def _open(self) -> None:
        model, keyword, sensitivity = self._args
        status = self._lib.pv_porcupine_init(model, 1, (ctypes.c_char_p * 1)(keyword), (ctypes.c_float * 1)(sensitivity),
                                             ctypes.byref(self._handle))
        if status != 0:
            raise WakeEngineUnavailable(f"pvporcupine {self.version} init failed (status {status}) for {keyword.decode()}")

    def process(self, pcm: np.ndarray) -> int:
        status = self._lib.pv_porcupine_process(self._handle, pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_short)),
                                                ctypes.byref(self._result))
        if status != 0:
            raise RuntimeError(f"pv_porcupine_process failed (status {status})")
        return self._result.value

    def reset(self) -> None:  # 1.9.5 has no reset: a fresh handle (~1 ms)
        self.delete()
        self._open()

    def delete(self) -> None:
        if self._handle:
            self._lib.pv_porcupine_delete(self._handle)
            self._handle = ctypes.c_void_p()


class _CurrentPorcupine:
    """The installed (current, AccessKey) pvporcupine."""

    def __init__(self, access_key: str, keyword: str, sensitivity: float) -> None:
        try:
            import pvporcupine
        except ImportError as exc:
            raise WakeEngineUnavailable(f"pvporcupine is not installed ({exc}); pip install pvporcupine") from exc
        self.version = getattr(pvporcupine, "__version__", "") or _dist_version("pvporcupine")
        kw = {"keyword_paths": [keyword]} if keyword.endswith(".ppn") else {"keywords": [keyword]}
        try:
            self._p = pvporcupine.create(access_key=access_key, sensitivities=[sensitivity], **kw)
        except (pvporcupine.PorcupineError, ValueError) as exc:
            text = " ".join(str(exc).split()).replace(access_key, "<key>")  # never log the key
            raise WakeEngineUnavailable(f"pvporcupine {self.version} refused to start: {text}") from None
        self.frame_length = int(self._p.frame_length)
        self._args = (access_key, kw, sensitivity)

    def process(self, pcm: np.ndarray) -> int:
        return int(self._p.process(pcm))

    def reset(self) -> None:
        import pvporcupine

        access_key, kw, sensitivity = self._args
        self._p.delete()
        self._p = pvporcupine.create(access_key=access_key, sensitivities=[sensitivity], **kw)

    def delete(self) -> None:
        self._p.delete()


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


class PorcupineEngine:
    """Picovoice Porcupine behind the 1280-sample ring frames; score 1.0 on a detection, else 0.0.

    ``keyword``: a built-in keyword ("jarvis", "computer", "porcupine", ...) or a
    ``.ppn`` path. With ``access_key`` the current pvporcupine runs it; without
    one (or when the key is refused) the offline 1.9.5 build does, for its
    built-in keywords or a 1.9-format ``.ppn``. ``notes`` tells which and why,
    for the worker's log. Raises ``WakeEngineUnavailable`` listing every reason
    when neither can start.
    """

    graded = False  # scores are 0 or 1: a 1.0 says nothing about how sure it is

    frame_samples = RING_FRAME

    def __init__(self, keyword: str = "jarvis", sensitivity: float = 0.7, access_key: str = "",
                 models_dir: str | os.PathLike | None = None, access_key_env: str = "PICOVOICE_ACCESS_KEY") -> None:
        if not 0.0 <= sensitivity <= 1.0:
            raise WakeEngineUnavailable(f"porcupine sensitivity must be within [0, 1], got {sensitivity}")
        self.keyword = keyword
        self.notes: list[str] = []
        reasons: list[str] = []
        self._impl: Any = None
        if access_key:
            try:
                self._impl = _CurrentPorcupine(access_key, keyword, sensitivity)
                self.build = f"pvporcupine {self._impl.version} (AccessKey)"
            except WakeEngineUnavailable as exc:
                reasons.append(str(exc))
                self.notes.append(f"{exc}; trying the offline pvporcupine {PORCUPINE_LEGACY_VERSION} build")
        else:
            reasons.append(f"${access_key_env} is not set: current pvporcupine needs a Picovoice AccessKey "
                           "(and validates it online)")
        if self._impl is None:
            try:
                folder = ensure_porcupine_legacy(models_dir)
                if keyword.endswith(".ppn"):
                    path = Path(keyword)
                    if not path.is_file():
                        raise WakeEngineUnavailable(f"keyword file {keyword} does not exist")
                else:
                    builtins = porcupine_legacy_keywords(folder)
                    if keyword not in builtins:
                        raise WakeEngineUnavailable(
                            f"the offline pvporcupine {PORCUPINE_LEGACY_VERSION} build has no keyword {keyword!r} "
                            f"(built-in: {', '.join(builtins)})")
                    path = builtins[keyword]
                self._impl = _LegacyPorcupine(folder, path, sensitivity)
                self.build = f"pvporcupine {PORCUPINE_LEGACY_VERSION} offline (library {self._impl.version})"
                if not access_key:
                    self.notes.append(f"{reasons[-1]}; using the offline pvporcupine {PORCUPINE_LEGACY_VERSION} build "
                                      "(built-in keywords, no key)")
            except WakeEngineUnavailable as exc:
                reasons.append(str(exc))
            except OSError as exc:  # the library does not load on this system
                reasons.append(f"the offline pvporcupine {PORCUPINE_LEGACY_VERSION} library does not load: {exc}")
        if self._impl is None:
            raise WakeEngineUnavailable("porcupine cannot start: " + "; ".join(reasons))
        self.native_frame = self._impl.frame_length
        self._chunks = _Rechunker(self.native_frame)
        self.name = f"porcupine:{Path(keyword).stem if keyword.endswith('.ppn') else keyword}"

    def score(self, frame: np.ndarray) -> float:
        hit = False
        for pcm in self._chunks.chunks(_int16(frame)):
            hit = self._impl.process(pcm) >= 0 or hit  # keep feeding every chunk
        return 1.0 if hit else 0.0

    def reset(self) -> None:
        self._chunks.clear()
        self._impl.reset()

    def close(self) -> None:
        if self._impl is not None:
            self._impl.delete()
            self._impl = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


# --------------------------------------------------------------------------- microWakeWord


class MicroWakeWordEngine:
    """microWakeWord (PyPI ``pymicro-wakeword``): a streaming TFLite model over 10 ms features.

    ``model``: a bundled model ("hey_jarvis", "alexa", "hey_mycroft", "okay_nabu")
    or a path to a microWakeWord ``.json`` config. A probability comes every
    30 ms (3 feature windows); the frame's score is the highest sliding-window
    mean probability (the model's own detection cutoff is ``cutoff``, 0.97 for
    hey_jarvis).
    """

    frame_samples = RING_FRAME

    def __init__(self, model: str = "hey_jarvis") -> None:
        try:
            from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model
        except ImportError as exc:
            raise WakeEngineUnavailable(f"pymicro-wakeword is not installed ({exc}); pip install pymicro-wakeword") from exc
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


# --------------------------------------------------------------------------- pocketsphinx


class PocketsphinxEngine:
    """pocketsphinx keyword spotting (PyPI ``pocketsphinx`` 5.1.1, bundled en-us model); binary score.

    ``keyphrase`` words must be in the bundled CMU dictionary ("hey", "jarvis"
    are). ``threshold`` is pocketsphinx's ``kws_threshold``: smaller fires more
    readily (1e-30 measured best for "hey jarvis" on synthetic voices).
    """

    graded = False  # scores are 0 or 1: a 1.0 says nothing about how sure it is

    frame_samples = RING_FRAME

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


# --------------------------------------------------------------------------- detector


@dataclass(frozen=True)
class Detection:
    """A wake detection, reported once its peak is over (see ``WakeDetector``).

    ``score``: the PEAK score of the detection (with ``settle_score`` reached:
    the first score at or above it). ``frame_index``: 0-based index of that
    frame. ``frames_ago``: how many frames before the frame just fed
    the peak was (0 = the frame just fed), so the worker reports the peak's
    ring seq as ``frame.seq - frames_ago``. ``crossed_index``: the frame where
    the score first crossed the threshold.
    """

    score: float
    frame_index: int
    frames_ago: int = 0
    crossed_index: int = -1


class WakeDetector:
    """Threshold + warm-up + peak + once-per-utterance policy over a ``WakeEngine``.

    Every frame goes to the engine (its features must stay continuous), but
    scores are ignored during ``warmup_s`` after construction or ``reset()``
    and for ``refractory_s`` after a detection.

    Peak: once a score crosses ``threshold`` the detector follows the scores
    for at most ``peak_frames`` more frames (6 = 480 ms; 0 = report at the
    crossing) and reports the highest one and its frame, or reports as soon as
    a score reaches ``settle_score`` (nothing above it changes a decision:
    the wake worker passes the normal threshold, so a proposal at 0.1 that
    reaches 0.5 is reported exactly when single-stage wake would have fired;
    binary engines such as porcupine give 1.0 and are reported at once).
    It neither stops at the first dip nor when the score falls back below the
    threshold: openWakeWord rises unevenly and crosses a low threshold up to
    ~5 frames before its peak (espeak en-us "hey jarvis": 0.11, 0.25, 0.07,
    0.67, 0.22, 0.98; flite slt: 0.10, 0.14, 0.13, 0.42, 0.98), and reporting
    early would lose the peak (the engine is reset after a detection).
    """

    def __init__(
        self,
        engine: WakeEngine,
        threshold: float = 0.5,
        warmup_s: float = 1.5,
        refractory_s: float = 2.0,
        peak_frames: int = 6,
        settle_score: float = 0.95,
    ) -> None:
        if peak_frames < 0:
            raise ValueError(f"peak_frames must be >= 0, got {peak_frames}")
        self.engine = engine
        self.threshold = threshold
        self.peak_frames = peak_frames
        self.settle_score = max(settle_score, threshold)
        frame_s = engine.frame_samples / SAMPLE_RATE
        self._warmup_frames = int(np.ceil(warmup_s / frame_s))
        self._refractory_frames = int(np.ceil(refractory_s / frame_s))
        self.frames_fed = 0
        self.detections = 0
        self.last_score = 0.0
        self._ignore_until = self._warmup_frames
        self._peak: tuple[float, int, int] | None = None  # (score, index, crossed index) while following a peak

    def feed(self, frame: np.ndarray) -> Detection | None:
        """Score one frame; return a Detection (with the peak score) once the peak is over."""
        index = self.frames_fed
        self.frames_fed += 1
        score = float(self.engine.score(frame))
        self.last_score = score
        if self._peak is None:
            if index < self._ignore_until or score < self.threshold:
                return None
            self._peak = (score, index, index)
        elif score > self._peak[0]:
            self._peak = (score, index, self._peak[2])
        peak, _, crossed = self._peak
        if peak >= self.settle_score or index - crossed >= self.peak_frames:
            return self._fire(index)
        return None

    def _fire(self, index: int) -> Detection:
        assert self._peak is not None
        score, peak_index, crossed = self._peak
        self._peak = None
        self.engine.reset()
        self._ignore_until = index + 1 + self._refractory_frames
        self.detections += 1
        return Detection(score=score, frame_index=peak_index, frames_ago=index - peak_index, crossed_index=crossed)

    def reset(self) -> None:
        """Restart: reset the engine and apply the warm-up again (frame count continues)."""
        self.engine.reset()
        self._peak = None
        self._ignore_until = self.frames_fed + self._warmup_frames


# --------------------------------------------------------------------------- factory


def make_wake_engine(name: str, cfg: Any = None, models_dir: str | os.PathLike | None = None) -> WakeEngine:
    """The engine called ``name``, configured from ``cfg`` (a ``WakeConfig``; defaults when None).

    Raises ``WakeEngineUnavailable`` (a RuntimeError) with the reason when the
    engine is unknown or cannot start here.
    """
    if cfg is None:
        from pipeline.config import WakeConfig

        cfg = WakeConfig()
    model = getattr(cfg, "model", "hey_jarvis")
    if name == "openwakeword":
        try:
            return OpenWakeWordEngine(model=model)
        except (FileNotFoundError, ValueError, ImportError) as exc:
            raise WakeEngineUnavailable(f"openWakeWord cannot start: {exc}") from exc
    if name == "porcupine":
        env = getattr(cfg, "porcupine_access_key_env", "PICOVOICE_ACCESS_KEY")
        return PorcupineEngine(keyword=getattr(cfg, "porcupine_keyword", "jarvis"),
                               sensitivity=getattr(cfg, "porcupine_sensitivity", 0.7),
                               access_key=os.environ.get(env, "").strip(), models_dir=models_dir,
                               access_key_env=env)
    if name == "microwakeword":
        return MicroWakeWordEngine(model=model)
    if name == "pocketsphinx":
        return PocketsphinxEngine(keyphrase=Path(model).stem.replace("_", " "))
    raise WakeEngineUnavailable(f"unknown wake engine {name!r}; choose one of {', '.join(ENGINES)}")


# --------------------------------------------------------------------------- measurement

_VOICES = ("flite:kal", "flite:slt", "flite:awb", "en-us", "en+m3")
_NEGATIVES = ("the weather is nice today in the city", "please ask mister travis about the jars of honey",
              "hey marvin, turn on the radio")


def _measure_one(name: str, threshold: float) -> dict[str, Any]:
    """Run one engine (in this process) over synthesized clips; detection, CPU, RSS, delay."""
    import resource
    import time

    from tests.speech import pad, synth

    def rss_mb() -> float:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    clips = []
    for v in _VOICES:  # synthesize first: the TTS is not the engine's cost
        # The phrase alone gives an exact phrase end for the delay; the phrase + request is what people say.
        phrase = synth("hey jarvis", v)
        clips.append((v, True, pad(phrase, 2.0, 1.5), 2.0 + phrase.size / SAMPLE_RATE))
        clips.append((v + "+request", True, pad(synth("hey jarvis, what time is it", v), 2.0, 1.5), None))
        for text in _NEGATIVES:
            clips.append((v, False, pad(synth(text, v), 2.0, 1.5), None))
    rss0 = rss_mb()
    t_load = time.perf_counter()
    engine = make_wake_engine(name)
    load_s = time.perf_counter() - t_load
    out: dict[str, Any] = {"engine": engine.name, "threshold": threshold, "load_s": round(load_s, 3), "hits": {},
                           "false": 0, "delays_ms": [], "peaks": {}}
    cpu = 0.0
    audio_s = 0.0
    for voice, wake, audio, end_s in clips:
        engine.reset()
        det = WakeDetector(engine, threshold=threshold, warmup_s=1.0, settle_score=0.5)  # as the worker does
        c0 = time.process_time()
        dets = []
        for i in range(0, audio.size - RING_FRAME + 1, RING_FRAME):
            d = det.feed(audio[i:i + RING_FRAME])
            if d is not None:
                dets.append(d)
        cpu += time.process_time() - c0
        audio_s += audio.size / SAMPLE_RATE
        if wake:
            out["hits"][voice] = len(dets)
            if dets:
                out["peaks"][voice] = round(dets[0].score, 3)
                if end_s is not None:  # phrase end -> end of the frame at which the detection is reported
                    reported_s = (dets[0].frame_index + dets[0].frames_ago + 1) * RING_FRAME / SAMPLE_RATE
                    out["delays_ms"].append(round((reported_s - end_s) * 1000))
        else:
            out["false"] += len(dets)
    out["detected"] = sum(1 for n in out["hits"].values() if n)
    out["score_ge_0.5"] = sum(1 for p in out["peaks"].values() if p >= 0.5)  # accepted with the verifier down
    out["positives"] = len(out["hits"])
    out["negatives"] = len(clips) - len(out["hits"])
    out["cpu_ms_per_audio_s"] = round(cpu * 1000 / audio_s, 1)
    out["rss_delta_mb"] = round(rss_mb() - rss0, 1)
    out["maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m workers.wake_engines", description="Wake engines: provision, measure.")
    parser.add_argument("--provision", action="store_true", help="fetch the offline pvporcupine 1.9.5 build (idempotent)")
    parser.add_argument("--dir", default=None, help="models dir (default: $VIGIL_MODELS__DIR or ~/.cache/vigil/models)")
    parser.add_argument("--measure", nargs="*", metavar="ENGINE", help=f"measure engines (default all: {' '.join(ENGINES)})")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process of --measure
    args = parser.parse_args(argv)
    if args.provision:
        try:
            print(f"porcupine {PORCUPINE_LEGACY_VERSION} offline build: {ensure_porcupine_legacy(args.dir)}")
        except WakeEngineUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.one:
        try:
            print(json.dumps(_measure_one(args.one, args.threshold)))
        except WakeEngineUnavailable as exc:
            print(json.dumps({"engine": args.one, "unavailable": str(exc)}))
        return 0
    if args.measure is not None:
        for name in args.measure or ENGINES:  # one fresh process each: a fair RSS delta
            proc = subprocess.run([sys.executable, "-m", "workers.wake_engines", "--one", name,
                                   "--threshold", str(args.threshold)], capture_output=True, text=True)
            print(proc.stdout.strip() or f'{{"engine": "{name}", "error": {json.dumps(proc.stderr[-500:])}}}', flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
