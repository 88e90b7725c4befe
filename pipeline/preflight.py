"""Everything about a run that can be checked before any process or shared memory exists.

`python -m pipeline run` calls `check()` after the config loaded (values and ranges are the
loader's job, core/config.py) and before it provisions models or starts anything: the input
WAV reads, the model files named in the config exist and load as far as a header check goes,
the events file and the state dir can be written, the HTTP port is free, every skill named
exists. Each problem is one line naming the key or flag; any problem stops the start (exit 2),
so a typo never becomes a worker that crashes, restarts and crashes again. `warnings()` lists
what does not stop a start but would surprise an operator (a damaged voiceprint file).
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path

from core.config import Config, suggest

Check = Callable[[Config, "str | None"], "str | None"]


def _nearest_existing(path: Path) -> Path:
    """`path`, or the nearest of its parents that exists (what a mkdir -p would start from)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _input(config: Config, events_path: str | None) -> str | None:
    """`[audio] input` (--input): "mic" or a WAV file the capture worker can replay."""
    from core.audio import AudioFormatError, load_wav

    if config.audio.input == "mic":
        return None
    path = Path(config.audio.input)
    try:
        load_wav(path)
    except (AudioFormatError, OSError) as exc:
        return f"--input {path}: {exc}"
    return None


def _events(config: Config, events_path: str | None) -> str | None:
    """--events FILE: the responder appends every event to it, so its folder must take a new file."""
    if events_path is None:
        return None
    path = Path(events_path)
    if path.is_dir():
        return f"--events {path}: is a directory"
    if path.exists():
        return None if os.access(path, os.W_OK) else f"--events {path}: not writable"
    if not path.parent.is_dir():
        return f"--events {path}: no such directory {path.parent}"
    return None if os.access(path.parent, os.W_OK | os.X_OK) else f"--events {path}: {path.parent} is not writable"


def _state_dir(config: Config, events_path: str | None) -> str | None:
    """`[metrics] state_dir`: metrics.db and the voiceprints live there; a file in its place is a typo.

    A folder that exists but is read-only is allowed (metrics are then dropped and counted)."""
    path = Path(config.metrics.state_dir)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        return f"[metrics] state_dir {path}: {existing} is not a directory"
    return None


def _stt_model(config: Config, events_path: str | None) -> str | None:
    """`[stt] model`: a ggml file whisper.cpp can load ("" = provisioned, checked by its checksum)."""
    from engines.model_files import ModelError, validate_ggml

    if not config.stt.model:
        return None
    try:
        validate_ggml(Path(config.stt.model))
    except ModelError as exc:
        return f"[stt] model: {exc}"
    return None


def _llm_model(config: Config, events_path: str | None) -> str | None:
    """`[llm] model` for the embedded engine: a gguf llama.cpp can load (Ollama's is a model name)."""
    from engines.model_files import ModelError, validate_gguf

    if config.llm.engine != "embedded" or not config.llm.model:
        return None
    try:
        validate_gguf(Path(config.llm.model))
    except ModelError as exc:
        return f"[llm] model: {exc}"
    return None


def _speaker_model(config: Config, events_path: str | None) -> str | None:
    """`[speaker] model_dir`: resemblyzer's pretrained.pt (loaded: it is numpy, ~0.1 s) or SpeechBrain's folder."""
    cfg = config.speaker
    if not cfg.enabled or not cfg.model_dir:
        return None
    path = Path(cfg.model_dir)
    if cfg.engine == "speechbrain":
        from engines.speaker.speechbrain import ECAPA_FILES

        if not path.is_dir():
            return f"[speaker] model_dir {path}: not a folder (speechbrain needs {', '.join(ECAPA_FILES)})"
        missing = [name for name in ECAPA_FILES if not (path / name).is_file()]
        return f"[speaker] model_dir {path}: missing {', '.join(missing)}" if missing else None
    from engines.speaker import SpeakerError
    from engines.speaker.resemblyzer import ResemblyzerNumpy

    if not path.is_file():
        return (f"[speaker] model_dir {path}: no such file "
                "(resemblyzer: a pretrained.pt, or \"\" for the provisioned one)")
    try:
        ResemblyzerNumpy(path)
    except SpeakerError as exc:
        return f"[speaker] model_dir: {exc}"
    return None


