"""One frozen configuration for the whole pipeline.

Read from `vigil.toml` (every key optional), then overridden by environment variables
`VIGIL_<SECTION>__<KEY>` (e.g. `VIGIL_LLM__ENGINE=ollama`). Each key states what it accepts beside
its default -- `threads: int = key(2, gt=0, le=256)` -- and every value is checked here, once, so a
typo or a number its engine cannot take fails at start with the key's name instead of deep inside a
worker. An unknown section, key or `VIGIL_` variable is an error that suggests the nearest valid
name. What needs more than the values (files, ports, the skills package) is checked before start by
`pipeline/preflight.py`.

Plain frozen dataclasses rather than pydantic(-settings): workers receive the Config through
multiprocessing spawn and every one of them imports this module (pydantic adds ~0.1 s per process),
bench and tests use `dataclasses.replace`/`asdict` on it, and pydantic-settings ignores unknown
environment variables, the one thing this loader must not do.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or environment variable is invalid; the message names the key."""


def suggest(word: str, valid: Iterable[str]) -> str:
    """The hint ` (did you mean 'time'?)` for the nearest valid name (difflib), or "" when none is near."""
    close = difflib.get_close_matches(str(word), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


@dataclass(frozen=True)
class Rule:
    """What one key accepts, written beside the key with `key(...)`; `check` names the key when it refuses."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    off: float | None = None  # a value outside the bounds that means "off" (0 = never)
    choices: tuple[str, ...] = ()
    pattern: str = ""  # a string must match it in full (re.fullmatch)
    names: bool = False  # a comma-separated list of lower-case names (a TOML array of strings is joined)
    path: bool = False  # may be a path: a leading ~ is expanded here, once, for every process
    why: str = ""  # the engine's reason, added to the message

    def check(self, where: str, value: Any) -> None:
        why = f" ({self.why})" if self.why else ""
        if self.choices and value not in self.choices:
            raise ConfigError(f"{where} = {value!r}; choose one of {sorted(self.choices)}"
                              f"{suggest(value, self.choices)}")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise ConfigError(f"{where} = {value!r} is not valid{why}")
        if self.names:
            for name in (part.strip() for part in value.split(",")):
                if name and not re.fullmatch(r"[a-z0-9_.-]+", name.lower()):
                    raise ConfigError(f"{where}: {name!r} is not a name (comma-separated letters, digits, _ . -)")
        if isinstance(value, (str, bool)) or (self.off is not None and value == self.off):
            return
        too_low = (self.gt is not None and not value > self.gt) or (self.ge is not None and not value >= self.ge)
        too_high = (self.lt is not None and not value < self.lt) or (self.le is not None and not value <= self.le)
        if self.gt is not None and self.lt is not None and (too_low or too_high):
            raise ConfigError(f"{where} must be between {_number(self.gt)} and {_number(self.lt)}, got {value!r}{why}")
        if too_low:
            bound = f"> {_number(self.gt)}" if self.gt is not None and not value > self.gt else f">= {_number(self.ge)}"
            if self.off is not None:
                bound = f"{_number(self.off)} (off) or {bound}"
            raise ConfigError(f"{where} must be {bound}, got {value!r}{why}")
        if too_high:
            if self.le is not None and not value <= self.le:
                raise ConfigError(f"{where} = {value!r} is too large; at most {_number(self.le)}{why}")
            raise ConfigError(f"{where} must be < {_number(self.lt)}, got {value!r}{why}")


def key(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **rule: Any) -> Any:
    """A config field with its rule: `key(0.2, ge=0, le=10, why="...")`."""
    return field(default=default, default_factory=factory, metadata={"rule": Rule(**rule)})


def rule_of(cls: type, name: str) -> Rule:
    """The rule of one key (an empty rule: any value of the key's type)."""
    return next(f for f in fields(cls) if f.name == name).metadata.get("rule", Rule())


def _default_state_dir() -> str:
    return str(Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "vigil")


def _default_models_dir() -> str:
    return str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vigil" / "models")


# Every number has an upper bound: absurd but finite values (ring_seconds = 1e300, max_tokens = 10**9)
# would allocate, overflow or wait forever deep inside a worker; they are refused at start instead.
_DAY = 86_400.0
WAKE_ENGINES = ("openwakeword", "porcupine", "microwakeword", "pocketsphinx")


@dataclass(frozen=True)
class AudioConfig:
    input: str = key("mic", path=True)  # "mic" or a WAV path (pipeline/preflight.py reads it)
    device: str = ""  # substring of a PyAudio device name; "" = default ("pulse" if present)
    # 80 ms: openWakeWord's native frame. Measured (a spoken request replayed): 320-1920 samples (20-120 ms)
    # wake and answer; 160 made the wake verifier late, 2560 and 16000 never woke.
    frame_samples: int = key(1280, ge=320, le=1920, why="20-120 ms frames; wake detection fails outside")
    ring_seconds: float = key(30.0, gt=0, le=600.0)  # audio the shared ring keeps for late readers / pre-roll
    loop: bool = False
    fast: bool = False
    # Reopen the audio engine this often (seconds; 0 = never): a long-lived PortAudio/PulseAudio stream
    # drifts in memory over days. Each reopen loses ~0.1 s of audio (measured: 125 ms), so more often
    # than once a minute the kiosk would be half deaf.
    engine_restart_s: float = key(6 * 3600.0, ge=60.0, le=30 * _DAY, off=0,
                                  why="each reopen loses ~0.1 s of audio")


@dataclass(frozen=True)
class WakeConfig:
    engine: str = key("openwakeword", choices=WAKE_ENGINES)
    model: str = key("hey_jarvis", path=True)  # a bundled openWakeWord model or a .onnx/.tflite path
    threshold: float = key(0.5, gt=0, lt=1)
    warmup_s: float = key(1.5, ge=0, le=60.0)  # openWakeWord gives a spurious score ~1 s after start
    refractory_s: float = key(2.0, ge=0, le=60.0)  # one utterance wakes once
    # Two-stage wake: the engine proposes at `proposal_threshold` (and, with `onset`, every utterance start
    # is proposed too); STT checks each proposal's window and accepts or rejects it. "forced": whisper's
    # probability of "Hey Jarvis" against its rivals ("Hey Travis", ...; engines/wake/forced.py); "whisper":
    # whisper writes what it hears and the text must read "hey jarvis" (engines/wake/text_verify.py); "off" =
    # single stage at `threshold`. While the verifier is down or late, `threshold` decides alone.
    verify: str = key("forced", choices=("forced", "whisper", "off"))
    # "forced": log10 p(wake) - log10 p(best rival) needed to accept ...
    verify_margin: float = key(0.5, ge=0, le=10.0)
    verify_floor: float = key(-7.0, le=0.0, why="a log10 probability")  # ... and log10 p("Hey Jarvis") itself
    onset: bool = True  # also propose each utterance start (catches voices the engine scores low)
    gate: bool = True  # run the engine only while the room is not silent / steady noise (engines/wake/gate.py)
    proposal_threshold: float = key(0.005, gt=0, lt=1)  # measured with the forced verifier (bench.wake_eval)
    verify_deadline_s: float = key(1.5, gt=0, le=60.0)  # proposal → verdict; past it the proposer's own score decides
    # A proposal whose peak reaches this is accepted at once, unverified: on the wake corpus the forced
    # verifier turns down more real wakes than near misses above it. 0.97 let a "hey, jars of honey" (0.992)
    # through unchecked; 0.995 lets none, for one real wake in babble. 1.0 = verify every proposal.
    sure_threshold: float = key(0.995, ge=0, le=1)
    # engine = "porcupine": a built-in keyword or a .ppn path; its detection knob; where the AccessKey is.
    # Without a key the offline pvporcupine 1.9.5 build runs (built-in keywords); if neither can start,
    # the worker warns and falls back to openwakeword.
    porcupine_keyword: str = key("jarvis", path=True)
    porcupine_sensitivity: float = key(0.7, ge=0, le=1)
    porcupine_access_key_env: str = "PICOVOICE_ACCESS_KEY"


@dataclass(frozen=True)
class SttConfig:
    engine: str = key("whispercpp", choices=("whispercpp",))
    model: str = key("", path=True)  # path to a ggml .bin; "" = tiny.en provisioned from PyPI into models.dir
    threads: int = key(2, gt=0, le=256)
    # audio before the wake frame handed to STT (the request may start at once)
    preroll_s: float = key(0.3, ge=0, le=10.0)
    # How a request ends. "turn": at every pause the partial transcript and the turn model (Smart Turn)
    # judge whether the person is done (engines/stt/turn.py); "silence": end_silence_ms of silence.
    endpoint: str = key("turn", choices=("turn", "silence"))
    turn_threshold: float = key(0.5, ge=0, le=1)  # evidence a pause needs at its start; falls to 0 at turn_max_pause_ms
    turn_max_pause_ms: int = key(1300, gt=0, le=10_000)  # "turn": the longest a pause holds a request open
    # "turn": how sure whisper must be of the sentence end it wrote for a transcript that reads complete to end the
    # request at once; a less sure end waits turn_max_pause_ms x (1 - p / turn_sure_ending) (0 = never wait for it)
    turn_sure_ending: float = key(0.5, ge=0, le=1)
    # "turn": the shortest pause that may end a request. Every pause is transcribed from the moment the voice drops
    # (beside the frame loop, abandoned when the voice comes back); this only holds the decision back.
    turn_min_pause_ms: int = key(100, ge=0, le=2000)
    end_silence_ms: int = key(500, gt=0, le=10_000)  # "silence": end-of-speech silence that closes the request
    # Transcribe as soon as a pause this long begins, while the endpoint silence is still running;
    # if the pause turns out to be the end, the transcript is already there (0 = off).
    speculative_silence_ms: int = key(150, ge=0, le=10_000)
    no_speech_timeout_s: float = key(4.0, gt=0, le=600.0)
    max_utterance_s: float = key(12.0, gt=0, le=120.0)
    vad_threshold: float = key(0.5, gt=0, lt=1)


@dataclass(frozen=True)
class SpeakerConfig:
    enabled: bool = True
    # "resemblyzer" (numpy port, weights from PyPI) or "speechbrain" (ECAPA)
    engine: str = key("resemblyzer", choices=("resemblyzer", "speechbrain"))
    # speechbrain: a local folder with hyperparams.yaml and checkpoints; resemblyzer: a pretrained.pt file
    model_dir: str = key("", path=True)
    threads: int = key(1, gt=0, le=256)  # one thread: it runs beside STT and must not slow it
    # The voice is judged on this much audio starting `lead_s` before the wake frame: the wake phrase
    # is the speaker's voice too, and a window ending ~1 s after the wake is ready before speech ends.
    window_s: float = key(2.5, gt=0, le=60.0)
    lead_s: float = key(1.5, ge=0, le=60.0)
    # Cosine similarity an enrolled voiceprint must reach, else "unknown" (the EER threshold measured
    # on 9 synthetic voices by `python -m bench.speaker_eval`; re-check on real enrollments).
    threshold: float = key(0.81, ge=-1, le=1, why="a cosine similarity is within [-1, 1]")
    deadline_ms: int = key(300, ge=0, le=60_000)  # after speech end, the answer goes on without the speaker ("unknown")
    fault_delay_ms: int = key(0, ge=0, le=600_000)  # fault injection (tests, bench): sleep this long before each result


@dataclass(frozen=True)
class LlmConfig:
    engine: str = key("embedded", choices=("embedded", "ollama"))  # "embedded" (xllamacpp in process) or "ollama"
    model: str = key("", path=True)  # embedded: gguf path ("" = SmolLM2-135M from PyPI); ollama: model name
    threads: int = key(1, gt=0, le=256)  # 1 thread beside the other workers: 2 collapse when a core is busy
    # embedded: threads that evaluate the prompt. When the request is final STT is done and both cores are free:
    # 2 threads halve the first token (bench: ~75 -> ~38 ms); 0 = `threads`.
    prompt_threads: int = key(2, ge=0, le=256)
    max_tokens: int = key(64, gt=0, le=8192)
    temperature: float = key(0.2, ge=0, le=10.0, why="0 = greedy; llama.cpp and Ollama take no negative")
    # 1.0 = no penalty; llama.cpp divides the logits by it, and aborts the worker on a negative one.
    repeat_penalty: float = key(1.2, gt=0, le=10.0, why="1.0 = off; llama.cpp aborts on <= 0")
    system_prompt: str = (
        "You are Vigil, a helpful voice assistant in a public kiosk. "
        "Always answer in English, in one or two short, factual sentences."
    )
    # request → first token; the worker answers friendly past it
    first_token_timeout_s: float = key(1.5, gt=0, le=600.0)
    total_timeout_s: float = key(15.0, gt=0, le=3600.0)
    host: str = ""  # ollama: "" = OLLAMA_HOST or http://127.0.0.1:11434
    # ollama: keep the model loaded between kiosk requests ("" = the server's default).
    keep_alive: str = key("30m", pattern=r"|0|-?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+",
                          why='an Ollama duration such as "30m", "1h30m" or "90s"; negative = forever')
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
    # Comma-separated skill names (a TOML array works too); pipeline/preflight.py checks they exist.
    allowed: str = key("time,date,timer,status,capabilities", names=True)
    enrolled_only: str = key("", names=True)  # skills only an enrolled (identified) speaker may use
    timeout_s: float = key(1.0, gt=0, le=600.0)  # per skill call; past it the person gets a friendly answer
    pool_size: int = key(4, gt=0, le=256)


@dataclass(frozen=True)
class SupervisorConfig:
    # A running worker silent this long is "hung" and restarted. A worker's loop beats every 0.1 s
    # (0.43 s at worst, measured); below 1 s healthy workers are killed over and over. STT's whisper
    # call holds its loop for the whole transcription (2.4 s for an 11 s request, tiny.en, 2 cores).
    heartbeat_timeout_s: float = key(10.0, ge=1.0, le=3600.0,
                                     why="workers beat every ~0.1-0.4 s and STT not while it transcribes")
    # Time allowed to load models before the first heartbeat (the slowest, STT, needs ~6 s here);
    # shorter kills every worker while it loads, again and again.
    start_timeout_s: float = key(90.0, ge=20.0, le=3600.0, why="workers take ~6 s to load their models")
    backoff_initial_s: float = key(0.5, gt=0, le=3600.0)
    backoff_max_s: float = key(30.0, gt=0, le=_DAY)
    restart_budget: int = key(5, gt=0, le=1_000_000)  # restarts within restart_window_s before "failed"
    restart_window_s: float = key(60.0, gt=0, le=30 * _DAY)
    stop_timeout_s: float = key(3.0, gt=0, le=600.0)  # join this long after SIGTERM, then terminate, then kill
    watchdog_grace_s: float = key(30.0, gt=0, le=_DAY)  # systemd: a worker down this long withholds WATCHDOG=1
    done_grace_s: float = key(2.0, ge=0, le=3600.0)  # --exit-when-done: wait this long after the input ends
    # A worker whose RSS exceeds this is recycled (SIGTERM, join, restart; not counted as a crash).
    # 0 = off. Measured: STT peaks at ~500 MB with the default models (the others under 220 MB); a limit
    # under a worker's working set recycles it again and again.
    rss_limit_mb: int = key(1024, ge=768, le=1 << 20, off=0, why="STT alone peaks at ~500 MB")
    rss_check_interval_s: float = key(5.0, ge=0, le=3600.0)


@dataclass(frozen=True)
class MetricsConfig:
    # a directory (created if missing): metrics.db, voiceprints/
    state_dir: str = key(factory=_default_state_dir, path=True)
    retention_sessions: int = key(10_000, gt=0, le=100_000_000)


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = False
    host: str = "127.0.0.1"  # loopback only unless configured otherwise
    port: int = key(8765, ge=0, le=65535, why="a TCP port; 0 = any free port")
    token: str = ""  # required (Authorization: Bearer) when host is not loopback


@dataclass(frozen=True)
class BenchConfig:
    # p95 of wake → first token minus the request's own speech must stay under it
    budget_ms: float = key(1500.0, gt=0, le=600_000.0)
    passes: int = key(2, gt=0, le=1000)
    gap_s: float = key(1.5, ge=0, le=600.0)  # silence between replayed utterances (each file already ends in silence)
    idle_s: float = key(60.0, ge=0, le=30 * _DAY)
    # what a typical assistant waits (Home Assistant's default)
    baseline_end_silence_ms: int = key(700, gt=0, le=10_000)


@dataclass(frozen=True)
class ModelsConfig:
    dir: str = key(factory=_default_models_dir, path=True)


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

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some keys of one section changed (used for CLI flags), checked like the file."""
        updated = dataclasses.replace(getattr(self, section), **changes)
        checked = _section_from_mapping(section, type(updated), dataclasses.asdict(updated), "override")
        return dataclasses.replace(self, **{section: checked})


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in fields(Config)}  # type: ignore[misc]


def _coerce(section: str, name: str, want: type, value: Any, origin: str, rule: Rule) -> Any:
    where = f"{origin}: [{section}] {name}"
    if rule.names and isinstance(value, list) and all(isinstance(item, str) for item in value):
        value = ",".join(value)  # allowed = ["time", "date"] as well as "time,date"
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
    if want is str and "\x00" in value:  # a NUL cannot be a path, a host or a prompt
        raise ConfigError(f"{where} contains a NUL character")
    if rule.path and value.startswith("~"):
        value = os.path.expanduser(value)
    rule.check(where, value)
    return value


def _section_from_mapping(section: str, cls: type, values: Mapping[str, Any], origin: str,
                          origins: Mapping[str, str] | None = None) -> Any:
    """The checked section; `origins` names where single keys came from (an environment variable)."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        listed = ", ".join(f"{name}{suggest(name, known)}" for name in unknown)
        raise ConfigError(f"{origin}: unknown key(s) in [{section}]: {listed}")
    defaults = cls()
    checked = {}
    for name, f in known.items():
        raw = values.get(name, getattr(defaults, name))
        checked[name] = _coerce(section, name, type(getattr(defaults, name)), raw,
                                (origins or {}).get(name, origin), f.metadata.get("rule", Rule()))
    return cls(**checked)


def environment_name(section: str, name: str) -> str:
    return f"VIGIL_{section.upper()}__{name.upper()}"


def _from_environment(environ: Mapping[str, str]) -> dict[tuple[str, str], tuple[str, str]]:
    """(section, key) → (variable, value) of every `VIGIL_<SECTION>__<KEY>` variable.

    A `VIGIL_` variable with `__`, or one a typo away from a setting's name (`VIGIL_STT_THREADS`),
    must name a setting; others (`VIGIL_LOG_LEVEL`, a test's own variable) are not the config's.
    """
    settings = {environment_name(s, f.name): (s, f.name) for s, cls in SECTIONS.items() for f in fields(cls)}
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for var, value in environ.items():
        upper = var.upper()
        if not upper.startswith("VIGIL_"):
            continue
        if upper in settings:
            found[settings[upper]] = (var, value)
            continue
        if "__" in upper:
            section, _, name = upper[len("VIGIL_"):].partition("__")
            if section.lower() not in SECTIONS:
                raise ConfigError(f"environment {var}: unknown section {section.lower()!r}"
                                  f"{suggest(section.lower(), SECTIONS)}")
            valid = [f.name for f in fields(SECTIONS[section.lower()])]
            raise ConfigError(f"environment {var}: unknown key {name.lower()!r} in [{section.lower()}]"
                              f"{suggest(name.lower(), valid)}")
        near = difflib.get_close_matches(upper, list(settings), n=1, cutoff=0.85)
        if near:
            raise ConfigError(f"environment {var}: not a setting (did you mean {near[0]}? "
                              "VIGIL_<SECTION>__<KEY>, two underscores)")
    return found


def load_config(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults ← vigil.toml (if given or present in the working directory) ← VIGIL_* environment."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
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
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        listed = ", ".join(f"{name}{suggest(name, SECTIONS)}" for name in unknown)
        raise ConfigError(f"{origin}: unknown section(s): {listed}")
    for name, section in data.items():  # before dict() below, which would raise on `audio = 5`
        if not isinstance(section, dict):
            raise ConfigError(f"{origin}: [{name}] must be a table")
    merged: dict[str, dict[str, Any]] = {name: dict(data.get(name, {})) for name in SECTIONS}
    origins: dict[str, dict[str, str]] = {name: {} for name in SECTIONS}
    for (section, name), (var, value) in _from_environment(environ).items():  # the environment wins
        merged[section][name] = value
        origins[section][name] = f"environment {var}"
    return Config(**{name: _section_from_mapping(name, cls, merged[name], origin, origins[name])
                     for name, cls in SECTIONS.items()})
