"""The event stream as a contract: its wire format, and whole sessions as snapshots.

The format tests hold `core/events.py` to the JSON the pipeline wrote before events were
typed (lines recorded from a real `python -m pipeline run --events`): same keys, same order,
same value types. The snapshot tests drive the real Coordinator with the ring messages the
workers send (through the real encode/decode) and record, in order, every message it sends
and every event it emits. A snapshot fails when an event is added, dropped, reordered or
renamed; after a deliberate change, review the diff and run
`pytest tests/unit/test_event_contract.py --snapshot-update`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from core.config import load_config
from core.events import (
    DropEvent, ErrorEvent, Event, EventError, EventType, InputEndedEvent, InputStartedEvent, ResponseEvent,
    SpeakerEvent, TokenEvent, TranscriptEvent, WakeEvent, WakeRejectedEvent, WorkerEvent, parse_event,
)
from core.messages import (
    FRIENDLY_FAILURE, Announce, InputEnded, InputStarted, LlmDone, SpeakerResult, Token, Transcript, WakeDetected,
    WakeVerdict, decode, encode,
)
from pipeline.coordinator import Coordinator
from pipeline.latency import LatencyTracker

# ---- the wire format -------------------------------------------------------------------------

# Lines of a real run's --events file, written before the events were typed (one of each kind it had),
# and the three kinds that run did not produce, as the old dict literals built them.
RECORDED = [
    '{"type": "worker", "t": 1796234656.5811892, "name": "wakeword", "event": "started", "pid": 27086, '
    '"exitcode": null}',
    '{"type": "input", "t": 1796234689.497927, "event": "started", "source": "/tmp/ev15/question.wav", "seq": 0, '
    '"t0_ns": 3031469180367}',
    '{"type": "wake", "t": 1796234693.2965622, "session": 1, "seq": 41, "score": 0.0, "engine": "onset", '
    '"verify_score": 0.998}',
    '{"type": "speaker", "t": 1796234693.8568034, "session": 1, "name": "unknown", "score": 0.0}',
    '{"type": "transcript", "t": 1796234696.4773726, "session": 1, "text": "what is the capital of France?", '
    '"final": false, "speech_end_ns": 3036653242867}',
    '{"type": "token", "t": 1796234696.599922, "session": 1, "text": "The"}',
    '{"type": "response", "t": 1796234713.6701684, "session": 2, "transcript": "What time is it?", "speaker": '
    '"unknown", "route": "skill:time", "text": "It\'s 6:05 PM.", "degraded": false, "latency_ms": '
    '{"wake_to_speech_end": 887.8, "speech_end_to_transcript": 2380.2, "transcript_to_first_token": 7.2, '
    '"speech_end_to_first_token": 2387.4, "wake_to_first_token": 3275.2, "first_token_to_done": 2.3, '
    '"wake_to_speaker": 1096.1, "speaker_compute": 45.2, "stt_compute": 2136.2, "llm_first_token_compute": 7.5, '
    '"llm_compute": 9.5}}',
    '{"type": "input", "t": 1796234697.499248, "event": "ended", "source": "/tmp/ev15/question.wav", "seq": 100, '
    '"t_ns": 3039549395054}',
    '{"type": "wake_rejected", "t": 1796234700.25, "seq": 7, "score": 0.2, "heard": "I bought jars of honey", '
    '"verify_score": null}',
    '{"type": "drop", "t": 1796234701.5, "ring": "sse", "count": 3}',
    '{"type": "error", "t": 1796234702.75, "where": "capture", "message": "lost: audio server not responding"}',
]


@pytest.mark.parametrize("line", RECORDED, ids=lambda line: json.loads(line)["type"])
def test_events_serialise_to_the_recorded_format_exactly(line):
    event = parse_event(json.loads(line))
    assert json.dumps(event.to_dict(), ensure_ascii=False) == line  # keys, order, values and their types
    assert event.type == json.loads(line)["type"]


def test_every_event_type_has_its_dataclass():
    made = [WakeEvent(session=1, seq=2, score=0.5, engine="e", verify_score=None),
            WakeRejectedEvent(seq=2, score=0.1, heard="", verify_score=0.2),
            SpeakerEvent(session=1, name="ada", score=0.9),
            TranscriptEvent(session=1, text="hi", final=True, speech_end_ns=5),
            TokenEvent(session=1, text="Hi"),
            ResponseEvent(session=1, transcript="hi", speaker="ada", route="llm", text="Hi", degraded=False,
                          latency_ms={"wake_to_first_token": 1.5}),
            InputStartedEvent(source="mic", seq=0, t0_ns=1), InputEndedEvent(source="mic", seq=9, t_ns=2),
            WorkerEvent(name="stt", event="hung", pid=7, exitcode=None),
            DropEvent(ring="audio", count=2), ErrorEvent(where="stt", message="boom")]
    assert {e.type for e in made} == set(EventType)
    for event in made:
        assert parse_event(json.loads(json.dumps(event.to_dict()))) == event
        assert isinstance(event.to_dict()["t"], float) and abs(event.t - time.time()) < 60


@pytest.mark.parametrize("body, needle", [
    ({"type": "nope", "t": 1.0}, "unknown event type 'nope'"),
    ({"type": "input", "t": 1.0, "event": "paused", "source": "x", "seq": 1}, "unknown event type 'input' ('paused')"),
    ({"type": ["wake"]}, "unknown event type"),
    ({"type": "token", "t": 1.0, "session": 1}, "token event without text"),
    ("not a dict", "not a JSON object"),
])
def test_anything_else_is_an_event_error(body, needle):
    with pytest.raises(EventError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse_event(body)


# ---- whole sessions through the real Coordinator -------------------------------------------


class Conversation:
    """The coordinator between real (encoded, decoded) worker messages and what it sends and emits.

    `log` reads like the session: "← stt.out: Transcript", "→ llm: LlmRequest {...}", "event: {...}".
    Volatile values are masked: wall-clock `t`, monotonic `*_ns` times (0 stays 0: it means "none"),
    and latency figures (their names stay).
    """

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.log: list[str] = []
        self.coordinator = Coordinator(load_config(None, environ=env or {}), self._send, self._emit,
                                       LatencyTracker(), store=None)

    @staticmethod
    def ago(ms: float) -> int:
        """A worker's monotonic time `ms` before now (what it measured just before it sent the message)."""
        return time.monotonic_ns() - int(ms * 1_000_000)

    @staticmethod
    def _masked(body: dict[str, Any]) -> dict[str, Any]:
        for key, value in body.items():
            if key == "t":
                body[key] = "<t>"
            elif key.endswith("_ns") and value:
                body[key] = "<ns>"
            elif key == "latency_ms":
                body[key] = {name: "<ms>" for name in value}
        return body

    def _send(self, worker: str, message: Any) -> bool:
        body = self._masked(dataclasses.asdict(decode(encode(message))))
        self.log.append(f"→ {worker}: {type(message).__name__} {json.dumps(body)}")
        return True

    def _emit(self, event: Event) -> None:
        self.log.append(f"event: {json.dumps(self._masked(event.to_dict()), ensure_ascii=False)}")

    def worker(self, ring: str, message: Any) -> None:
        """One message as a worker puts it on its ring; the parent's loop then ticks as it does."""
        self.log.append(f"← {ring}: {type(message).__name__}")
        self.coordinator.handle(decode(encode(message)))
        self.coordinator.tick()
        self.coordinator.check_deadlines()

    def wait(self, seconds: float, note: str) -> None:
        """Nothing comes for `seconds`; the parent's loop keeps checking deadlines."""
        self.log.append(f"… {note}")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.01)
            self.coordinator.tick()
            self.coordinator.check_deadlines()