def _wake_model(config: Config, events_path: str | None) -> str | None:
    """`[wake] model` for openWakeWord: a model bundled in its wheel, or a .onnx/.tflite file."""
    model = config.wake.model
    if config.wake.engine != "openwakeword":
        return None  # the other engines fall back to openwakeword with a warning
    path = Path(model)
    if path.suffix in (".onnx", ".tflite") or os.sep in model:
        return None if path.is_file() else f"[wake] model {model}: no such file"
    from engines.model_files import openwakeword_models_dir

    bundled = openwakeword_models_dir()
    if bundled is None:
        return None  # not installed: the wake worker says so
    if any(bundled.glob(f"{model}_v*.onnx")):  # how the engine finds it (engines/wake/oww.py)
        return None
    names = sorted(m.group(1) for p in bundled.glob("*.onnx") if (m := re.fullmatch(r"(.+)_v\d[\d.]*\.onnx", p.name)))
    return f"[wake] model {model!r}: not an openWakeWord model{suggest(model, names)}; bundled: {', '.join(names)}"


def _skills(config: Config, events_path: str | None) -> str | None:
    """`[skills] allowed` / `enrolled_only`: every name a registered skill (a typo would refuse it in silence)."""
    from skills import skill_names

    known = skill_names()
    for key in ("allowed", "enrolled_only"):
        for name in (part.strip().lower() for part in getattr(config.skills, key).split(",")):
            if name and name not in known:
                return f"[skills] {key}: no skill named {name!r}{suggest(name, known)}; skills: {', '.join(known)}"
    return None


def _http(config: Config, events_path: str | None) -> str | None:
    """[http]: a non-loopback address needs a token; the port must be free (not a 26-line traceback later)."""
    from pipeline.http_server import is_loopback

    cfg = config.http
    if not cfg.enabled:
        return None
    if not is_loopback(cfg.host) and not cfg.token:
        return (f"[http] host {cfg.host!r} is not loopback: set [http] token (VIGIL_HTTP__TOKEN) or bind 127.0.0.1")
    host = cfg.host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server binds
            probe.bind((host, cfg.port))
    except socket.gaierror as exc:
        return f"[http] host {cfg.host!r}: cannot resolve ({exc.strerror})"
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"[http] port {cfg.port} on {cfg.host} is already in use (another Vigil?)"
        return f"[http] {cfg.host}:{cfg.port}: cannot listen ({exc.strerror or exc})"
    return None


CHECKS: tuple[Check, ...] = (_input, _events, _state_dir, _http, _skills, _wake_model, _stt_model, _llm_model,
                             _speaker_model)


def check(config: Config, events_path: str | None = None) -> list[str]:
    """Every problem that would stop or loop a worker, one line each; [] = fit to start."""
    return [problem for run in CHECKS if (problem := run(config, events_path)) is not None]


def warnings(config: Config) -> list[str]:
    """What does not stop a start but will not work as expected: one line each."""
    out = []
    state = Path(config.metrics.state_dir)
    existing = _nearest_existing(state)  # the folder that would hold it
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        out.append(f"[metrics] state_dir {state}: {existing} is not writable: "
                   "metrics are dropped (counted) until it is")
    if config.speaker.enabled and config.speaker.engine == "resemblyzer":  # speechbrain's size needs its model
        from engines.speaker.resemblyzer import ResemblyzerNumpy
        from engines.speaker.voiceprints import VoiceprintError, VoiceprintStore

        try:
            VoiceprintStore(state, ResemblyzerNumpy.name, ResemblyzerNumpy.dim)
        except VoiceprintError as exc:
            out.append(f"voiceprints: {exc}; every speaker is 'unknown' until it is fixed")
    return out
