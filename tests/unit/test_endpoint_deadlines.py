"""The coordinator's side of endpointing and deadlines: the endpoint span, one LLM deadline from the speech
end for a guess and its confirmation, and stale wakes and requests (a stopped parent) dropped or apologised
for -- and counted."""

from __future__ import annotations

import time

from core.messages import LlmRequest, Transcript, WakeDetected
from pipeline.coordinator import MISSED, STALE_S
from tests.unit.test_parent_units import make_coordinator


def test_the_endpoint_decision_is_a_span_with_the_models_score(tmp_path):
    coord, rec, store = make_coordinator(tmp_path)
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=1, score=0.9, engine="oww", audio_ns=now, detected_ns=now))
    speech_end = now + 1_000_000_000
    coord.handle(Transcript(1, "what time is it?", True, speech_end, speech_end + 300_000_000, 250.0,
                            endpoint_ns=speech_end + 280_000_000, turn_score=0.93))
    spans = coord.tracker.spans(1)
    assert spans["speech_end_to_endpoint"] == 280.0 and spans["endpoint_score"] == 0.93
    store.close()


def test_a_guess_and_the_final_request_share_the_deadline_from_speech_end(tmp_path):
    coord, rec, store = make_coordinator(tmp_path)
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=1, score=0.9, engine="oww", audio_ns=now, detected_ns=now))
    speech_end = time.monotonic_ns() - 200_000_000
    coord.handle(Transcript(1, "what is the capital of France?", False, speech_end, time.monotonic_ns(), 200.0,
                            "partial"))
    coord.handle(Transcript(1, "what is the capital of Spain?", True, speech_end, time.monotonic_ns(), 200.0))
    requests = [m for w, m in rec.sent if isinstance(m, LlmRequest)]
    assert [r.request for r in requests] == [1, 2]
    assert all(r.t_ns == speech_end for r in requests), [r.t_ns - speech_end for r in requests]
    store.close()


def test_stale_wakes_are_dropped_and_counted(tmp_path):
    coord, rec, store = make_coordinator(tmp_path)
    old = time.monotonic_ns() - int((STALE_S + 12) * 1e9)  # e.g. queued while the parent was stopped
    for seq in range(4):
        coord.handle(WakeDetected(seq=seq, score=0.9, engine="oww", audio_ns=old, detected_ns=old))
    assert coord.stale_wakes == 4 and coord.idle()
    drops = [e for e in rec.events if e["type"] == "drop"]
    assert [(d["ring"], d["count"]) for d in drops] == [("stale_wake", 1)] * 4
    assert not [e for e in rec.events if e["type"] == "wake"]
    store.close()


def test_a_request_heard_long_ago_is_apologised_for_not_answered_late(tmp_path):
    coord, rec, store = make_coordinator(tmp_path)
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=1, score=0.9, engine="oww", audio_ns=now, detected_ns=now))
    speech_end = now - int((STALE_S + 1) * 1e9)
    coord.handle(Transcript(1, "what time is it?", True, speech_end, now, 200.0))
    assert not [m for _, m in rec.sent if isinstance(m, LlmRequest)]
    response = rec.events[-1]
    assert response["type"] == "response" and response["text"] == MISSED and response["degraded"] is True
    assert coord.stale_answers == 1 and coord.idle()
    store.close()
