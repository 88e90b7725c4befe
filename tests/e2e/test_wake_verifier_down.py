"""A wake verifier that cannot start says so at start-up, and wake still works.

The real pipeline runs with a models folder whose CTranslate2 model lacks its vocabulary (every
other model is the real one, linked): the forced verifier cannot load. Before anyone speaks, the
event stream must carry an `error` from stt and /healthz must be degraded with the reason; then
a spoken request is still heard (the proposer's own score decides), not silently rejected.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_pipeline_e2e import (ROOT, free_port, healthz, pipeline_env, read_events, spoken_request, stop,
                                         wait_for)


def models_without_ct2_vocabulary(real: Path, folder: Path) -> Path:
    """Every provisioned model linked, the CTranslate2 folder without vocabulary.txt (so unusable)."""
    folder.mkdir()
    for entry in real.iterdir():
        if entry.name != "ct2-whisper-tiny.en":
            (folder / entry.name).symlink_to(entry)
    ct2 = folder / "ct2-whisper-tiny.en"
    ct2.mkdir()
    for name in ("model.bin", "config.json"):
        (ct2 / name).symlink_to(real / "ct2-whisper-tiny.en" / name)
    shutil.copy2(real / "ct2-whisper-tiny.en" / "model.bin.sha256", ct2)  # still "provisioned" for ensure_models
    return folder


def test_unusable_verifier_is_an_error_at_start_and_wake_still_works(tmp_path, models):
    broken = models_without_ct2_vocabulary(models.whisper.parent, tmp_path / "models")
    wav = spoken_request(tmp_path / "request.wav", "Hey Jarvis, what time is it?")
    events_path = tmp_path / "events.jsonl"
    port = free_port()
    env = pipeline_env(tmp_path)
    env["VIGIL_MODELS__DIR"] = str(broken)
    env["VIGIL_WAKE__VERIFY"] = "forced"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "--input", str(wav), "--loop", "--events", str(events_path),
         "--http", f"127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        def stt_error():
            return [e for e in read_events(events_path) if e["type"] == "error" and e.get("where") == "stt"]

        errors = wait_for(stt_error, 90)
        assert errors, f"no error event from stt (exit {proc.poll()})"
        assert "wake verifier 'forced' unavailable" in errors[0]["message"], errors
        assert "vocabulary" in errors[0]["message"], errors  # the reason, not just "failed"
        health = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(healthz(port)), 10)
        assert health, healthz(port)
        assert "wake verifier" in health["workers"]["stt"]["detail"], health
        # The error came before anyone spoke: the first wake, if any yet, follows it.
        kinds = [e["type"] for e in read_events(events_path)]
        assert "wake" not in kinds or kinds.index("error") < kinds.index("wake"), kinds

        wakes = wait_for(lambda: [e for e in read_events(events_path) if e["type"] == "wake"], 60)
        assert wakes, [e["type"] for e in read_events(events_path)]
        assert wakes[0]["verify_score"] is None  # accepted on the proposer's score: no verifier ran
        assert wait_for(lambda: [e for e in read_events(events_path) if e["type"] == "transcript" and e["final"]], 30)
    finally:
        stop(proc)
    if proc.returncode != 0:
        pytest.fail(proc.stderr.read()[-3000:])
