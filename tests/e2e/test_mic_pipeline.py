"""The pipeline on a real microphone path: PyAudio → PulseAudio virtual source (no sound card).

A private PulseAudio server with a 16 kHz null sink stands in for the kiosk's microphone;
`paplay` speaks a synthesized request into it while `python -m pipeline run` listens.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.pulse import VirtualMic, pulse_available
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


HEARTBEAT_TIMEOUT_S = 3.0


@pytest.mark.skipif(not pulse_available(), reason="pulseaudio is not installed (make test installs it)")
def test_a_microphone_missing_at_start_and_lost_mid_run_is_a_state_not_a_restart(tmp_path, models):
    """No sound server at start (no input device at all): the kiosk comes up degraded with
    `device: no_device` and its capture worker keeps beating (never taken for hung, never
    restarted); the device appears and is picked up; its source is unplugged mid-run (degraded
    again) and plugged back; a spoken request is answered; a SIGTERM in the no-device state is prompt."""
    from tests.e2e.test_pipeline_e2e import free_port, healthz

    wav = spoken_request(tmp_path / "request.wav", lead_s=0.5, tail_s=1.5)
    events_path = tmp_path / "events.jsonl"
    port = free_port()

    def capture() -> dict:
        return healthz(port)["workers"]["capture"] if _up(port) else {}

    with VirtualMic() as mic:
        mic.kill_server()
        env = {**pipeline_env(tmp_path), **mic.child_env(),
               "VIGIL_SUPERVISOR__HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S)}
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--events", str(events_path),
                                 "--http", f"127.0.0.1:{port}"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda: capture().get("device") == "no_device", 120), "no_device never reported"
            first = capture()
            time.sleep(2.5 * HEARTBEAT_TIMEOUT_S)  # a capture worker that stopped beating would be killed by now
            waited = healthz(port)
            assert waited["status"] == "degraded" and waited["workers"]["capture"]["device"] == "no_device", waited
            assert waited["workers"]["capture"]["pid"] == first["pid"] and waited["workers"]["capture"]["restarts"] == 0

            mic.restart_server()
            appeared_ns = time.monotonic_ns()
            started = wait_for(lambda: [e for e in read_events(events_path)
                                        if e["type"] == "input" and e["event"] == "started"], 10)
            assert started, "the device was not picked up"
            appear_to_first_frame_s = (started[0]["t0_ns"] - appeared_ns) / 1e9
            assert wait_for(lambda: healthz(port)["status"] == "ok", 10), healthz(port)

            mic.remove_source()  # the server stays up with no source: lost, then no_device on the next try
            assert wait_for(lambda: capture().get("device") == "no_device", 10), healthz(port)
            assert healthz(port)["status"] == "degraded"
            mic.restore_source()
            assert wait_for(lambda: healthz(port)["status"] == "ok", 10), healthz(port)
            time.sleep(1.0)  # let the reopened stream settle before speaking
            mic.play(wav)
            response = wait_for(lambda: [e for e in read_events(events_path) if e["type"] == "response"], 60)

            mic.kill_server()
            assert wait_for(lambda: capture().get("device") == "no_device", 10), healthz(port)
            last = capture()
        finally:
            t = time.monotonic()
            stop(proc)
            stop_s = time.monotonic() - t
    stderr = proc.stderr.read()
    events = read_events(events_path)
    print(f"\nno microphone at start: device appeared → first frame {appear_to_first_frame_s:.2f} s; "
          f"SIGTERM in no_device → exit {proc.returncode} in {stop_s:.2f} s")
    assert response and response[0]["text"].strip(), stderr[-3000:]
    assert proc.returncode == 0 and "did not stop" not in stderr, stderr[-3000:]
    assert last["pid"] == first["pid"] and last["restarts"] == 0, (first, last)
    capture_workers = [e for e in events if e["type"] == "worker" and e["name"] == "capture"]
    assert not [e for e in capture_workers if e["event"] in ("hung", "exited", "restarted")], capture_workers
    # One log line per state change, from one logger: no_device at start, after the unplug, after the kill.
    assert len([line for line in stderr.splitlines() if "no_device" in line]) == 3, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [e["message"] for e in events if e["type"] == "error" and e["where"] == "capture"]
    assert [m.split(":")[0] for m in errors] == ["no_device", "lost", "no_device", "lost", "no_device"], errors
    assert 0 <= appear_to_first_frame_s < 4.0


def _up(port: int) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
        return True
    except urllib.error.HTTPError:
        return True  # 503 while degraded: it is up
    except OSError:
        return False