SURE_WAKE = dict(seq=40, score=0.999, engine="openwakeword:hey_jarvis_v0.1", sure=True)


def plain_question(c: Conversation) -> None:
    """The default two-stage wake: an utterance start is proposed, the verifier accepts it; speaker ID
    answers first; the answer starts on the partial transcript, which the final one confirms."""
    c.worker("capture.out", InputStarted(source="question.wav", seq=0, t0_ns=c.ago(3300)))
    c.worker("wakeword.out", WakeDetected(seq=41, score=0.0, engine="onset", audio_ns=c.ago(20), detected_ns=c.ago(0),
                                          start_seq=25))
    c.worker("stt.out", WakeVerdict(1, True, 0.998, "Hey Jarvis", 182.0, c.ago(0)))
    c.worker("speaker.out", SpeakerResult(1, "unknown", 0.0, "resemblyzer", c.ago(550), c.ago(0), 20.8))
    c.worker("stt.out", Transcript(1, "what is the capital of France?", False, c.ago(300), c.ago(0), 250.0,
                                   "partial"))
    c.worker("stt.out", Transcript(1, "what is the capital of France?", True, c.ago(310), c.ago(0), 250.0,
                                   "speech_end"))
    for i, text in enumerate(["The", " capital", " of", " France", " is", " Paris", "."]):
        c.worker("llm.out", Token(1, text, i, c.ago(0), request=1))
    c.worker("llm.out", LlmDone(1, "The capital of France is Paris.", "stop", "llm", False, c.ago(10), 400.0,
                                117.0, request=1))
    c.worker("capture.out", InputEnded(source="question.wav", last_seq=100, t_ns=c.ago(0)))


def skill(c: Conversation) -> None:
    """A sure wake (no verifier); a skill answers at once; its timer later speaks as a session of its own."""
    c.worker("wakeword.out", WakeDetected(**SURE_WAKE, audio_ns=c.ago(20), detected_ns=c.ago(0)))
    c.worker("speaker.out", SpeakerResult(1, "ada", 0.86, "resemblyzer", c.ago(1000), c.ago(0), 45.2))
    c.worker("stt.out", Transcript(1, "Set a timer for five seconds.", True, c.ago(400), c.ago(0), 300.0))
    c.worker("llm.out", Token(1, "Timer set for 5 seconds.", 0, c.ago(0), request=1))
    c.worker("llm.out", LlmDone(1, "Timer set for 5 seconds.", "stop", "skill:timer", False, c.ago(0), 9.5, 7.5,
                                request=1))
    c.worker("llm.out", Announce(text="Your 5 second timer is done.", route="skill:timer", t_ns=c.ago(0)))


