"""Hearing through the real pipeline: two-stage wake and speaker ID beside STT.

`python -m pipeline run` on a replayed WAV, real models in every worker; the tests read the
contract's event stream and the MetricsStore's marks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.synth import tts_samples, write_wav16
from bench.variants import overlap
from pipeline.metrics_store import MetricsStore
from bench.speech import pad, synth
from tests.e2e.test_pipeline_e2e import pipeline_env, read_events

ROOT = Path(__file__).resolve().parents[2]
ENROLLED_VOICE = "flite:slt"
STRANGER_VOICE = "en-us"  # tiny.en hears both steadily (kal: "was one time is it", sometimes)


def conversation(path: Path, parts: list[tuple[str, str]], gap_s: float = 3.0) -> Path:
    """Several spoken parts (text, voice) in one WAV, with silence for the warm-up and between them."""
    pieces = [np.zeros(int(2.0 * 16_000), dtype=np.int16)]
    for text, voice in parts:
        pieces.append(pad(synth(text, voice), 0.1, gap_s))
    return write_wav16(path, np.concatenate(pieces))


def run(wav: Path, tmp_path: Path, **env: str) -> tuple[list[dict], list[dict], str]:
    events_path = tmp_path / "events.jsonl"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", "--input", str(wav), "--exit-when-done",
                           "--events", str(events_path)], cwd=ROOT, env={**pipeline_env(tmp_path), **env},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = MetricsStore(tmp_path / "state", run_id="test")
    sessions = store.recent()
    store.close()
    return read_events(events_path), sessions, proc.stderr


def enroll(tmp_path: Path, name: str, voice: str) -> None:
    phrases = ("Hey Jarvis, good morning to you.", "Please tell me the weather for tomorrow.",
               "I would like to know what time the museum opens.")
    wavs = [str(write_wav16(tmp_path / f"enroll-{i}.wav", pad(synth(p, voice), 0.1, 0.2)))
            for i, p in enumerate(phrases)]
    proc = subprocess.run([sys.executable, "-m", "pipeline", "enroll", name, *wavs], cwd=ROOT,
                          env=pipeline_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_verified_wakes_with_speakers_and_a_silent_near_miss(tmp_path, models):
    """Also the skills contract: a skill restricted to enrolled speakers answers only them."""
    enroll(tmp_path, "ada", ENROLLED_VOICE)
    wav = conversation(tmp_path / "talk.wav", [
        ("Hey Jarvis, what time is it?", ENROLLED_VOICE),
        ("I bought jars of honey at the market.", "flite:kal"),
        ("Hey Jarvis, what time is it?", STRANGER_VOICE),
    ])
    # Every proposal goes to the verifier here, however sure the proposer is.
    events, sessions, stderr = run(wav, tmp_path, VIGIL_SKILLS__ENROLLED_ONLY="time", VIGIL_WAKE__SURE_THRESHOLD="1.0")
    kinds = [e["type"] for e in events]
    wakes = [e for e in events if e["type"] == "wake"]
    assert len(wakes) == 2, f"{kinds}\n{stderr[-3000:]}"
    assert all(isinstance(w["verify_score"], float) for w in wakes), wakes  # each one checked by the verifier
    responses = [e for e in events if e["type"] == "response"]
    assert len(responses) == 2, kinds
    assert "jars" not in " ".join(r["transcript"].lower() for r in responses)  # the near miss got no answer
    assert [r["speaker"] for r in responses] == ["ada", "unknown"], responses
    assert responses[0]["route"] == "skill:time" and any(ch.isdigit() for ch in responses[0]["text"])
    assert responses[1]["text"].startswith("Sorry, only enrolled"), responses[1]
    speakers = [e for e in events if e["type"] == "speaker"]
    assert [s["name"] for s in speakers] == ["ada", "unknown"] and speakers[0]["score"] > speakers[1]["score"]
    for rejected in (e for e in events if e["type"] == "wake_rejected"):
        assert set(rejected) >= {"seq", "score", "heard"}
    # Speaker ID ran while STT was hearing the request, from the same shared audio.
    assert [overlap(s["marks"]) for s in sessions] == [True, True], [s["marks"] for s in sessions]


@pytest.fixture(scope="module")
def one_request_three_choices(tmp_path_factory, models) -> tuple[list[dict], list[dict], str]:
    """One request through one pipeline with three selectable paths at once (each test below reads its own):
    speaker ID 4 s late, the wake without its verifier, and a turn threshold strict enough that Smart Turn is
    loaded and asked."""
    tmp_path = tmp_path_factory.mktemp("three-choices")
    wav = conversation(tmp_path / "talk.wav", [("Hey Jarvis, what is the capital of France?", STRANGER_VOICE)])
    return run(wav, tmp_path, VIGIL_SPEAKER__FAULT_DELAY_MS="4000", VIGIL_WAKE__VERIFY="off",
               VIGIL_STT__TURN_THRESHOLD="0.8")


def test_a_slow_speaker_id_never_holds_the_answer(one_request_three_choices):
    events, sessions, stderr = one_request_three_choices
    responses = [e for e in events if e["type"] == "response"]
    assert len(responses) == 1, f"{[e['type'] for e in events]}\n{stderr[-3000:]}"
    assert responses[0]["speaker"] == "unknown" and not responses[0]["degraded"]
    # The answer went out without the speaker: its result, 4 s late, found the session already over.
    assert not [e for e in events if e["type"] == "speaker"]
    assert "speaker" not in sessions[0]["marks"] and "first_token" in sessions[0]["marks"]


def test_single_stage_wake_and_the_turn_model_stay_selectable(one_request_three_choices):
    """Wake without the verifier; Smart Turn's score is recorded with the session's spans."""
    events, sessions, stderr = one_request_three_choices
    wakes = [e for e in events if e["type"] == "wake"]
    assert len(wakes) == 1 and wakes[0]["verify_score"] is None, stderr[-3000:]
    assert [e for e in events if e["type"] == "response"]
    assert "turn model not loaded" not in stderr
    scores = [s["spans"]["endpoint_score"] for s in sessions if "endpoint_score" in s["spans"]]
    assert len(scores) == 1 and 0.0 <= scores[0] <= 1.0, (sessions, stderr[-3000:])


def test_an_utterance_start_wakes_when_the_engine_does_not(tmp_path, models):
    """The onset proposer: openWakeWord held out (proposal threshold 0.99, sure never), a fast low voice's
    "hey jarvis" is still proposed at its start, verified, and the request is heard from the end of the
    wake phrase the verifier aligned; a near miss at an utterance start is turned down silently."""
    fast = tts_samples("Hey Jarvis, what time is it?", "espeak-ng", "en+m7", rate=220)
    wav = write_wav16(tmp_path / "talk.wav", np.concatenate([
        np.zeros(2 * 16_000, np.int16), fast, np.zeros(3 * 16_000, np.int16),
        pad(synth("Hey Travis, can you pass the salt?", "flite:slt"), 0.1, 3.0)]))
    events, _, stderr = run(wav, tmp_path, VIGIL_WAKE__PROPOSAL_THRESHOLD="0.99", VIGIL_WAKE__SURE_THRESHOLD="1.0")
    wakes = [e for e in events if e["type"] == "wake"]
    assert [w["engine"] for w in wakes] == ["onset"], f"{[e['type'] for e in events]}\n{stderr[-3000:]}"
    assert wakes[0]["verify_score"] > 0.66
    responses = [e for e in events if e["type"] == "response"]
    assert len(responses) == 1 and responses[0]["route"] == "skill:time", responses
    assert responses[0]["transcript"].lower().startswith("what time"), responses
    rejected = [e for e in events if e["type"] == "wake_rejected"]
    assert rejected and all(r["score"] == 0.0 for r in rejected), rejected  # the near miss's onset proposal
