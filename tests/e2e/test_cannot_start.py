"""A worker whose engine cannot start is reported once as failed, not restarted forever, not waited for.

1. The supervisor with real spawned workers: one whose setup() finds its model missing (a fault
   double) next to a healthy one. `wait_running` returns at once instead of after
   `start_timeout_s`, the broken worker is "failed" with its reason, one `error` event says so,
   and it is not restarted; the healthy one runs on.
2. The whole pipeline: the speaker weights file is damaged on disk while Vigil runs and the
   speaker worker is killed. Its replacement cannot load the file: it is reported once, stays
   down, `/healthz` says why, and spoken requests are still answered (speaker "unknown").
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil

from core.config import load_config
from engines.model_files import ModelError
from workers.base import EXIT_CANNOT_START, Worker


class MissingModelDouble(Worker):
    """Fault double: a worker whose model file is gone (setup raises ModelError, as the STT engine does)."""

    def setup(self) -> None:
        raise ModelError("whisper model /nonexistent/ggml.bin: file does not exist")


class HealthyDouble(Worker):
    """A worker that loads nothing and beats."""


# ---- 1. the supervisor ------------------------------------------------------------------------

def test_a_worker_that_cannot_start_is_failed_once_and_not_waited_for():
    from pipeline.supervisor import PipelineSupervisor
    from shm.heartbeat import HeartbeatTable
    from workers.base import WorkerSpec

    name = f"vigil-{os.getpid()}-cannot-start-heartbeat"
    heartbeat = HeartbeatTable.create(name, 2)
    config = load_config(None, environ={})
    config = dataclasses.replace(config, supervisor=dataclasses.replace(config.supervisor, backoff_initial_s=0.1,
                                                                        start_timeout_s=90.0))
    specs = [WorkerSpec(worker, f"tests.e2e.test_cannot_start:{entry}", row=row, heartbeat=name, heartbeat_rows=2)
             for row, (worker, entry) in enumerate([("stt", "MissingModelDouble"), ("wakeword", "HealthyDouble")])]
    events: list[dict] = []
    supervisor = PipelineSupervisor(config, specs, heartbeat, on_event=lambda e: events.append(e.to_dict()))
    try:
        started = time.monotonic()
        supervisor.start()
        came_up = supervisor.wait_running(["stt", "wakeword"], config.supervisor.start_timeout_s, lambda: True)
        waited = time.monotonic() - started
        assert not came_up and waited < 30, f"waited {waited:.1f} s for a worker that cannot start"
        assert supervisor.cannot_start() == {"stt": "whisper model /nonexistent/ggml.bin: file does not exist"}
        deadline = time.monotonic() + 3.0  # many backoffs of 0.1 s: a restart would have happened by now
        while time.monotonic() < deadline:
            supervisor.poll()
            time.sleep(0.05)
        health = supervisor.health()
        assert health["status"] == "degraded" and health["workers"]["wakeword"]["state"] == "running"
        assert health["workers"]["stt"]["state"] == "failed" and "ggml.bin" in health["workers"]["stt"]["reason"]
        stt = [e for e in events if e.get("name") == "stt" or e.get("where") == "stt"]
        assert [e.get("event", e["type"]) for e in stt] == ["started", "exited", "error"], stt
        assert stt[1]["exitcode"] == EXIT_CANNOT_START and "cannot start: whisper model" in stt[2]["message"]
    finally:
        supervisor.stop()
        heartbeat.close()
    assert all(h.process is None for h in supervisor.workers.values())


# ---- 2. the whole pipeline --------------------------------------------------------------------

def test_speaker_weights_damaged_while_running_fail_once_and_requests_are_still_answered(tmp_path, models):
    from models.provision import ensure_speaker_model
    from tests.e2e.test_pipeline_e2e import (
        ROOT,
        free_port,
        healthz,
        pipeline_env,
        read_events,
        spoken_request,
        wait_for,
        worker_pids,
    )

    weights = tmp_path / "pretrained.pt"
    shutil.copyfile(ensure_speaker_model(progress=False), weights)
    request = spoken_request(tmp_path / "request.wav", tail_s=4.0)
    events_path, port = tmp_path / "events.jsonl", free_port()
    env = {**pipeline_env(tmp_path), "VIGIL_SPEAKER__MODEL_DIR": str(weights)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--input", str(request), "--loop",
                             "--events", str(events_path), "--http", f"127.0.0.1:{port}"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    try:
        up = wait_for(lambda: healthz(port)["status"] == "ok" if _listening(port) else None, 120, 0.5)
        assert up, "the pipeline did not come up"
        seen.update(worker_pids(psutil.Process(proc.pid)).values())
        weights.write_bytes(b"\x80\x02 not a checkpoint any more" * 100)  # the disk damaged it
        killed_at = time.time()
        os.kill(worker_pids(psutil.Process(proc.pid))["speaker"], signal.SIGKILL)
        failed = wait_for(lambda: (h := healthz(port)["workers"]["speaker"])["state"] == "failed"
                          and "reason" in h and h, 30, 0.2)
        assert failed and "cannot start" in failed["reason"] and "pretrained.pt" in failed["reason"], failed
        reported_at = time.time()
        answered = wait_for(lambda: [e for e in read_events(events_path)
                                     if e["type"] == "response" and e["t"] > reported_at], 90, 0.5)
        assert answered, "no answer after the speaker worker failed"
        seen.update(worker_pids(psutil.Process(proc.pid)).values())
        time.sleep(3.0)  # well past the restart backoff: it must stay down
        events = read_events(events_path)
        after = [e for e in events if e["t"] >= killed_at]
        restarts = [e for e in after if e["type"] == "worker" and e["name"] == "speaker" and e["event"] == "restarted"]
        errors = [e for e in after if e["type"] == "error" and e["where"] == "speaker"]
        assert len(restarts) == 1, restarts  # the one after the kill; none after it could not start
        assert len(errors) == 1 and "cannot start" in errors[0]["message"], errors
        speakers = [e for e in events if e["type"] == "speaker" and e["t"] > reported_at]
        assert all(e["name"] == "unknown" for e in speakers), speakers
        assert healthz(port)["workers"]["speaker"]["state"] == "failed"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert not [p for p in seen if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"vigil-{proc.pid}-")]
    print(f"speaker reported failed {reported_at - killed_at:.1f} s after the kill", file=sys.stderr)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
