"""The parent's pure pieces: config, LatencyTracker, MetricsStore, CLI errors, coordinator events."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import ConfigError, load_config
from pipeline.coordinator import FRIENDLY_FAILURE, Coordinator
from pipeline.latency import LatencyTracker
from core.messages import (
    Cancel, DecodeError, LlmDone, LlmRequest, SpeakerResult, StartListening, Token, Transcript, WakeDetected,
    WakeVerdict, decode, encode,
)
from pipeline.metrics_store import MetricsStore

ROOT = Path(__file__).resolve().parents[2]


# ---- config ------------------------------------------------------------------------------


def test_config_file_and_environment_overrides(tmp_path):
    path = tmp_path / "vigil.toml"
    path.write_text('[stt]\nthreads = 1\nend_silence_ms = 400\n[llm]\nengine = "embedded"\n')
    config = load_config(path, environ={"VIGIL_STT__THREADS": "2", "VIGIL_WAKE__THRESHOLD": "0.4",
                                        "VIGIL_AUDIO__LOOP": "true", "UNRELATED": "x"})
    assert config.stt.threads == 2  # the environment wins over the file
    assert config.stt.end_silence_ms == 400
    assert config.wake.threshold == 0.4 and config.audio.loop is True
    assert load_config(None, environ={}).stt.end_silence_ms == 500


@pytest.mark.parametrize("toml,env,needle", [
    ("[stt]\nthreads = 0\n", {}, "[stt] threads must be > 0"),
    ("[stt]\nthreads = 'two'\n", {}, "[stt] threads"),
    ("[stt]\nthreds = 2\n", {}, "unknown key(s) in [stt]: threds"),
    ("[nope]\nx = 1\n", {}, "unknown section(s): nope"),
    ("[llm]\nengine = 'gpt'\n", {}, "choose one of"),
    ("", {"VIGIL_WAKE__THRESHOLD": "1.5"}, "between 0 and 1"),
    ("", {"VIGIL_BOGUS__X": "1"}, "unknown section 'bogus'"),
    ("", {"VIGIL_AUDIO__ENGINE_RESTART_S": "-1"}, "[audio] engine_restart_s must be 0 (off) or >= 60"),
    ("", {"VIGIL_AUDIO__ENGINE_RESTART_S": "0.5"}, "[audio] engine_restart_s must be 0 (off) or >= 60"),
    ("[stt]\nthrads = 2\n", {}, "unknown key(s) in [stt]: thrads (did you mean 'threads'?)"),
    ("[sst]\nthreads = 2\n", {}, "unknown section(s): sst (did you mean 'stt'?)"),
    ("", {"VIGIL_STT_THREADS": "2"}, "environment VIGIL_STT_THREADS: not a setting (did you mean VIGIL_STT__THREADS?"),
    ("", {"VIGIL_STT__THRADS": "2"}, "environment VIGIL_STT__THRADS: unknown key 'thrads' in [stt] (did you mean"),
    ("", {"VIGIL_LLM__REPEAT_PENALTY": "-3.0"}, "[llm] repeat_penalty must be > 0"),
    ("", {"VIGIL_LLM__TEMPERATURE": "-5.0"}, "[llm] temperature must be >= 0"),
    ("", {"VIGIL_SPEAKER__THRESHOLD": "5.0"}, "[speaker] threshold = 5.0 is too large; at most 1"),
    ("", {"VIGIL_SUPERVISOR__HEARTBEAT_TIMEOUT_S": "0.001"}, "[supervisor] heartbeat_timeout_s must be >= 1"),
    ("", {"VIGIL_SUPERVISOR__RSS_LIMIT_MB": "1"}, "[supervisor] rss_limit_mb must be 0 (off) or >= 768"),
    ("[llm]\nkeep_alive = '30'\n", {}, "[llm] keep_alive = '30' is not valid"),
    ("[skills]\nallowed = 'time;date'\n", {}, "[skills] allowed: 'time;date' is not a name"),
    ("[stt\n", {}, "not valid TOML"),
])
def test_invalid_config_is_a_clear_error(tmp_path, toml, env, needle):
    path = tmp_path / "vigil.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ=env)
    assert needle in str(err.value)


# ---- latency tracker and metrics store -----------------------------------------------------


def test_latency_tracker_spans_and_report():
    tracker = LatencyTracker(max_sessions=3)
    for session, extra_ms in enumerate([100, 200, 300, 400], start=1):
        base = 1_000_000_000 * session
        tracker.mark(session, "wake", base)
        tracker.mark(session, "speech_end", base + 2_000_000_000)
        tracker.mark(session, "transcript", base + 2_000_000_000 + extra_ms * 1_000_000)
        tracker.mark(session, "first_token", base + 2_100_000_000 + extra_ms * 1_000_000)
        tracker.mark(session, "first_token", base + 9_000_000_000)  # a repeated mark does not move the first
        tracker.stage(session, "stt", extra_ms * 0.8)
    assert tracker.measure(4, "speech_end", "first_token") == pytest.approx(500.0)
    assert tracker.measure(4, "wake", "nope") is None
    assert tracker.marks(1) == {}  # only the newest 3 sessions are kept
    report = tracker.report()
    assert report["speech_end_to_first_token"]["n"] == 3
    assert report["speech_end_to_first_token"]["p50"] == pytest.approx(400.0)
    assert report["wake_to_first_token"]["p50"] == pytest.approx(2400.0)
    assert report["stt_compute"]["p50"] == pytest.approx(240.0)


def test_metrics_store_retention_and_failed_writes(tmp_path):
    store = MetricsStore(tmp_path, run_id="r1", retention=5)
    for session in range(1, 9):
        assert store.record(session, transcript=f"q{session}", speaker="unknown", route="llm", degraded=False,
                            response="a", spans={"speech_end_to_first_token": float(session)}, marks={"wake": 1})
    rows = store.recent()
    assert [r["session"] for r in rows] == [4, 5, 6, 7, 8]  # bounded: the oldest went
    assert store.recent(2)[-1]["spans"] == {"speech_end_to_first_token": 8.0}
    # A database locked by another writer: the write is dropped and counted, never raised.
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    assert store.record(9, transcript="", speaker="", route="llm", degraded=False, response="", spans={}, marks={}) \
        is False
    assert store.write_errors == 1
    blocker.execute("ROLLBACK")
    blocker.close()
    store.close()


# ---- messages ------------------------------------------------------------------------------


def test_messages_round_trip_and_garbage_is_a_decode_error():
    for message in (WakeDetected(3, 0.9, "oww", 1, 2), Token(1, "hé", 0, 5), Cancel(7),
                    Transcript(1, "hi", True, 10, 20, 3.5, "speech_end")):
        assert decode(encode(message)) == message
    for payload in (b"\xff\xfe", b"[1,2]", b'{"type": "Nope"}', b'{"type": "Cancel"}', b"{"):
        with pytest.raises(DecodeError):
            decode(payload)


# ---- coordinator: the event sequence of a session ---------------------------------------------


class Recorder:
    def __init__(self):
        self.sent: list[tuple[str, object]] = []
        self.events: list[dict] = []

    def send(self, worker, message):
        self.sent.append((worker, message))
        return True

    def emit(self, event):
        self.events.append(event.to_dict())  # as the JSONL file and SSE clients get it


def make_coordinator(tmp_path, env: dict | None = None, **llm):
    """Single-stage wake and no speaker ID unless `env` turns them on: most tests are about one part."""
    environ = {"VIGIL_WAKE__VERIFY": "off", "VIGIL_SPEAKER__ENABLED": "false", **(env or {})}
    environ.update({f"VIGIL_LLM__{k.upper()}": str(v) for k, v in llm.items()})
    config = load_config(None, environ=environ)
    rec = Recorder()
    store = MetricsStore(tmp_path, "test")
    return Coordinator(config, rec.send, rec.emit, LatencyTracker(), store), rec, store


def test_coordinator_session_event_sequence(tmp_path):
    coord, rec, store = make_coordinator(tmp_path)
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=40, score=0.97, engine="oww", audio_ns=now, detected_ns=now + 5_000_000))
    assert isinstance(rec.sent[-1][1], StartListening) and rec.sent[-1][0] == "stt"
    coord.handle(Transcript(1, "what is the capital of France?", True, now + 2_000_000_000, now + 2_700_000_000,
                            300.0))
    assert rec.sent[-1][0] == "llm" and isinstance(rec.sent[-1][1], LlmRequest)
    for i, text in enumerate(["Paris", "."]):
        coord.handle(Token(1, text, i, now + 2_800_000_000 + i, request=1))
    coord.handle(Token(1, "stale", 9, now, request=7))  # not the request being answered
    coord.handle(LlmDone(1, "Paris.", "stop", "llm", False, now + 2_800_000_000, 150.0, 90.0, request=1))
    kinds = [e["type"] for e in rec.events]
    assert kinds == ["wake", "transcript", "token", "token", "response"]
    response = rec.events[-1]
    assert response["text"] == "Paris." and response["route"] == "llm" and response["degraded"] is False
    assert response["latency_ms"]["speech_end_to_first_token"] == pytest.approx(800.0)
    assert response["latency_ms"]["wake_to_first_token"] == pytest.approx(2795.0)
    assert coord.idle() and store.recent()[-1]["transcript"] == "what is the capital of France?"
    store.close()


def test_coordinator_answers_friendly_when_the_llm_misses_its_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.coordinator.BACKSTOP_S", 0.0)
    coord, rec, store = make_coordinator(tmp_path, first_token_timeout_s=0.05)
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=1, score=0.9, engine="oww", audio_ns=now, detected_ns=now))
    coord.handle(Transcript(1, "tell me a story", True, now, now, 100.0))
    time.sleep(0.1)
    coord.check_deadlines()
    assert ("llm", Cancel(1)) in rec.sent
    response = rec.events[-1]
    assert response["type"] == "response" and response["degraded"] is True and response["text"] == FRIENDLY_FAILURE
    assert rec.events[-2] == {**rec.events[-2], "type": "token", "text": FRIENDLY_FAILURE}
    coord.handle(Token(1, "late", 0, now, request=1))  # a token after the deadline is ignored
    assert rec.events[-1] is response and coord.idle()
    store.close()


def test_new_wake_cancels_the_answer_in_flight(tmp_path):
    coord, rec, store = make_coordinator(tmp_path)
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=1, score=0.9, engine="oww", audio_ns=now, detected_ns=now))
    coord.handle(Transcript(1, "tell me a long story", True, now, now, 100.0))
    coord.handle(Token(1, "Once", 0, now, request=1))
    coord.handle(WakeDetected(seq=90, score=0.9, engine="oww", audio_ns=now, detected_ns=now))
    assert ("llm", Cancel(1)) in rec.sent
    assert rec.sent[-1][0] == "stt" and rec.sent[-1][1].session == 2
    assert [e["type"] for e in rec.events].count("response") == 0
    store.close()


# ---- CLI -------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,needle", [
    (["run", "--bogus"], "unrecognized arguments"),
    (["frobnicate"], "invalid choice"),
    (["report", "--last", "0"], "--last must be a positive number"),
    (["run", "--input", "/nonexistent.wav"], "/nonexistent.wav"),
    (["run", "--config", "/nonexistent.toml"], "config file /nonexistent.toml does not exist"),
    (["--config", "/nonexistent.toml", "report"], "config file /nonexistent.toml does not exist"),
    (["run", "--http", "localhost"], "expected HOST:PORT"),
])
def test_bad_arguments_exit_2_with_one_line(args, needle, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_every_command_has_help():
    for command in ([], ["run"], ["report"], ["models"], ["bench"], ["serve-llm"], ["enroll"], ["doctor"], ["chaos"]):
        proc = subprocess.run([sys.executable, "-m", "pipeline", *command, "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "usage:" in proc.stdout


def test_answer_started_on_a_partial_is_held_until_the_final_confirms_it(tmp_path):
    coord, rec, store = make_coordinator(tmp_path)
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=1, score=0.9, engine="oww", audio_ns=now, detected_ns=now))
    coord.handle(Transcript(1, "what is the capital", False, now, now, 100.0, "partial"))
    coord.handle(Transcript(1, "what is the capital of France", False, now, now, 100.0, "partial"))
    requests = [m for w, m in rec.sent if isinstance(m, LlmRequest)]
    assert [r.request for r in requests] == [1, 2]
    assert rec.sent[-2] == ("llm", Cancel(1, 1))  # the first guess was dropped when the person went on
    coord.handle(Token(1, "Paris", 0, now + 1, request=2))
    coord.handle(Token(1, "stale", 0, now + 1, request=1))
    assert [e["type"] for e in rec.events].count("token") == 0  # held: the person has not finished
    coord.handle(Transcript(1, "what is the capital of France", True, now, time.monotonic_ns(), 100.0))
    assert [e["text"] for e in rec.events if e["type"] == "token"] == ["Paris"]
    assert not [m for w, m in rec.sent[len(requests) + 2:] if isinstance(m, LlmRequest)], "no second request"
    coord.handle(LlmDone(1, "Paris", "stop", "llm", False, now + 1, 10.0, 5.0, request=2))
    response = rec.events[-1]
    assert response["type"] == "response" and response["text"] == "Paris"
    assert response["latency_ms"]["transcript_to_first_token"] >= 0
    assert coord.speculation_hits == 1
    # A final that differs from the guess: the guess is cancelled and the real text asked.
    coord.handle(WakeDetected(seq=99, score=0.9, engine="oww", audio_ns=now, detected_ns=now))
    coord.handle(Transcript(2, "what time", False, now, now, 100.0, "partial"))
    coord.handle(Transcript(2, "what time is it in Paris", True, now, now, 100.0))
    assert rec.sent[-2] == ("llm", Cancel(2, 1))
    assert rec.sent[-1][1].text == "what time is it in Paris" and rec.sent[-1][1].request == 2
    assert coord.speculation_misses == 1
    store.close()


# ---- two-stage wake and speaker ID in the coordinator -----------------------------------------


TWO_STAGE = {"VIGIL_WAKE__VERIFY": "whisper", "VIGIL_SPEAKER__ENABLED": "true"}


def sent_to(rec, worker, kind):
    return [m for w, m in rec.sent if w == worker and isinstance(m, kind)]


def test_a_proposal_becomes_a_wake_only_when_the_verifier_accepts(tmp_path):
    coord, rec, store = make_coordinator(tmp_path, env=TWO_STAGE)
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=40, score=0.3, engine="oww", audio_ns=now, detected_ns=now))
    assert sent_to(rec, "stt", StartListening) == [StartListening(1, 40, now, verify=True)]
    assert not rec.events and not sent_to(rec, "speaker", StartListening)  # nothing said before the verdict
    coord.handle(Transcript(1, "hey", False, now, now, 10.0, "partial"))  # too early: ignored
    coord.handle(WakeVerdict(1, True, 0.93, "Hey Jarvis, what time", 180.0, time.monotonic_ns()))
    assert [e["type"] for e in rec.events] == ["wake"]
    assert rec.events[0]["verify_score"] == 0.93 and rec.events[0]["score"] == 0.3
    assert len(sent_to(rec, "stt", StartListening)) == 1  # STT is already listening to this session
    assert sent_to(rec, "speaker", StartListening)[0].session == 1
    # Speaker ID answers before the transcript: its name goes with the request.
    coord.handle(SpeakerResult(1, "ada", 0.88, "resemblyzer", now, time.monotonic_ns(), 30.0))
    coord.handle(Transcript(1, "what time is it", True, time.monotonic_ns() - 600_000_000, time.monotonic_ns(), 9.0))
    assert sent_to(rec, "llm", LlmRequest)[-1].speaker == "ada"
    assert [e["type"] for e in rec.events] == ["wake", "speaker", "transcript"]
    assert rec.events[1]["name"] == "ada" and rec.events[1]["score"] == 0.88
    store.close()


def test_a_sure_proposal_is_accepted_at_once_without_the_verifier(tmp_path):
    coord, rec, store = make_coordinator(tmp_path, env=TWO_STAGE)
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=40, score=0.99, engine="oww", audio_ns=now, detected_ns=now, sure=True))
    assert sent_to(rec, "stt", StartListening) == [StartListening(1, 40, now, verify=False)]
    assert rec.events[0]["type"] == "wake" and rec.events[0]["verify_score"] is None
    assert coord.wake_proposals == 0
    store.close()


def test_an_onset_proposal_superseded_by_a_sure_wake_was_no_wake(tmp_path):
    """An utterance start is being checked when the engine becomes sure of the same "hey jarvis": one wake,
    and the proposal leaves no session behind (the bench would count it as a second wake)."""
    coord, rec, store = make_coordinator(tmp_path, env=TWO_STAGE)
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=40, score=0.0, engine="onset", audio_ns=now, detected_ns=now, start_seq=25))
    assert sent_to(rec, "stt", StartListening) == [StartListening(1, 40, now, verify=True, start_seq=25)]
    coord.handle(WakeDetected(seq=38, score=0.99, engine="oww", audio_ns=now, detected_ns=now, sure=True))
    assert [e["type"] for e in rec.events] == ["wake"] and rec.events[0]["session"] == 2
    assert list(coord.sessions) == [2] and coord.proposals_superseded == 1
    coord.handle(WakeVerdict(1, True, 0.99, "Hey Jarvis (-1.0)", 150.0, now))  # the late verdict changes nothing
    assert [e["type"] for e in rec.events] == ["wake"]
    assert [r["session"] for r in store.recent()] == []  # nothing stored for the proposal
    store.close()


def test_a_rejected_proposal_ends_silently_and_is_counted(tmp_path):
    coord, rec, store = make_coordinator(tmp_path, env=TWO_STAGE)
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=7, score=0.2, engine="oww", audio_ns=now, detected_ns=now))
    coord.handle(WakeVerdict(1, False, 0.1, "I bought jars of honey", 150.0, now))
    assert rec.events == [{**rec.events[0], "type": "wake_rejected", "seq": 7, "score": 0.2,
                           "heard": "I bought jars of honey", "verify_score": 0.1}]
    assert coord.idle() and coord.wake_rejections == 1
    coord.handle(Transcript(1, "bought jars of honey", True, now, now, 9.0))  # a straggler changes nothing
    assert not sent_to(rec, "llm", LlmRequest) and len(rec.events) == 1
    store.close()


@pytest.mark.parametrize("score,accepted", [(0.8, True), (0.2, False)])
def test_a_late_verifier_leaves_the_decision_to_the_proposer_threshold(tmp_path, score, accepted):
    coord, rec, store = make_coordinator(tmp_path, env={**TWO_STAGE, "VIGIL_WAKE__VERIFY_DEADLINE_S": "0.05"})
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=7, score=score, engine="oww", audio_ns=now, detected_ns=now))
    time.sleep(0.1)
    coord.check_deadlines()
    assert coord.verify_faults == 1
    assert [e["type"] for e in rec.events] == ["wake" if accepted else "wake_rejected"]
    if accepted:  # STT (perhaps restarted) is told again, without a second check
        assert sent_to(rec, "stt", StartListening)[-1] == StartListening(1, 7, now, verify=False)
        assert rec.events[0]["verify_score"] is None
    else:
        assert ("stt", Cancel(1)) in rec.sent and coord.idle()
    store.close()


def test_a_failed_verifier_is_a_counted_fault_not_a_rejection(tmp_path):
    coord, rec, store = make_coordinator(tmp_path, env=TWO_STAGE)
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=7, score=0.9, engine="oww", audio_ns=now, detected_ns=now))
    coord.handle(WakeVerdict(1, False, -1.0, "error: boom", 1.0, now))
    assert [e["type"] for e in rec.events] == ["wake"] and coord.verify_faults == 1
    assert len(sent_to(rec, "stt", StartListening)) == 1  # STT kept listening after its own fault
    store.close()


def test_proposals_while_someone_is_heard_do_not_interrupt(tmp_path):
    coord, rec, store = make_coordinator(tmp_path, env=TWO_STAGE)
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=7, score=0.9, engine="oww", audio_ns=now, detected_ns=now))
    coord.handle(WakeVerdict(1, True, 0.9, "hey jarvis", 100.0, now))
    coord.handle(WakeDetected(seq=20, score=0.2, engine="oww", audio_ns=now, detected_ns=now))
    assert coord.proposals_ignored == 1 and len(sent_to(rec, "stt", StartListening)) == 1
    store.close()


def test_the_answer_waits_for_speaker_id_only_until_its_deadline(tmp_path):
    coord, rec, store = make_coordinator(tmp_path, env={**TWO_STAGE, "VIGIL_SPEAKER__DEADLINE_MS": "200"})
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=7, score=0.9, engine="oww", audio_ns=now, detected_ns=now))
    coord.handle(WakeVerdict(1, True, 0.9, "hey jarvis", 100.0, now))
    # Speech ended just now: the transcript may wait up to 200 ms for the speaker...
    coord.handle(Transcript(1, "what time is it", True, time.monotonic_ns(), time.monotonic_ns(), 9.0))
    assert not sent_to(rec, "llm", LlmRequest)
    coord.handle(SpeakerResult(1, "ada", 0.9, "resemblyzer", now, time.monotonic_ns(), 30.0))
    assert sent_to(rec, "llm", LlmRequest)[-1].speaker == "ada"  # ...and goes on the moment it comes
    # A second session whose speaker never answers goes on as "unknown" at the deadline.
    coord.handle(WakeDetected(seq=70, score=0.9, engine="oww", audio_ns=now, detected_ns=now))
    coord.handle(WakeVerdict(2, True, 0.9, "hey jarvis", 100.0, now))
    end = time.monotonic_ns()
    coord.handle(Transcript(2, "what day is it", True, end, end, 9.0))
    while not [m for m in sent_to(rec, "llm", LlmRequest) if m.session == 2]:
        coord.tick()
        assert time.monotonic_ns() - end < 1_000_000_000
    waited_ms = (time.monotonic_ns() - end) / 1e6
    assert 150 <= waited_ms < 400 and sent_to(rec, "llm", LlmRequest)[-1].speaker == "unknown"
    assert coord.speaker_late == 1
    store.close()


@pytest.mark.parametrize("section, key, value", [
    ("audio", "ring_seconds", "1e300"), ("audio", "frame_samples", str(10**9)), ("llm", "max_tokens", str(10**9)),
    ("supervisor", "heartbeat_timeout_s", "1e12"), ("supervisor", "stop_timeout_s", "1e9"),
    ("llm", "total_timeout_s", "1e15"), ("stt", "max_utterance_s", "1e6"), ("skills", "pool_size", str(10**6)),
    ("supervisor", "rss_limit_mb", str(10**12)), ("metrics", "retention_sessions", str(10**12)),
])
def test_absurd_but_finite_config_values_are_refused_naming_the_key(tmp_path, section, key, value):
    with pytest.raises(ConfigError) as err:
        load_config(None, environ={f"VIGIL_{section.upper()}__{key.upper()}": value})
    assert f"[{section}] {key}" in str(err.value) and "too large" in str(err.value)
    toml = tmp_path / "vigil.toml"  # the same through the file, with the number as TOML writes it
    toml.write_text(f"[{section}]\n{key} = {value if '.' in value or 'e' in value else int(value)}\n")
    with pytest.raises(ConfigError, match=rf"\[{section}\] {key}"):
        load_config(toml, environ={})


def test_config_maximums_admit_the_defaults_and_generous_values():
    import dataclasses

    from core.config import Config

    defaults = Config()
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(getattr(defaults, section.name)):  # every default passes its own rule
            if "rule" in f.metadata:
                f.metadata["rule"].check(f"[{section.name}] {f.name}", getattr(getattr(defaults, section.name), f.name))
    config = load_config(None, environ={"VIGIL_AUDIO__RING_SECONDS": "600", "VIGIL_LLM__MAX_TOKENS": "8192",
                                        "VIGIL_SUPERVISOR__RSS_LIMIT_MB": "0", "VIGIL_BENCH__IDLE_S": "86400"})
    assert config.audio.ring_seconds == 600.0 and config.llm.max_tokens == 8192 and config.supervisor.rss_limit_mb == 0


def test_a_request_being_heard_when_stt_dies_is_handed_to_the_restarted_stt(tmp_path):
    """Chaos found it: a killed STT took the session's StartListening with it, and later wakes were
    ignored ("a request is being heard") for the whole listening deadline. Now the new STT gets it again."""
    coord, rec, store = make_coordinator(tmp_path)
    now = time.monotonic_ns()
    coord.handle(WakeDetected(seq=40, score=0.97, engine="oww", audio_ns=now, detected_ns=now + 5))
    first = rec.sent[-1][1]
    assert isinstance(first, StartListening)
    coord.worker_exited("llm")  # nothing to hand over: the LLM's own deadline covers it
    coord.worker_exited("stt")
    assert rec.sent[-1] == ("stt", StartListening(session=first.session, wake_seq=40, wake_ns=now + 5))
    coord.handle(Transcript(first.session, "what time is it", True, now + 2_000_000_000, now + 2_500_000_000, 90.0))
    assert rec.sent[-1][0] == "llm"  # the new STT's transcript goes on to an answer as usual
    sent = len(rec.sent)
    coord.worker_exited("stt")  # no request is being heard any more: nothing to resend
    assert len(rec.sent) == sent
    store.close()
