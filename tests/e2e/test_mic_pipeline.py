"""The pipeline on a real microphone path: PyAudio → PulseAudio virtual source (no sound card).

A private PulseAudio server with a 16 kHz null sink stands in for the kiosk's microphone;
`paplay` speaks a synthesized request into it while `python -m pipeline run` listens.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.pulse import VirtualMic, pulse_available
from tests.e2e.test_pipeline_e2e import ROOT, pipeline_env, read_events, spoken_request, stop, wait_for


@pytest.mark.skipif(not pulse_available(), reason="pulseaudio is not installed (make test installs it)")
def test_microphone_request_is_heard_and_answered(tmp_path, models):
    wav = spoken_request(tmp_path / "request.wav", lead_s=0.5, tail_s=1.5)
    events_path = tmp_path / "events.jsonl"
    with VirtualMic() as mic:
        env = {**pipeline_env(tmp_path), **mic.child_env()}
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--events", str(events_path)],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            started = wait_for(lambda: [e for e in read_events(events_path)
                                        if e["type"] == "worker" and e["name"] == "capture"], 120)
            assert started, "capture never started"
            time.sleep(2.5)  # past the wake detector's warm-up
            mic.play(wav)
            response = wait_for(lambda: [e for e in read_events(events_path) if e["type"] == "response"], 60)
        finally:
            stop(proc)
    events = read_events(events_path)
    stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr[-2000:]
    assert [e for e in events if e["type"] == "wake"], stderr[-3000:]
    finals = [e for e in events if e["type"] == "transcript" and e["final"]]
    assert finals and "capital" in finals[0]["text"].lower() and "france" in finals[0]["text"].lower(), finals
    assert response and response[0]["text"].strip()
    assert not [e for e in events if e["type"] == "error" and e["where"] == "capture"], "the microphone failed"
    assert not [e for e in events if e["type"] == "drop" and e["ring"] == "audio"], "audio was lost"


@pytest.mark.skipif(not pulse_available(), reason="pulseaudio is not installed (make test installs it)")
def test_audio_server_loss_is_reported_degraded_and_recovers(tmp_path, models):
    """PulseAudio dies under a running kiosk: /healthz turns degraded, capture reconnects, answers resume."""
    from tests.e2e.test_pipeline_e2e import free_port, healthz

    wav = spoken_request(tmp_path / "request.wav", lead_s=0.5, tail_s=1.5)
    events_path = tmp_path / "events.jsonl"
    port = free_port()
    with VirtualMic() as mic:
        env = {**pipeline_env(tmp_path), **mic.child_env()}
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--events", str(events_path),
                                 "--http", f"127.0.0.1:{port}"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda: healthz(port)["status"] == "ok" if _up(port) else False, 120), "never healthy"
            mic.kill_server()
            degraded = wait_for(lambda: healthz(port)["workers"]["capture"].get("device") in ("lost", "no_device"), 15)
            assert degraded, healthz(port)
            assert healthz(port)["status"] == "degraded"
            assert proc.poll() is None, "the pipeline died with the audio server"
            mic.restart_server()
            assert wait_for(lambda: healthz(port)["status"] == "ok", 30), healthz(port)
            time.sleep(1.0)  # let the reconnected stream settle before speaking
            mic.play(wav)
            response = wait_for(lambda: [e for e in read_events(events_path) if e["type"] == "response"], 60)
        finally:
            stop(proc)
    errors = [e for e in read_events(events_path) if e["type"] == "error" and e["where"] == "capture"]
    assert errors, "the loss was not reported as an error event"
    assert response and response[0]["text"].strip(), proc.stderr.read()[-3000:]
    assert proc.returncode == 0


def _up(port: int) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
        return True
    except urllib.error.HTTPError:
        return True  # 503 while degraded: it is up
    except OSError:
        return False
