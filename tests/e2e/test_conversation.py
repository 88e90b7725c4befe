"""A kiosk conversation through the real pipeline: barge-in, LLM, skills, a timer, and the Ollama engine.

Speech is synthesized; the pipeline is `python -m pipeline run --input ... --exit-when-done`.
"""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.synth import synthesize, write_wav16
from tests.e2e.test_pipeline_e2e import ROOT, free_port, pipeline_env, read_events, wait_for
from core.audio import load_wav


def conversation_wav(path: Path, turns: list[tuple[str, float]], lead_s: float = 2.0, voice: str = "kal") -> Path:
    """Requests (flite `voice`) separated by the given silences (seconds after each one)."""
    parts = [np.zeros(int(lead_s * 16_000), dtype=np.int16)]
    for i, (text, pause_s) in enumerate(turns):
        speech = load_wav(synthesize(text, path.with_suffix(f".{i}.wav"), engine="flite", voice=voice, pad_s=0.1))
        parts += [speech, np.zeros(int(pause_s * 16_000), dtype=np.int16)]
    return write_wav16(path, np.concatenate(parts))


def run(wav: Path, tmp_path: Path, env: dict | None = None, timeout: float = 300) -> list[dict]:
    events_path = tmp_path / "events.jsonl"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", "--input", str(wav), "--exit-when-done",
                           "--events", str(events_path)], cwd=ROOT, env={**pipeline_env(tmp_path), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_events(events_path)


def by_session(events: list[dict], kind: str) -> dict[int, dict]:
    return {e["session"]: e for e in events if e["type"] == kind}


def test_barge_in_skills_and_timer(tmp_path, models):
    wav = conversation_wav(tmp_path / "talk.wav", [
        ("Hey Jarvis, tell me a long story about a brave dragon and a princess.", 0.2),
        ("Hey Jarvis, what is the capital of France?", 2.5),
        ("Hey Jarvis, set a timer for three seconds.", 2.5),
        ("Hey Jarvis, what time is it?", 6.0),
    ], voice="slt")  # whisper tiny.en hears kal's "set a timer" as "was set at a time"
    # A long answer, so the second wake arrives while the first is still streaming.
    events = run(wav, tmp_path, env={
        "VIGIL_LLM__MAX_TOKENS": "300", "VIGIL_LLM__TEMPERATURE": "0.0",
        "VIGIL_LLM__SYSTEM_PROMPT": "You are Vigil, a storyteller in a public kiosk. Answer in English. "
                                    "Tell long, detailed stories when asked; answer facts in one sentence."})
    wakes = [e for e in events if e["type"] == "wake"]
    assert len(wakes) == 4, [e["type"] for e in events]
    responses = by_session(events, "response")
    first, second, third, fourth = (w["session"] for w in wakes)
    # Barge-in: the story was cut off (no response), the next question answered normally by the LLM,
    # which proves the engine stopped generating the story in time to take it.
    assert first not in responses
    assert [e for e in events if e["type"] == "token" and e["session"] == first], "the story never started"
    story_tokens_after = [e for e in events if e["type"] == "token" and e["session"] == first
                          and events.index(e) > events.index(wakes[1])]
    assert not story_tokens_after
    assert responses[second]["route"] == "llm" and not responses[second]["degraded"]
    assert "paris" in responses[second]["text"].lower()
    # Skills answer what must be exact.
    assert responses[third]["route"] == "skill:timer" and not responses[third]["degraded"]
    assert responses[fourth]["route"] == "skill:time"
    spoken = responses[fourth]["text"]
    now = datetime.datetime.now()
    hour = re.search(r"\b(\d{1,2}):(\d{2})\b", spoken)
    assert hour, spoken
    assert int(hour.group(2)) in {(now - datetime.timedelta(minutes=m)).minute for m in range(0, 6)}, spoken
    # The timer went off later, as its own announcement.
    woken = {w["session"] for w in wakes}
    later = [e for e in events if e["type"] == "response" and e["route"] == "skill:timer" and e["session"] not in woken]
    assert later and "done" in later[0]["text"].lower(), [e for e in events if e["type"] == "response"]
    # Skill answers are fast: their latency is measured like any other.
    assert responses[fourth]["latency_ms"]["speech_end_to_first_token"] > 0


def test_ollama_engine_answers_through_serve_llm(tmp_path, models):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "pipeline", "serve-llm", "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import urllib.request

        def up():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=1) as reply:
                    return reply.status == 200
            except OSError:
                return False

        assert wait_for(up, 60), "serve-llm did not come up"
        wav = conversation_wav(tmp_path / "q.wav", [("Hey Jarvis, what is the capital of France?", 1.5)])
        events = run(wav, tmp_path, env={"VIGIL_LLM__ENGINE": "ollama", "OLLAMA_HOST": f"http://127.0.0.1:{port}",
                                         "VIGIL_LLM__MODEL": "smollm2:135m"})
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    responses = [e for e in events if e["type"] == "response"]
    assert len(responses) == 1 and responses[0]["route"] == "llm", events[-5:]
    assert not responses[0]["degraded"] and "paris" in responses[0]["text"].lower(), responses[0]
    assert server.returncode == 0, server.stderr.read()[-2000:]


def test_a_dead_ollama_still_gets_a_friendly_answer(tmp_path, models):
    wav = conversation_wav(tmp_path / "q.wav", [("Hey Jarvis, what is the capital of France?", 1.5)])
    started = time.monotonic()
    events = run(wav, tmp_path, env={"VIGIL_LLM__ENGINE": "ollama", "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}"})
    responses = [e for e in events if e["type"] == "response"]
    assert len(responses) == 1 and responses[0]["degraded"] is True
    assert responses[0]["text"] == "Sorry, I can't answer that right now."
    assert responses[0]["latency_ms"]["transcript_to_first_token"] < 1500 + 500
    assert time.monotonic() - started < 120
