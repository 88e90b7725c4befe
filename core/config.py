"""One frozen configuration for the whole pipeline.

Read from `vigil.toml` (every key optional), then overridden by environment variables
`VIGIL_<SECTION>__<KEY>` (e.g. `VIGIL_LLM__ENGINE=ollama`). Every value is checked here,
once, so a typo fails at start with the key's name instead of deep inside a worker.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping


class ConfigError(ValueError):
    """A config file or environment variable is invalid; the message names the key."""


def _default_state_dir() -> str:
    return str(Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "vigil")


def _default_models_dir() -> str:
    return str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vigil" / "models")


@dataclass(frozen=True)
class AudioConfig:
    input: str = "mic"  # "mic" or a WAV path
    device: str = ""  # substring of a PyAudio device name; "" = default ("pulse" if present)
    frame_samples: int = 1280  # 80 ms: openWakeWord's native frame
    ring_seconds: float = 30.0  # how much audio the shared ring keeps for late readers / pre-roll
    loop: bool = False
    fast: bool = False
    # Reopen the audio engine this often (seconds; 0 = never): a long-lived PortAudio/PulseAudio stream
    # drifts in memory over days. Each reopen loses ~0.1 s of audio (measured: 125 ms).
    engine_restart_s: float = 6 * 3600.0


@dataclass(frozen=True)
class WakeConfig:
    engine: str = "openwakeword"
    model: str = "hey_jarvis"
    threshold: float = 0.5
    warmup_s: float = 1.5  # openWakeWord gives a spurious score ~1 s after start
    refractory_s: float = 2.0  # one utterance wakes once
    # Two-stage wake: the engine proposes at `proposal_threshold` (and, with `onset`, every utterance start
    # is proposed too); STT checks each proposal's window and accepts or rejects it. "forced": whisper's
    # probability of "Hey Jarvis" against its rivals ("Hey Travis", ...; workers/wake_forced.py); "whisper":
    # whisper writes what it hears and the text must read "hey jarvis" (workers/wake_verify.py); "off" =
    # single stage at `threshold`. While the verifier is down or late, `threshold` decides alone.
    verify: str = "forced"
    verify_margin: float = 0.5  # "forced": log10 p(wake) - log10 p(best rival) needed to accept ...
    verify_floor: float = -7.0  # ... and log10 p("Hey Jarvis") itself (bench.wake_eval's sweep)
    onset: bool = True  # also propose each utterance start (catches voices the engine scores low)
    gate: bool = True  # run the engine only while the room is not silent / steady noise (workers/wake_gate.py)
    proposal_threshold: float = 0.005  # measured with the forced verifier (bench.wake_eval)
    verify_deadline_s: float = 1.5  # proposal → verdict; past it the proposer's own score decides
    # A proposal whose peak reaches this is accepted at once, unverified: on the wake corpus the forced
    # verifier turns down more real wakes than near misses above it. 0.97 let a "hey, jars of honey" (0.992)
    # through unchecked; 0.995 lets none, for one real wake in babble.
    sure_threshold: float = 0.995
    # engine = "porcupine": a built-in keyword or a .ppn path; its detection knob; where the AccessKey is.
    # Without a key the offline pvporcupine 1.9.5 build runs (built-in keywords); if neither can start,
    # the worker warns and falls back to openwakeword.
    porcupine_keyword: str = "jarvis"
    porcupine_sensitivity: float = 0.7
    porcupine_access_key_env: str = "PICOVOICE_ACCESS_KEY"


@dataclass(frozen=True)
class SttConfig:
    engine: str = "whispercpp"
    model: str = ""  # path to a ggml .bin; "" = tiny.en provisioned from PyPI into models.dir
    threads: int = 2
    preroll_s: float = 0.3  # audio before the wake frame handed to STT (the request may start at once)
    # How a request ends. "turn": at every pause the partial transcript and the turn model (Smart Turn)
    # judge whether the person is done (engines/stt/turn.py); "silence": end_silence_ms of silence.
    endpoint: str = "turn"
    turn_threshold: float = 0.5  # evidence a pause needs at its start; falls to 0 at turn_max_pause_ms
    turn_max_pause_ms: int = 1300  # "turn": the longest a pause holds a request open
    end_silence_ms: int = 500  # "silence": end-of-speech silence that closes the request
    # Transcribe as soon as a pause this long begins, while the endpoint silence is still running;
    # if the pause turns out to be the end, the transcript is already there (0 = off).
    speculative_silence_ms: int = 150
    no_speech_timeout_s: float = 4.0
    max_utterance_s: float = 12.0
    vad_threshold: float = 0.5


@dataclass(frozen=True)
class SpeakerConfig:
    enabled: bool = True
    engine: str = "resemblyzer"  # "resemblyzer" (numpy port, weights from PyPI) or "speechbrain" (ECAPA)
    model_dir: str = ""  # speechbrain: a local folder with hyperparams.yaml and checkpoints
    threads: int = 1  # one thread: it runs beside STT and must not slow it
    # The voice is judged on this much audio starting `lead_s` before the wake frame: the wake phrase
    # is the speaker's voice too, and a window ending ~1 s after the wake is ready before speech ends.
    window_s: float = 2.5
    lead_s: float = 1.5
    # Cosine similarity an enrolled voiceprint must reach, else "unknown" (the EER threshold measured
    # on 9 synthetic voices by `python -m bench.speaker_eval`; re-check on real enrollments).
    threshold: float = 0.81
    deadline_ms: int = 300  # after speech end, the answer goes on without the speaker ("unknown")
    fault_delay_ms: int = 0  # fault injection (tests, bench): sleep this long before each result


@dataclass(frozen=True)
class LlmConfig:
    engine: str = "embedded"  # "embedded" (xllamacpp in process) or "ollama"
    model: str = ""  # embedded: gguf path ("" = SmolLM2-135M from PyPI); ollama: model name
    threads: int = 1  # 1 thread beside the other workers: 2 collapse when a core is busy
    max_tokens: int = 64
    temperature: float = 0.2
    repeat_penalty: float = 1.2
    system_prompt: str = (
        "You are Vigil, a helpful voice assistant in a public kiosk. "
        "Always answer in English, in one or two short, factual sentences."
    )
    first_token_timeout_s: float = 1.5  # request → first token; the worker answers friendly past it
    total_timeout_s: float = 15.0
    host: str = ""  # ollama: "" = OLLAMA_HOST or http://127.0.0.1:11434
    keep_alive: str = "30m"  # ollama: keep the model loaded between kiosk requests
    retry_connect: bool = True  # one retry on a connection failure when the deadline still allows
    # Start answering the partial transcript (taken in a pause) before the endpoint confirms it;
    # its tokens are held and released only if the final transcript is the same text.
    speculate: bool = True
    # Offer the allowed skills to the LLM as tools (both engines; with "ollama" the server must
    # support tool calling -- serve-llm does, for any model). Off by default: a tool round costs a
    # second request, and SmolLM2-135M calls tools but cannot phrase their results.
    tools: bool = False


@dataclass(frozen=True)
class SkillsConfig:
    allowed: str = "time,date,timer,status,capabilities"  # comma-separated allow-list
    enrolled_only: str = ""  # skills only an enrolled (identified) speaker may use
    timeout_s: float = 1.0  # per skill call; past it the person gets a friendly answer
    pool_size: int = 4


@dataclass(frozen=True)
class SupervisorConfig:
    heartbeat_timeout_s: float = 10.0  # a running worker silent this long is "hung" and restarted
    start_timeout_s: float = 90.0  # time allowed to load models before the first heartbeat
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    restart_budget: int = 5  # restarts within restart_window_s before the worker counts as failed
    restart_window_s: float = 60.0
    stop_timeout_s: float = 3.0  # join this long after SIGTERM, then terminate, then kill
    watchdog_grace_s: float = 30.0  # systemd: a worker down this long withholds WATCHDOG=1 (a restart)
    done_grace_s: float = 2.0  # --exit-when-done: wait this long after the input ends for a late wake
    # A worker whose RSS exceeds this is recycled (SIGTERM, join, restart; not counted as a crash).
    # 0 = off. Measured: every worker stays under ~400 MB with the default models.
    rss_limit_mb: int = 1024
    rss_check_interval_s: float = 5.0


@dataclass(frozen=True)
class MetricsConfig:
    state_dir: str = field(default_factory=_default_state_dir)
    retention_sessions: int = 10_000


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = False
    host: str = "127.0.0.1"  # loopback only unless configured otherwise
    port: int = 8765
    token: str = ""  # required (Authorization: Bearer) when host is not loopback


@dataclass(frozen=True)
class BenchConfig:
    budget_ms: float = 1500.0  # p95 of wake → first token minus the request's own speech must stay under it
    passes: int = 2
    gap_s: float = 1.5  # silence between replayed utterances (each file already ends in silence)
    idle_s: float = 60.0
    baseline_end_silence_ms: int = 700  # what a typical assistant waits (Home Assistant's default)


@dataclass(frozen=True)
class ModelsConfig:
    dir: str = field(default_factory=_default_models_dir)


@dataclass(frozen=True)
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    wake: WakeConfig = field(default_factory=WakeConfig)
    stt: SttConfig = field(default_factory=SttConfig)
    speaker: SpeakerConfig = field(default_factory=SpeakerConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    skills: SkillsConfig = field(default_factory=SkillsConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)

    def replace(self, section: str, **changes: Any) -> "Config":
        """A copy with some keys of one section changed (used for CLI flags)."""
        updated = dataclasses.replace(getattr(self, section), **changes)
        checked = _section_from_mapping(section, type(updated), dataclasses.asdict(updated), "override")
        return dataclasses.replace(self, **{section: checked})


_CHOICES = {
    ("wake", "engine"): {"openwakeword", "porcupine", "microwakeword", "pocketsphinx"},
    ("wake", "verify"): {"forced", "whisper", "off"},
    ("speaker", "engine"): {"resemblyzer", "speechbrain"},
    ("stt", "engine"): {"whispercpp"},
    ("stt", "endpoint"): {"turn", "silence"},
    ("llm", "engine"): {"embedded", "ollama"},
}
_POSITIVE = {
    ("audio", "frame_samples"), ("audio", "ring_seconds"), ("stt", "threads"), ("stt", "end_silence_ms"), ("stt", "turn_max_pause_ms"),
    ("stt", "no_speech_timeout_s"), ("stt", "max_utterance_s"), ("llm", "threads"), ("llm", "max_tokens"),
    ("llm", "first_token_timeout_s"), ("llm", "total_timeout_s"), ("supervisor", "heartbeat_timeout_s"),
    ("supervisor", "start_timeout_s"), ("supervisor", "backoff_initial_s"), ("supervisor", "backoff_max_s"),
    ("supervisor", "restart_budget"), ("supervisor", "restart_window_s"), ("supervisor", "stop_timeout_s"),
    ("supervisor", "watchdog_grace_s"), ("speaker", "threads"), ("speaker", "window_s"),
    ("wake", "verify_deadline_s"),
    ("metrics", "retention_sessions"), ("bench", "budget_ms"), ("bench", "passes"),
    ("bench", "baseline_end_silence_ms"), ("skills", "timeout_s"), ("skills", "pool_size"),
}
_NON_NEGATIVE = {
    ("audio", "engine_restart_s"), ("wake", "warmup_s"), ("wake", "refractory_s"), ("wake", "verify_margin"),
    ("stt", "preroll_s"),
    ("stt", "speculative_silence_ms"),
    ("speaker", "deadline_ms"), ("speaker", "fault_delay_ms"), ("speaker", "lead_s"), ("supervisor", "done_grace_s"), ("bench", "gap_s"), ("bench", "idle_s"),
    ("supervisor", "rss_limit_mb"), ("supervisor", "rss_check_interval_s"),
}
_UNIT_INTERVAL = {("wake", "threshold"), ("wake", "proposal_threshold"), ("stt", "vad_threshold")}
_CLOSED_UNIT_INTERVAL = {("wake", "porcupine_sensitivity"), ("wake", "sure_threshold"), ("stt", "turn_threshold")}  # sure 1.0: verify all
# Upper bounds: absurd but finite values (ring_seconds = 1e300, max_tokens = 10**9) would allocate,
# overflow or wait forever deep inside a worker; refused at start instead. Keys not listed are unbounded
# here (strings, booleans, bounded elsewhere).
_DAY = 86_400.0
_MAXIMUM = {
    ("audio", "frame_samples"): 16_000, ("audio", "ring_seconds"): 600.0, ("audio", "engine_restart_s"): 30 * _DAY,
    ("wake", "warmup_s"): 60.0, ("wake", "refractory_s"): 60.0, ("wake", "verify_deadline_s"): 60.0,
    ("wake", "verify_margin"): 10.0, ("wake", "verify_floor"): 0.0,
    ("stt", "threads"): 256, ("stt", "preroll_s"): 10.0, ("stt", "end_silence_ms"): 10_000,
    ("stt", "speculative_silence_ms"): 10_000, ("stt", "turn_max_pause_ms"): 10_000, ("stt", "no_speech_timeout_s"): 600.0, ("stt", "max_utterance_s"): 120.0,
    ("speaker", "threads"): 256, ("speaker", "window_s"): 60.0, ("speaker", "lead_s"): 60.0,
    ("speaker", "deadline_ms"): 60_000, ("speaker", "fault_delay_ms"): 600_000,
    ("llm", "threads"): 256, ("llm", "max_tokens"): 8192, ("llm", "first_token_timeout_s"): 600.0,
    ("llm", "total_timeout_s"): 3600.0, ("llm", "repeat_penalty"): 10.0, ("llm", "temperature"): 10.0,
    ("skills", "timeout_s"): 600.0, ("skills", "pool_size"): 256,
    ("supervisor", "heartbeat_timeout_s"): 3600.0, ("supervisor", "start_timeout_s"): 3600.0,
    ("supervisor", "backoff_initial_s"): 3600.0, ("supervisor", "backoff_max_s"): _DAY,
    ("supervisor", "restart_budget"): 1_000_000, ("supervisor", "restart_window_s"): 30 * _DAY,
    ("supervisor", "stop_timeout_s"): 600.0, ("supervisor", "watchdog_grace_s"): _DAY,
    ("supervisor", "done_grace_s"): 3600.0, ("supervisor", "rss_limit_mb"): 1 << 20,
    ("supervisor", "rss_check_interval_s"): 3600.0,
    ("metrics", "retention_sessions"): 100_000_000,
    ("bench", "budget_ms"): 600_000.0, ("bench", "passes"): 1000, ("bench", "gap_s"): 600.0,
    ("bench", "idle_s"): 30 * _DAY, ("bench", "baseline_end_silence_ms"): 10_000,
}


def _coerce(section: str, key: str, want: type, value: Any, origin: str) -> Any:
    where = f"{origin}: [{section}] {key}"
    if isinstance(value, str) and want is not str:
        text = value.strip()
        try:
            if want is bool:
                if text.lower() in {"1", "true", "yes", "on"}:
                    return True
                if text.lower() in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(text)
            value = want(text)
        except ValueError:
            raise ConfigError(f"{where} = {value!r} is not a valid {want.__name__}") from None
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {want.__name__}, got {type(value).__name__} {value!r}")
    if want is float and not math.isfinite(value):  # "inf" / "nan" / "1e400" parse, then break arithmetic
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    if (section, key) in _CHOICES and value not in _CHOICES[(section, key)]:
        raise ConfigError(f"{where} = {value!r}; choose one of {sorted(_CHOICES[(section, key)])}")
    if (section, key) in _NON_NEGATIVE and not value >= 0:
        raise ConfigError(f"{where} must be >= 0, got {value!r}")
    if (section, key) in _POSITIVE and not value > 0:
        raise ConfigError(f"{where} must be > 0, got {value!r}")
    if (section, key) == ("http", "port") and not 0 <= value <= 65535:
        raise ConfigError(f"{where} must be a TCP port (0-65535; 0 = any free port), got {value!r}")
    if (section, key) in _UNIT_INTERVAL and not 0.0 < value < 1.0:
        raise ConfigError(f"{where} must be between 0 and 1, got {value!r}")
    if (section, key) in _CLOSED_UNIT_INTERVAL and not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where} must be within [0, 1], got {value!r}")
    if (section, key) in _MAXIMUM and value > _MAXIMUM[(section, key)]:
        raise ConfigError(f"{where} = {value!r} is too large; at most {_MAXIMUM[(section, key)]!r}")
    return value


def _section_from_mapping(section: str, cls: type, values: Mapping[str, Any], origin: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"{origin}: unknown key(s) in [{section}]: {', '.join(sorted(unknown))}")
    defaults = cls()
    checked = {}
    for name, f in known.items():
        raw = values.get(name, getattr(defaults, name))
        checked[name] = _coerce(section, name, type(getattr(defaults, name)), raw, origin)
    return cls(**checked)


def load_config(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults ← vigil.toml (if given or present in the working directory) ← VIGIL_* environment."""
    environ = os.environ if environ is None else environ
    data: dict[str, dict[str, Any]] = {}
    origin = "defaults"
    if path is None and Path("vigil.toml").is_file():
        path = "vigil.toml"
    if path is not None:
        origin = str(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except OSError as exc:  # a directory, no permission, an I/O error
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
    sections = {f.name: type(getattr(Config(), f.name)) for f in fields(Config)}
    unknown = set(data) - set(sections)
    if unknown:
        raise ConfigError(f"{origin}: unknown section(s): {', '.join(sorted(unknown))}")
    for name, section in data.items():  # before dict() below, which would raise on `audio = 5`
        if not isinstance(section, dict):
            raise ConfigError(f"{origin}: [{name}] must be a table")
    merged: dict[str, dict[str, Any]] = {name: dict(data.get(name, {})) for name in sections}
    env_keys: set[str] = set()
    for var, value in environ.items():
        if not var.startswith("VIGIL_") or "__" not in var:
            continue
        section, _, key = var[len("VIGIL_"):].partition("__")
        section, key = section.lower(), key.lower()
        if section not in sections:
            raise ConfigError(f"environment {var}: unknown section {section!r}")
        merged[section][key] = value
        env_keys.add(var)
    origin_all = origin + (" + environment" if env_keys else "")
    built = {
        name: _section_from_mapping(name, cls, merged[name], origin_all) for name, cls in sections.items()
    }
    return Config(**built)
