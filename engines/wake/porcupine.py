"""Picovoice Porcupine: the current pvporcupine with an AccessKey, else the offline 1.9.5 build.

The offline build is unpacked by :mod:`models.porcupine`; the worker hands this engine a
function that returns its folder, so the engine itself never provisions anything."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.audio import FRAME_SAMPLES
from engines.wake import WakeEngineUnavailable, _int16, _Rechunker

PORCUPINE_LEGACY_VERSION = "1.9.5"


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
        status = self._lib.pv_porcupine_init(model, 1, (ctypes.c_char_p * 1)(keyword),
                                             (ctypes.c_float * 1)(sensitivity), ctypes.byref(self._handle))
        if status != 0:
            raise WakeEngineUnavailable(
                f"pvporcupine {self.version} init failed (status {status}) for {keyword.decode()}")

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

    frame_samples = FRAME_SAMPLES

    def __init__(self, keyword: str = "jarvis", sensitivity: float = 0.7, access_key: str = "",
                 legacy: Callable[[], Path] | None = None, access_key_env: str = "PICOVOICE_ACCESS_KEY") -> None:
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
                if legacy is None:
                    raise WakeEngineUnavailable(f"no offline pvporcupine {PORCUPINE_LEGACY_VERSION} build was provided")
                try:
                    folder = legacy()
                except Exception as exc:  # provisioning failed (no wheel, wrong platform, a bad download)
                    raise WakeEngineUnavailable(str(exc)) from exc
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
