"""`python -m pipeline doctor [--apply] [--json]`: this machine, what is installed, measured here, advice.

What it does, in order (a full run stays under ~60 s):

1. The machine: cores, memory, load, CPU model, audio input devices (PyAudio, in a subprocess with
   ALSA/JACK noise silenced and a timeout, so a frozen sound server cannot hang it), PulseAudio status.
2. Engines installed (looked up without importing them) and whether Ollama answers at OLLAMA_HOST.
3. Model files in the models dir: Whisper tiny.en, base (if provisioned with `python -m pipeline models --base`),
   ggml files named in the config, every gguf; each is validated (header walk, no loading). A missing
   model is reported as missing.
4. Each valid STT / LLM model and the speaker engine is measured **in its own subprocess** (so one model's
   memory and threads do not colour the next): load time, process RSS, and
   * STT: decode time and real-time factor on a fixed 3 s synthesized clip (espeak-ng; a synthetic
     vowel-like signal when espeak-ng is missing), with ``[stt] threads``;
   * LLM: load, first-token ms with the system prompt already cached (what a kiosk request sees), cold
     first token, tokens/s with 1 thread;
   * speaker: one embedding of the 3 s clip.
5. The recommendation, by an explicit rule (see :func:`recommend`), and with ``--apply`` writes it to the
   config file (``--config`` or ./vigil.toml), keeping every other key; the file is replaced atomically.

Timings are taken on whatever else this machine is doing (the load average is printed beside them).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLIP_S = 3.0
CLIP_TEXT = "what will the weather be like tomorrow morning"
MEASURE_TIMEOUT_S = 40.0

# The latency rule: speech end -> first token <= 600 ms at p50 (the product's budget, docs/architecture.md).
BUDGET_MS = 600.0
# From `python -m bench.stt_study endpoint` (Silero, clean): 500 ms cut 1/16 requests at a 350 ms hesitation and
# 2/16 at 450 ms; 400 ms cut 9/16 at 450 ms; 700 ms (the usual default) costs 200 ms more on every request.
END_SILENCE_MS = 500
OVERHEAD_MS = 50.0  # IPC, routing and the LLM prompt for the request (measured overhead_ms p50 in bench runs)
LLM_FIRST_TOKEN_MAX_MS = 150.0
LLM_MIN_TOKENS_PER_S = 15.0  # faster than anyone reads a streamed answer
SPEAKER_EMBED_MAX_MS = 300.0  # must arrive before [speaker] deadline_ms after speech end


def endpoint_timing(current) -> dict[str, Any]:
    """The latency rule's inputs from the configured endpoint (``[stt] endpoint``): how long the endpoint waits
    after the speech end (``end_wait_ms``), the pause after which the transcription starts (``pause_ms``), and
    the time an STT decode may take from that pause (``stt_window_ms``).

    "silence": the request ends ``end_silence_ms`` after the speech end and the decode starts after
    ``speculative_silence_ms``, so a decode that finishes inside the silence costs nothing. "turn": the decode
    starts at the first audio frame of the pause (``[audio] frame_samples``, 80 ms by default) and a request that
    reads complete ends with it (after ``turn_min_pause_ms`` at the least), so nothing hides the decode: it may
    take what the budget leaves after the pause, the LLM's first token and the overhead."""
    from core.audio import SAMPLE_RATE

    stt = current.stt
    if stt.endpoint == "silence":
        return {"mode": "silence", "end_wait_ms": stt.end_silence_ms, "pause_ms": stt.speculative_silence_ms,
                "stt_window_ms": stt.end_silence_ms}
    frame_ms = current.audio.frame_samples * 1000 // SAMPLE_RATE
    return {"mode": "turn", "end_wait_ms": stt.turn_min_pause_ms, "pause_ms": frame_ms,
            "stt_window_ms": BUDGET_MS - LLM_FIRST_TOKEN_MAX_MS - OVERHEAD_MS}


