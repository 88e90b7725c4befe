"""Every message that crosses a ring, one frozen dataclass each.

Encoded as one small JSON object with a "type" tag, so a slot can be read by a person
debugging a ring dump and an unknown or malformed payload is a clean decode error that
the ring counts as corrupt. Times ending in `_ns` are CLOCK_MONOTONIC nanoseconds, which
are comparable across processes on Linux.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args


# What the person hears when no real answer can come in time (any LLM failure or deadline).
FRIENDLY_FAILURE = "Sorry, I can't answer that right now."


class DecodeError(ValueError):
    """A payload that is not one of our messages."""


# Fields with a closed set of values (decode() refuses any other value).
TranscriptReason = Literal["speech_end", "max_length", "no_speech", "partial"]  # partial: not final, a guess
FinishReason = Literal["stop", "length", "cancelled", "error", "timeout"]
DeviceState = Literal["running", "opening", "closed", "no_device", "lost", "error"]  # error: e.g. no wake verifier


# ---- from workers to the parent -------------------------------------------------------


@dataclass(frozen=True)
class WakeDetected:
    """The wake word fired on audio frame `seq` (its capture time is `audio_ns`)."""

    seq: int
    score: float
    engine: str
    audio_ns: int
    detected_ns: int
    sure: bool = False  # two-stage: the peak reached `sure_threshold` (graded engines only): no check needed
    start_seq: int | None = None  # "onset" proposals: the frame the utterance started on (wake phrase inside)


@dataclass(frozen=True)
class Transcript:
    session: int
    text: str
    final: bool
    speech_end_ns: int  # capture time of the end of speech (0 when no speech was heard)
    done_ns: int  # when the transcript was ready
    compute_ms: float  # time whisper spent on it
    reason: TranscriptReason = "speech_end"
    endpoint_ns: int = 0  # when the endpoint was decided (0: not a final transcript)
    turn_score: float = -1.0  # the turn model's P(complete) at that pause (-1: not asked)


@dataclass(frozen=True)
class WakeVerdict:
    """STT's first pass over the wake phrase of a proposed wake: accept it or turn it down."""

    session: int
    accepted: bool
    score: float  # the verifier's confidence that the wake phrase was said (0..1)
    heard: str  # what the verifier heard, for the wake_rejected event and debugging
    compute_ms: float
    done_ns: int


@dataclass(frozen=True)
class SpeakerResult:
    """Who spoke the request: an enrolled name or "unknown", judged from the audio after the wake."""

    session: int
    name: str
    score: float  # cosine similarity to the best voiceprint (0 when none is enrolled)
    engine: str
    started_ns: int  # when the speaker worker began on this session
    done_ns: int
    compute_ms: float


@dataclass(frozen=True)
class Token:
    session: int
    text: str
    index: int
    t_ns: int
    request: int = 0  # which LlmRequest of the session (a session may start one speculatively)


@dataclass(frozen=True)
class LlmDone:
    session: int
    text: str
    finish_reason: FinishReason
    route: str  # "llm" or "skill:NAME"
    degraded: bool
    first_token_ns: int  # 0 when no token came
    compute_ms: float  # engine time from request to last token
    first_token_ms: float  # engine time from request to first token
    request: int = 0


@dataclass(frozen=True)
class Announce:
    """Something to say that no one just asked for, e.g. "Your 5 minute timer is done."."""

    text: str
    route: str  # e.g. "skill:timer"
    t_ns: int


@dataclass(frozen=True)
class InputStarted:
    """The capture worker began a source; `seq` is the first frame it will write."""

    source: str
    seq: int
    t0_ns: int  # capture time of the source's sample 0 (ground truth for WAV replays)


@dataclass(frozen=True)
class InputEnded:
    source: str
    last_seq: int
    t_ns: int


@dataclass(frozen=True)
class WorkerState:
    """A worker reports a condition the supervisor cannot see, e.g. a missing microphone."""

    worker: str
    state: DeviceState
    detail: str
    t_ns: int


# ---- from the parent to workers -------------------------------------------------------


@dataclass(frozen=True)
class StartListening:
    """STT: transcribe the request that follows the wake frame."""

    session: int
    wake_seq: int
    wake_ns: int
    verify: bool = False  # STT: first check the wake phrase, answer with a WakeVerdict
    start_seq: int | None = None  # the utterance began here, before the wake frame (an "onset" proposal)


@dataclass(frozen=True)
class LlmRequest:
    session: int
    text: str
    speaker: str
    t_ns: int
    request: int = 0  # numbered per session, so a Cancel can stop one request and not the next


@dataclass(frozen=True)
class Cancel:
    """Stop work on a session (barge-in, shutdown, or a deadline)."""

    session: int
    request: int = 0  # 0: every request of the session


@dataclass(frozen=True)
class Emit:
    """Responder: write this event (a contract event dict) to stdout/JSONL."""

    event: dict[str, Any]


MESSAGE_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        WakeDetected, WakeVerdict, SpeakerResult, Transcript, Token, LlmDone, Announce, InputStarted, InputEnded,
        WorkerState, StartListening, LlmRequest, Cancel, Emit,
    )
}


def encode(message: Any) -> bytes:
    body = asdict(message)
    body["type"] = type(message).__name__
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# Field annotations as written above (``from __future__ import annotations`` keeps them strings).
_TYPE_CHECKS: dict[str, Any] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int | None": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "dict[str, Any]": lambda v: isinstance(v, dict),
}
_CLOSED: dict[str, Any] = {"TranscriptReason": TranscriptReason, "FinishReason": FinishReason,
                           "DeviceState": DeviceState}


def _one_of(alias: Any) -> Callable[[Any], bool]:
    allowed = frozenset(get_args(alias))
    return lambda v: isinstance(v, str) and v in allowed


_TYPE_CHECKS.update({name: _one_of(alias) for name, alias in _CLOSED.items()})
_unchecked = {f"{cls.__name__}.{f.name}: {f.type}" for cls in MESSAGE_TYPES.values() for f in fields(cls)
              if f.type not in _TYPE_CHECKS}
if _unchecked:  # a new field type needs a check here, or decode() would let anything through
    raise TypeError(f"no decode type check for {sorted(_unchecked)}")


def decode(payload: bytes) -> Any:
    """Bytes → message; anything else raises DecodeError (the ring counts it as corrupt).

    Field types are checked as well: a `seq` that is a string must fail here, not later
    inside the parent's coordinator.
    """
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # not UTF-8/JSON, an int of > 4300 digits, nesting too deep
        raise DecodeError(f"not JSON: {type(exc).__name__}: {str(exc)[:120]}") from None
    if not isinstance(body, dict):
        raise DecodeError("not a JSON object")
    kind = body.pop("type", None)
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None  # a list as "type" is unhashable
    if cls is None:
        raise DecodeError("unknown message type")
    known = {f.name: str(f.type) for f in fields(cls)}  # annotations as written (strings, see above)
    for name, value in body.items():
        if name in known and not _TYPE_CHECKS[known[name]](value):
            closed = _CLOSED.get(known[name])
            expected = " | ".join(get_args(closed)) if closed is not None else known[name]
            raise DecodeError(f"bad fields for {cls.__name__}: {name} must be {expected}, "
                              f"got {type(value).__name__} {str(value)[:40]!r}")
    try:
        return cls(**{k: v for k, v in body.items() if k in known})
    except TypeError as exc:
        raise DecodeError(f"bad fields for {cls.__name__}: {exc}") from None
