"""The event stream: what the parent tells the world, one frozen dataclass per event type.

Every output gets the same flat JSON object: the responder's stdout summary and `--events`
JSONL file, the `/events` SSE stream, Prometheus, and the bench and chaos harnesses that read
them back. `to_dict()` is that wire format — `{"type": ..., "t": unix seconds, ...}` with the
fields in the order they are declared here — and `parse_event()` turns a dict back into its
dataclass, so readers match on classes and attributes instead of strings.

Times: `t` is wall-clock (time.time()) when the parent emitted the event; fields ending in
`_ns` are CLOCK_MONOTONIC nanoseconds, comparable with the ring messages' times.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar, Literal, Self


class EventType(StrEnum):
    """The "type" of every event; a StrEnum, so `EventType.WAKE == "wake"`."""

    WAKE = "wake"  # a wake to act on (a proposal the verifier accepted, or a sure one)
    WAKE_REJECTED = "wake_rejected"  # a proposal the verifier turned down: no answer, no sound
    SPEAKER = "speaker"  # who spoke the request ("unknown" when no voiceprint matched)
    TRANSCRIPT = "transcript"  # what was heard: partial (an early guess) or final
    TOKEN = "token"  # a piece of the answer as it streams
    RESPONSE = "response"  # the finished answer with its latency spans
    INPUT = "input"  # the capture source started or ended
    WORKER = "worker"  # the supervisor started, lost, killed or recycled a worker process
    DROP = "drop"  # messages or frames a ring (or a slow SSE client) dropped
    ERROR = "error"  # something went wrong that the person may notice


WorkerEventKind = Literal["started", "exited", "restarted", "hung", "recycled"]


class EventError(ValueError):
    """A dict that is not one of our events (unknown type or a missing field)."""


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event: its type (a class constant) and when the parent emitted it."""

    type: ClassVar[EventType]
    t: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """The wire format: "type" first, then the fields in declaration order ("t" first)."""
        body: dict[str, Any] = {"type": self.type.value}
        for f in fields(self):
            body[f.name] = getattr(self, f.name)
        return body

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Self:
        """The event of this class in `body` (keys it does not know are ignored)."""
        missing = [f.name for f in fields(cls) if f.name not in body]
        if missing:
            raise EventError(f"{cls.type.value} event without {', '.join(missing)}")
        return cls(**{f.name: body[f.name] for f in fields(cls)})


@dataclass(frozen=True, kw_only=True)
class WakeEvent(Event):
    type: ClassVar[EventType] = EventType.WAKE
    session: int
    seq: int  # the audio frame the wake word fired on
    score: float  # the proposing engine's score
    engine: str
    verify_score: float | None  # the verifier's confidence; None when no verdict decided it


@dataclass(frozen=True, kw_only=True)
class WakeRejectedEvent(Event):
    type: ClassVar[EventType] = EventType.WAKE_REJECTED
    seq: int
    score: float
    heard: str  # what the verifier heard instead of the wake phrase
    verify_score: float | None  # None when the verifier failed and a low proposer score decided


@dataclass(frozen=True, kw_only=True)
class SpeakerEvent(Event):
    type: ClassVar[EventType] = EventType.SPEAKER
    session: int
    name: str  # an enrolled name, or "unknown"
    score: float


@dataclass(frozen=True, kw_only=True)
class TranscriptEvent(Event):
    type: ClassVar[EventType] = EventType.TRANSCRIPT
    session: int
    text: str
    final: bool  # False: a partial transcript the answer may already start on
    speech_end_ns: int  # 0 when no speech was heard


@dataclass(frozen=True, kw_only=True)
class TokenEvent(Event):
    type: ClassVar[EventType] = EventType.TOKEN
    session: int
    text: str


@dataclass(frozen=True, kw_only=True)
class ResponseEvent(Event):
    type: ClassVar[EventType] = EventType.RESPONSE
    session: int
    transcript: str  # "" for an announcement nobody asked for (a timer going off)
    speaker: str
    route: str  # "llm" or "skill:NAME"
    text: str
    degraded: bool  # the friendly fallback or a cut-short answer
    latency_ms: dict[str, float]  # pipeline.latency spans and "<stage>_compute" times


@dataclass(frozen=True, kw_only=True)
class InputStartedEvent(Event):
    type: ClassVar[EventType] = EventType.INPUT
    event: Literal["started"] = "started"
    source: str
    seq: int  # the first audio frame of the source
    t0_ns: int  # capture time of the source's sample 0


@dataclass(frozen=True, kw_only=True)
class InputEndedEvent(Event):
    type: ClassVar[EventType] = EventType.INPUT
    event: Literal["ended"] = "ended"
    source: str
    seq: int  # the last audio frame of the source
    t_ns: int


@dataclass(frozen=True, kw_only=True)
class WorkerEvent(Event):
    type: ClassVar[EventType] = EventType.WORKER
    name: str
    event: WorkerEventKind
    pid: int | None
    exitcode: int | None  # set on "exited"


@dataclass(frozen=True, kw_only=True)
class DropEvent(Event):
    type: ClassVar[EventType] = EventType.DROP
    ring: str  # a ring name, or "sse" for events a slow SSE client lost
    count: int  # dropped since the last drop event of this ring


@dataclass(frozen=True, kw_only=True)
class ErrorEvent(Event):
    type: ClassVar[EventType] = EventType.ERROR
    where: str  # the worker (or stage) it concerns
    message: str


_BY_TYPE: dict[str, type[Event]] = {cls.type.value: cls for cls in (
    WakeEvent, WakeRejectedEvent, SpeakerEvent, TranscriptEvent, TokenEvent, ResponseEvent, WorkerEvent, DropEvent,
    ErrorEvent,
)}
_INPUT_BY_EVENT: dict[str, type[Event]] = {"started": InputStartedEvent, "ended": InputEndedEvent}


def parse_event(body: Any) -> Event:
    """A dict as `to_dict()` wrote it (e.g. a JSONL line or SSE data, decoded) → its event.

    Raises EventError for anything else, so a reader can skip or count it.
    """
    if not isinstance(body, Mapping):
        raise EventError("not a JSON object")
    kind, sub = body.get("type"), body.get("event")
    if kind == EventType.INPUT:
        cls = _INPUT_BY_EVENT.get(sub) if isinstance(sub, str) else None
    else:
        cls = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EventError(f"unknown event type {kind!r}" + (f" ({sub!r})" if kind == EventType.INPUT else ""))
    return cls.from_dict(body)