# Accuracy of each STT model, measured on the same clips in one run by `python -m bench.stt_study hearing`
# (its "chosen" row is tiny.en with the default decode, "base (multilingual)" the same decode on base).
ACCURACY_FILE = ROOT / "bench" / "out" / "stt_study" / "hearing.json"
ACCURACY_ROWS = {"tiny.en": "chosen", "base": "base (multilingual)"}
MIN_WER_GAIN = 0.01  # a bigger, slower model must hear at least this much better (absolute WER) to be chosen


# --------------------------------------------------------------------------- machine


def _meminfo() -> dict[str, float]:
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                out[key] = int(rest.split()[0]) / 1024.0  # MiB
    except OSError:
        pass
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_LIST_DEVICES = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from engines.capture.mic import silence_native_audio_logs
silence_native_audio_logs()
import pyaudio
pa = pyaudio.PyAudio()
try:
    out = []
    for i in range(pa.get_device_count()):
        d = pa.get_device_info_by_index(i)
        if d.get("maxInputChannels", 0) > 0:
            out.append({"index": i, "name": d["name"], "channels": int(d["maxInputChannels"]),
                        "default_rate": int(d["defaultSampleRate"])})
    print(json.dumps(out))
finally:
    pa.terminate()
"""


def audio_devices(timeout_s: float = 8.0) -> dict[str, Any]:
    """Input devices as PyAudio lists them (in a subprocess: PortAudio can hang on a frozen server)."""
    if importlib.util.find_spec("pyaudio") is None:
        return {"error": "pyaudio not installed", "inputs": []}
    try:
        r = subprocess.run([sys.executable, "-c", _LIST_DEVICES, str(ROOT)], capture_output=True, text=True,
                           timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": f"PyAudio did not answer within {timeout_s:.0f} s (sound server frozen?)", "inputs": []}
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"PyAudio failed: {tail}", "inputs": []}
    try:
        return {"error": None, "inputs": json.loads(r.stdout.strip().splitlines()[-1])}
    except (ValueError, IndexError):
        return {"error": "PyAudio printed no device list", "inputs": []}


def pulseaudio_status(timeout_s: float = 3.0) -> dict[str, Any]:
    exe = shutil.which("pactl")
    if exe is None:
        return {"running": False, "detail": "pactl not installed (apt-get install pulseaudio-utils)"}
    try:
        r = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"running": False, "detail": f"pactl info did not answer within {timeout_s:.0f} s"}
    if r.returncode != 0:
        return {"running": False, "detail": (r.stderr.strip().splitlines() or ["no server"])[-1]}
    info = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return {"running": True, "server": f"{info.get('Server Name', '?')} {info.get('Server Version', '')}".strip(),
            "default_source": info.get("Default Source", ""), "detail": "ok"}


def machine_info() -> dict[str, Any]:
    mem = _meminfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return {
        "cpus": os.cpu_count() or 1, "cpus_usable": usable, "cpu_model": _cpu_model(),
        "mem_total_mb": round(mem.get("MemTotal", 0.0)), "mem_available_mb": round(mem.get("MemAvailable", 0.0)),
        "load_avg": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
        "audio": audio_devices(), "pulseaudio": pulseaudio_status(),
    }


# --------------------------------------------------------------------------- engines and models

ENGINES = {  # import name -> (distribution, what it is for)
    "openwakeword": ("openwakeword", "wake word (default)"),
    "pvporcupine": ("pvporcupine", "wake word (Picovoice)"),
    "pywhispercpp": ("pywhispercpp", "STT whisper.cpp (default)"),
    "ctranslate2": ("ctranslate2", "wake verifier (forced score of \"Hey Jarvis\", tiny.en)"),
    "faster_whisper": ("faster-whisper", "STT CTranslate2 (not wired)"),
    "webrtcvad": ("webrtcvad-wheels", "VAD alternative"),
    "onnxruntime": ("onnxruntime", "Silero VAD / openWakeWord runtime"),
    "xllamacpp": ("xllamacpp", "LLM llama.cpp (default)"),
    "ollama": ("ollama", "LLM Ollama client"),
    "torch": ("torch", "speechbrain backend"),
    "speechbrain": ("speechbrain", "speaker ID ECAPA"),
    "resemblyzer": ("resemblyzer", "speaker ID weights' source package"),
    "pyaudio": ("PyAudio", "microphone capture"),
}


def _version(module: str, dist: str) -> str | None:
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    for name in (dist, module):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "installed"


def ollama_status(host: str = "", timeout_s: float = 1.0) -> dict[str, Any]:
    """Does an Ollama(-compatible) server answer at ``host`` / OLLAMA_HOST, and with which models?"""
    raw = host or os.environ.get("OLLAMA_HOST", "") or "127.0.0.1:11434"
    if "://" not in raw:
        raw = "http://" + raw
    base = raw.rstrip("/")
    if base.count(":") < 2:  # no port: Ollama's default
        base += ":11434"
    try:
        with urllib.request.urlopen(urllib.request.Request(base + "/api/tags", headers={"Connection": "close"}),
                                    timeout=timeout_s) as resp:
            data = json.loads(resp.read() or b"{}")
        return {"host": base, "reachable": True, "models": [m.get("name") for m in data.get("models", [])]}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"host": base, "reachable": False, "models": [], "detail": str(reason)}


def engines_info(config) -> dict[str, Any]:
    out = {m: {"version": _version(m, dist), "role": role} for m, (dist, role) in ENGINES.items()}
    out["ollama_server"] = ollama_status(config.llm.host)
    return out


def _model_entry(kind: str, name: str, path: Path, validate) -> dict[str, Any]:
    entry: dict[str, Any] = {"kind": kind, "name": name, "path": str(path), "present": path.is_file(),
                             "size_mb": None, "valid": False, "problem": None}
    if not entry["present"]:
        entry["problem"] = "missing"
        return entry
    entry["size_mb"] = round(path.stat().st_size / 1e6, 1)
    try:
        validate(path)
        entry["valid"] = True
    except Exception as exc:  # a bad model is reported, never a crash
        entry["problem"] = str(exc)
    return entry


def models_info(config) -> list[dict[str, Any]]:
    from models.provision import LLM, WHISPER, validate_ggml, validate_gguf

    models_dir = Path(config.models.dir).expanduser()
    entries = [_model_entry("stt", "tiny.en", models_dir / WHISPER.filename, validate_ggml)]
    try:
        from models.provision import WHISPER_BASE

        base = models_dir / WHISPER_BASE.filename
        entry = _model_entry("stt", "base", base, validate_ggml)
        if not entry["present"]:
            entry["problem"] = "missing (optional: python -m pipeline models --base)"
        entries.append(entry)
    except ImportError:
        pass
    seen = {Path(e["path"]).resolve() for e in entries}
    for p in sorted(models_dir.glob("ggml-*.bin")) + ([Path(config.stt.model)] if config.stt.model else []):
        if p.resolve() not in seen:
            seen.add(p.resolve())
            entries.append(_model_entry("stt", p.stem.removeprefix("ggml-"), p, validate_ggml))
    llm_paths = [models_dir / LLM.filename] + sorted(p for p in models_dir.glob("*.gguf") if p.name != LLM.filename)
    if config.llm.engine == "embedded" and config.llm.model:
        llm_paths.append(Path(config.llm.model))
    for p in llm_paths:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            entries.append(_model_entry("llm", p.stem, p, validate_gguf))
    try:
        from models.provision import SPEAKER

        entries.append(_model_entry("speaker", "resemblyzer", models_dir / SPEAKER.filename,
                                    lambda p: None if p.stat().st_size > 1_000_000 else (_ for _ in ()).throw(
                                        ValueError("file too small for the GE2E weights"))))
    except ImportError:
        pass
    return entries


def stale_models(config) -> list[str]:
    """Older builds an earlier Vigil provisioned that nothing reads now (``models --prune`` removes them)."""
    from models.provision import configured_paths, stale_files

    return [str(p) for p in stale_files(Path(config.models.dir), configured_paths(config))
            if not p.name.endswith(".sha256")]


# --------------------------------------------------------------------------- measurements (subprocesses)


def test_clip() -> tuple[Any, str]:
    """The fixed 3 s clip: espeak-ng speech padded/trimmed to 3 s, else a synthetic voiced signal."""
    import numpy as np

    n = int(CLIP_S * 16_000)
    exe = shutil.which("espeak-ng")
    if exe:
        with tempfile.TemporaryDirectory(prefix="vigil-doctor-") as tmp:
            wav = Path(tmp) / "clip.wav"
            r = subprocess.run([exe, "-w", str(wav), "--", CLIP_TEXT], capture_output=True, timeout=20,
                               stdin=subprocess.DEVNULL)
            if r.returncode == 0 and wav.is_file():
                from core.audio import load_wav

                audio = load_wav(wav)[:n]
                return np.concatenate([audio, np.zeros(n - len(audio), np.int16)]), "espeak-ng"
    t = np.arange(n) / 16_000
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16_000
    sig = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    return (sig / np.abs(sig).max() * 8000).astype(np.int16), "synthetic"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _measure_stt(path: str, threads: int) -> dict[str, Any]:
    from engines.stt.whispercpp import WhisperEngine

    clip, source = test_clip()
    t = time.perf_counter()
    engine = WhisperEngine(Path(path), n_threads=threads)
    load_ms = (time.perf_counter() - t) * 1000
    engine.transcribe(clip)  # the first call allocates (the worker does the same before a user waits)
    times, text = [], ""
    for _ in range(2):
        t = time.perf_counter()
        text = engine.transcribe(clip)
        times.append((time.perf_counter() - t) * 1000)
    decode = sorted(times)[0]
    return {"load_ms": round(load_ms, 1), "decode_ms": round(decode, 1), "rtf": round(decode / 1000 / CLIP_S, 4),
            "rss_mb": round(_rss_mb(), 1), "threads": threads, "clip": source, "text": text}


def _measure_llm(path: str, threads: int, system_prompt: str) -> dict[str, Any]:
    from engines.llm.embedded import EmbeddedLlm

    t = time.perf_counter()
    llm = EmbeddedLlm(path, n_threads=threads, temperature=0.0, seed=0)
    load_ms = (time.perf_counter() - t) * 1000
    question = [{"role": "system", "content": system_prompt},
                {"role": "user", "content": "What is the capital of France?"}]
    cold = llm.stream(question, lambda _t: False, max_tokens=1)
    llm.warm(system_prompt)
    warm = llm.stream([question[0], {"role": "user", "content": "Name three colours of the rainbow."}],
                      lambda _t: False, max_tokens=48)
    gen_ms = (warm.total_ms or 0) - (warm.first_token_ms or 0)
    tps = (warm.n_tokens - 1) / (gen_ms / 1000) if warm.n_tokens > 1 and gen_ms > 0 else float("nan")
    return {"load_ms": round(load_ms, 1), "first_token_ms": round(warm.first_token_ms or float("nan"), 1),
            "cold_first_token_ms": round(cold.first_token_ms or float("nan"), 1), "tokens_per_s": round(tps, 1),
            "n_tokens": warm.n_tokens, "rss_mb": round(_rss_mb(), 1), "threads": threads,
            "error": warm.error or cold.error}


def _measure_speaker(config_path: str | None) -> dict[str, Any]:
    from core.config import load_config

    config = load_config(config_path)
    try:
        from engines.speaker import make_speaker_engine
        from models.provision import speaker_weights
    except ImportError as exc:
        return {"error": f"not installed (engines.speaker: {exc})"}
    clip, _ = test_clip()
    t = time.perf_counter()
    engine = make_speaker_engine(config.speaker, speaker_weights(config.speaker, config.models.dir))
    load_ms = (time.perf_counter() - t) * 1000
    engine.embed(clip)
    t = time.perf_counter()
    emb = engine.embed(clip)
    embed_ms = (time.perf_counter() - t) * 1000
    return {"engine": config.speaker.engine, "load_ms": round(load_ms, 1), "embed_ms": round(embed_ms, 1),
            "dim": int(getattr(emb, "shape", [0])[-1]), "rss_mb": round(_rss_mb(), 1)}


def _run_measure(args: list[str], env: dict | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its last stdout line is the JSON result."""
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    try:
        r = subprocess.run([sys.executable, "-m", "tools.doctor", "_measure", *args], cwd=ROOT, env=child_env,
                           capture_output=True, text=True, timeout=MEASURE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": f"measurement did not finish within {MEASURE_TIMEOUT_S:.0f} s"}
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        return {"error": f"measurement failed (exit {r.returncode}): {tail}"}
    try:
        return json.loads(lines[-1])
    except ValueError:
        return {"error": f"measurement printed no result: {lines[-1][:200]}"}


def measure_all(config, models: list[dict], config_path: str | None) -> None:
    """Measure every valid model in place (adds a ``measured`` dict to its entry)."""
    for entry in models:
        if not entry["valid"]:
            continue
        if entry["kind"] == "stt":
            entry["measured"] = _run_measure(["stt", entry["path"], str(config.stt.threads)])
        elif entry["kind"] == "llm":
            entry["measured"] = _run_measure(["llm", entry["path"], "1", config.llm.system_prompt])
        elif entry["kind"] == "speaker" and config.speaker.engine == "resemblyzer":
            entry["measured"] = _run_measure(["speaker", config_path or ""])
    if config.speaker.engine == "speechbrain" and config.speaker.model_dir:
        models.append({"kind": "speaker", "name": "speechbrain", "path": config.speaker.model_dir,
                       "present": Path(config.speaker.model_dir).is_dir(), "valid": True, "problem": None,
                       "size_mb": None, "measured": _run_measure(["speaker", config_path or ""])})


# --------------------------------------------------------------------------- recommendation


def stt_accuracy(path: Path = ACCURACY_FILE) -> dict[str, dict[str, Any]]:
    """WER per STT model from the last hearing study (``python -m bench.stt_study hearing``: every model on
    the same clips in one run); {} when there is none."""
    try:
        summary = json.loads(Path(path).read_text()).get("summary") or {}
    except (OSError, ValueError):
        return {}
    out = {}
    for model, row in ACCURACY_ROWS.items():
        s = summary.get(row)
        if isinstance(s, dict) and isinstance(s.get("wer"), (int, float)) and not math.isnan(s["wer"]):
            out[model] = {"wer": round(float(s["wer"]), 4), "files": s.get("files"),
                          "decode_ms_p50": s.get("decode_ms_p50"), "source": str(path)}
    return out


def recommend(models: list[dict], engines: dict, current, accuracy: dict[str, dict] | None = None) -> dict[str, Any]:
    """The set that fits the latency budget, by a simple explicit rule.

    speech end -> first token ~= max(endpoint wait, pause + STT decode) + LLM first token + overhead, the endpoint's
    figures from ``endpoint_timing`` ("silence": 500 ms end silence, decode after a 150 ms pause; "turn": the
    decode from the pause's first 80 ms frame, the request ending with it).

    * STT: among the measured models whose decode of the 3 s clip (a ~2 s command gets the same 512-frame
      encoder context, so this is its decode time too) fits the endpoint's window after its pause
      (``pause_ms + decode_ms <= stt_window_ms``), the one that hears
      best by the numbers (``accuracy``: WER per model from the hearing study) — a bigger model only when
      its WER is at least ``MIN_WER_GAIN`` lower, else the faster one. Without accuracy figures for every
      candidate, the bigger model (base > tiny.en), as the usual expectation, and the report says so.
    * LLM: the largest measured gguf with a cached-prompt first token <= 150 ms and >= 15 tokens/s at 1 thread.
    * Then the sum above must be <= 600 ms; if it is not, say so (and pick the fastest of each).
    * Speaker: the configured engine if its embedding of 3 s takes <= 300 ms, else speaker ID off.
    """
    timing = endpoint_timing(current)
    end_silence, spec, window = timing["end_wait_ms"], timing["pause_ms"], timing["stt_window_ms"]
    reasons: list[str] = []
    order = {"base": 2, "tiny.en": 1}
    stt = [m for m in models if m["kind"] == "stt" and "decode_ms" in m.get("measured", {})]
    fits = [m for m in stt if spec + m["measured"]["decode_ms"] <= window]
    accuracy = stt_accuracy() if accuracy is None else accuracy
    wer = {m["name"]: accuracy[m["name"]]["wer"] for m in fits if m["name"] in accuracy}
    # by the numbers: the best WER, unless a faster model is about as good (two files of one model, e.g. its f16
    # and q8_0 conversions, share its figures: quantization left the WER as it was, docs/models.md)
    if fits and all(m["name"] in wer for m in fits):
        best = min(wer.values())
        good = [m for m in fits if wer[m["name"]] <= best + MIN_WER_GAIN]
        stt_pick = min(good, key=lambda m: (m["measured"]["decode_ms"], m["size_mb"] or 0))
    elif fits:
        stt_pick = max(fits, key=lambda m: (order.get(m["name"], 0), m["size_mb"] or 0))
        if len(fits) > 1:
            reasons.append("STT accuracy: no hearing-study figures for every candidate (python -m bench.stt_study "
                           "hearing); the bigger model is assumed to hear better")
    else:  # nothing fits: the smallest (decode time grows with size; a noisy timing must not pick a bigger one)
        stt_pick = min(stt, key=lambda m: (m["size_mb"] or 0, m["measured"]["decode_ms"])) if stt else None
    for m in stt:
        verdict = "fits" if m in fits else "too slow"
        heard = (f"; WER {accuracy[m['name']]['wer']:.3f} on {accuracy[m['name']]['files']} utterances"
                 if m["name"] in accuracy else "")
        reasons.append(f"STT {m['name']}: {spec} ms pause + {m['measured']['decode_ms']:.0f} ms decode "
                       f"{'<=' if m in fits else '>'} {window:.0f} ms ({timing['mode']} endpoint): {verdict}{heard}")
    llm = [m for m in models if m["kind"] == "llm" and isinstance(m.get("measured", {}).get("first_token_ms"), float)
           and not math.isnan(m["measured"]["first_token_ms"])]
    good = [m for m in llm if m["measured"]["first_token_ms"] <= LLM_FIRST_TOKEN_MAX_MS
            and m["measured"]["tokens_per_s"] >= LLM_MIN_TOKENS_PER_S]
    llm_pick = (max(good, key=lambda m: m["size_mb"] or 0) if good
                else min(llm, key=lambda m: (m["size_mb"] or 0, m["measured"]["first_token_ms"])) if llm else None)
    for m in llm:
        ms = m["measured"]
        reasons.append(f"LLM {m['name']}: first token {ms['first_token_ms']:.0f} ms "
                       f"(<= {LLM_FIRST_TOKEN_MAX_MS:.0f}?), "
                       f"{ms['tokens_per_s']:.0f} tok/s (>= {LLM_MIN_TOKENS_PER_S:.0f}?): "
                       f"{'fits' if m in good else 'too slow'}")
    estimate = None
    if stt_pick and llm_pick:
        estimate = (max(end_silence, spec + stt_pick["measured"]["decode_ms"]) + llm_pick["measured"]["first_token_ms"]
                    + OVERHEAD_MS)
    settings: dict[str, dict[str, Any]] = {"stt": {"end_silence_ms": END_SILENCE_MS}}
    if stt_pick:
        settings["stt"]["model"] = "" if stt_pick["name"] == "tiny.en" else stt_pick["path"]
    if llm_pick:
        from models.provision import LLM

        default = Path(llm_pick["path"]).name == LLM.filename
        settings["llm"] = {"engine": "embedded", "model": "" if default else llm_pick["path"], "threads": 1}
    ollama = engines.get("ollama_server", {})
    if ollama.get("reachable") and ollama.get("models"):
        reasons.append(f"Ollama at {ollama['host']} has {', '.join(ollama['models'][:5])}: not measured here; a bigger "
                       "model there answers better if its first token stays <= 150 ms ([llm] engine = \"ollama\")")
    speaker = [m for m in models if m["kind"] == "speaker" and m.get("measured")]
    if speaker:
        sm = speaker[0]["measured"]
        if "embed_ms" in sm:
            ok = sm["embed_ms"] <= SPEAKER_EMBED_MAX_MS
            settings["speaker"] = {"enabled": ok}
            reasons.append(f"speaker {sm.get('engine')}: {sm['embed_ms']:.0f} ms per 3 s embedding "
                           f"({'<=' if ok else '>'} {SPEAKER_EMBED_MAX_MS:.0f} ms): {'on' if ok else 'off'}")
    return {
        "rule": f"speech_end->first_token ~= max({end_silence} ms endpoint wait, {spec} ms pause + stt_decode) "
                f"+ llm_first_token + {OVERHEAD_MS:.0f} ms overhead <= {BUDGET_MS:.0f} ms (p50; {timing['mode']} "
                f"endpoint; STT decode fits when {spec} ms + decode <= {window:.0f} ms)",
        "stt": stt_pick["name"] if stt_pick else None, "llm": llm_pick["name"] if llm_pick else None,
        "stt_accuracy": accuracy,
        "estimate_ms": None if estimate is None else round(estimate, 1),
        "fits_budget": estimate is not None and estimate <= BUDGET_MS,
        "settings": settings, "reasons": reasons,
    }


# --------------------------------------------------------------------------- --apply: a minimal TOML writer


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value!r} to TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write a {type(value).__name__} to our flat TOML")


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) else json.dumps(key)