def rejected_proposal(c: Conversation) -> None:
    """The verifier hears no wake phrase: no wake, no answer — one wake_rejected; a late transcript
    of the same session changes nothing."""
    c.worker("wakeword.out", WakeDetected(seq=7, score=0.2, engine="openwakeword:hey_jarvis_v0.1",
                                          audio_ns=c.ago(20), detected_ns=c.ago(0)))
    c.worker("stt.out", WakeVerdict(1, False, 0.1, "I bought jars of honey", 150.0, c.ago(0)))
    c.worker("stt.out", Transcript(1, "I bought jars of honey", True, c.ago(400), c.ago(0), 300.0))


def barge_in(c: Conversation) -> None:
    """A new wake while an answer streams: the old answer is cancelled (no response for it), its late
    tokens and end are ignored, and the new request is answered."""
    c.worker("wakeword.out", WakeDetected(**SURE_WAKE, audio_ns=c.ago(20), detected_ns=c.ago(0)))
    c.worker("speaker.out", SpeakerResult(1, "unknown", 0.0, "resemblyzer", c.ago(700), c.ago(0), 20.0))
    c.worker("stt.out", Transcript(1, "tell me a long story", True, c.ago(400), c.ago(0), 300.0))
    c.worker("llm.out", Token(1, "Once", 0, c.ago(0), request=1))
    c.worker("llm.out", Token(1, " upon", 1, c.ago(0), request=1))
    c.worker("wakeword.out", WakeDetected(**{**SURE_WAKE, "seq": 90}, audio_ns=c.ago(20), detected_ns=c.ago(0)))
    c.worker("llm.out", Token(1, " a", 2, c.ago(0), request=1))
    c.worker("llm.out", LlmDone(1, "Once upon a", "cancelled", "llm", False, c.ago(50), 1800.0, 90.0, request=1))
    c.worker("speaker.out", SpeakerResult(2, "unknown", 0.0, "resemblyzer", c.ago(700), c.ago(0), 20.0))
    c.worker("stt.out", Transcript(2, "stop", True, c.ago(400), c.ago(0), 300.0))
    c.worker("llm.out", Token(2, "Okay.", 0, c.ago(0), request=1))
    c.worker("llm.out", LlmDone(2, "Okay.", "stop", "llm", False, c.ago(0), 100.0, 90.0, request=1))


def hung_llm(c: Conversation) -> None:
    """The LLM worker never answers (hung, or dead mid-request): at the coordinator's own deadline the
    person still hears the short friendly answer, marked degraded; a token that comes later is ignored."""
    c.worker("wakeword.out", WakeDetected(**SURE_WAKE, audio_ns=c.ago(20), detected_ns=c.ago(0)))
    c.worker("speaker.out", SpeakerResult(1, "unknown", 0.0, "resemblyzer", c.ago(700), c.ago(0), 20.0))
    c.worker("stt.out", Transcript(1, "what is the weather like", True, c.ago(400), c.ago(0), 300.0))
    c.wait(0.6, "the LLM worker says nothing past its first-token deadline")
    c.worker("llm.out", Token(1, "It", 0, c.ago(0), request=1))


def llm_times_out(c: Conversation) -> None:
    """The LLM worker is alive but its engine stalls: the worker itself streams the friendly answer and
    ends with finish_reason "timeout"; the coordinator passes it on as a degraded response."""
    c.worker("wakeword.out", WakeDetected(**SURE_WAKE, audio_ns=c.ago(20), detected_ns=c.ago(0)))
    c.worker("speaker.out", SpeakerResult(1, "unknown", 0.0, "resemblyzer", c.ago(700), c.ago(0), 20.0))
    c.worker("stt.out", Transcript(1, "what is the weather like", True, c.ago(400), c.ago(0), 300.0))
    c.worker("llm.out", Token(1, FRIENDLY_FAILURE, 0, c.ago(0), request=1))
    c.worker("llm.out", LlmDone(1, FRIENDLY_FAILURE, "timeout", "llm", True, c.ago(0), 1500.0, 0.0, request=1))


SCENARIOS: dict[str, Callable[[Conversation], None]] = {
    fn.__name__: fn for fn in (plain_question, skill, rejected_proposal, barge_in, hung_llm, llm_times_out)}


@pytest.mark.parametrize("name", SCENARIOS)
def test_session_event_sequence(name, snapshot, monkeypatch):
    """Default config (two-stage wake, speaker ID, speculation); only the hung-LLM deadlines are short."""
    if name == "hung_llm":
        monkeypatch.setattr("pipeline.coordinator.BACKSTOP_S", 0.0)
    conversation = Conversation(env={"VIGIL_LLM__FIRST_TOKEN_TIMEOUT_S": "0.05"} if name == "hung_llm" else None)
    SCENARIOS[name](conversation)
    assert conversation.coordinator.idle()  # every session ended
    assert conversation.log == snapshot