def dumps_toml(data: dict[str, Any]) -> str:
    """Flat TOML: top-level scalars, then one ``[section]`` of scalars per table (what vigil.toml uses)."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if not isinstance(table, dict):
            continue
        if lines:
            lines.append("")
        lines.append(f"[{_toml_key(section)}]")
        for key, value in table.items():
            if isinstance(value, dict):
                raise ValueError(f"[{section}] {key}: nested tables are not supported")
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def apply_settings(path: Path, settings: dict[str, dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    """Merge ``settings`` into the TOML file at ``path`` (created if absent), atomically; return the changes.

    Other keys and sections are kept (comments are not: the file is rewritten). The result is checked with
    ``load_config`` before it replaces the old file, so a bad merge never lands.
    """
    from core.config import load_config

    data: dict[str, Any] = {}
    if path.exists():
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    changes = []
    for section, values in settings.items():
        table = data.setdefault(section, {})
        for key, value in values.items():
            if table.get(key, _MISSING) != value:
                changes.append((f"{section}.{key}", table.get(key, _MISSING), value))
                table[key] = value
    text = dumps_toml(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        load_config(tmp, environ={})  # raises ConfigError: the old file stays as it was
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return changes


class _Missing:
    def __repr__(self) -> str:
        return "(unset)"


_MISSING = _Missing()


# --------------------------------------------------------------------------- report


def run_doctor(config, config_path: str | None, *, measure: bool = True) -> dict[str, Any]:
    started = time.monotonic()
    report: dict[str, Any] = {"machine": machine_info(), "engines": engines_info(config), "models": models_info(config),
                              "stale_models": stale_models(config)}
    report["models_dir"] = str(Path(config.models.dir).expanduser())
    if measure:
        measure_all(config, report["models"], config_path)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    report["recommendation"] = recommend(report["models"], report["engines"], config)
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def format_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    out = ["== machine",
           f"cpus {m['cpus']} ({m['cpus_usable']} usable), {m['cpu_model']}",
           f"memory {m['mem_total_mb']} MB total, {m['mem_available_mb']} MB available; load {m['load_avg']} "
           "(timings below are taken under this load)",
           f"python {m['python']}"]
    pa = m["pulseaudio"]
    if pa["running"]:
        out.append(f"pulseaudio: running, {pa['server']}, default source {pa['default_source']}")
    else:
        out.append(f"pulseaudio: not running ({pa['detail']})")
    audio = m["audio"]
    if audio["error"]:
        out.append(f"audio inputs: {audio['error']}")
    else:
        out.append(f"audio inputs: {len(audio['inputs'])}" + ("" if audio["inputs"] else " (none)"))
        out += [f"  [{d['index']}] {d['name']} ({d['channels']} ch, {d['default_rate']} Hz)" for d in audio["inputs"]]
    out.append("== engines")
    for name, info in report["engines"].items():
        if name == "ollama_server":
            continue
        out.append(f"  {name:16s} {info['version'] or 'not installed':14s} {info['role']}")
    o = report["engines"]["ollama_server"]
    if o["reachable"]:
        ollama = f"reachable at {o['host']}" + (f" models: {', '.join(o['models'])}" if o["models"] else " (no models)")
    else:
        ollama = f"not reachable at {o['host']}"
    out.append(f"  ollama server    {ollama}")
    out.append(f"== models ({report['models_dir']})")
    for e in report["models"]:
        state = "ok" if e["valid"] else e["problem"]
        size = f"{e['size_mb']:.0f} MB" if e["size_mb"] else ""
        out.append(f"  {e['kind']:7s} {e['name']:28s} {size:>7s}  {state}")
        ms = e.get("measured")
        if not ms:
            continue
        if "error" in ms and ms["error"] and len(ms) == 1:
            out.append(f"          measured: {ms['error']}")
        elif e["kind"] == "stt":
            out.append(f"          load {ms['load_ms']:.0f} ms, decode 3 s clip {ms['decode_ms']:.0f} ms "
                       f"(RTF {ms['rtf']:.3f}, {ms['threads']} threads), RSS {ms['rss_mb']:.0f} MB")
        elif e["kind"] == "llm":
            out.append(f"          load {ms['load_ms']:.0f} ms, first token {ms['first_token_ms']:.0f} ms cached "
                       f"({ms['cold_first_token_ms']:.0f} ms cold), {ms['tokens_per_s']:.0f} tok/s (1 thread), "
                       f"RSS {ms['rss_mb']:.0f} MB")
        elif e["kind"] == "speaker":
            if "embed_ms" in ms:
                out.append(f"          load {ms['load_ms']:.0f} ms, embedding of 3 s {ms['embed_ms']:.0f} ms, "
                           f"RSS {ms['rss_mb']:.0f} MB")
            else:
                out.append(f"          {ms.get('error')}")
    if report.get("stale_models"):
        out.append(f"  {len(report['stale_models'])} older build(s) nothing reads: "
                   "python -m pipeline models --prune removes them")
    r = report["recommendation"]
    out.append("== recommendation")
    load = report.get("load_after", m["load_avg"])[0]
    if load > m["cpus_usable"]:
        out.append(f"WARNING: load {load:.1f} > {m['cpus_usable']} cores while measuring: the timings are inflated; "
                   "re-run doctor on an idle machine before trusting them")
    out.append(f"rule: {r['rule']}")
    out += [f"  {line}" for line in r["reasons"]]
    if r["estimate_ms"] is not None:
        out.append(f"STT {r['stt']} + LLM {r['llm']}: estimated speech end -> first token {r['estimate_ms']:.0f} ms "
                   f"({'fits' if r['fits_budget'] else 'OVER'} the {BUDGET_MS:.0f} ms budget)")
    else:
        out.append("no recommendation: a measured STT and LLM model are both needed (python -m pipeline models)")
    for section, values in r["settings"].items():
        out.append(f"  [{section}] " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in values.items()))
    out.append(f"(doctor took {report['seconds']:.0f} s)")
    return "\n".join(out)


def main_measure(argv: list[str]) -> int:
    """Internal: ``python -m tools.doctor _measure stt|llm|speaker ...`` prints one JSON line."""
    kind, rest = argv[0], argv[1:]
    import contextlib
    import io

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        if kind == "stt":
            result = _measure_stt(rest[0], int(rest[1]))
        elif kind == "llm":
            result = _measure_llm(rest[0], int(rest[1]), rest[2])
        elif kind == "speaker":
            result = _measure_speaker(rest[0] or None)
        else:
            raise SystemExit(f"unknown measurement {kind!r}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        sys.exit(main_measure(sys.argv[2:]))
    from pipeline.cli import main

    sys.exit(main(["doctor", *sys.argv[1:]]))
