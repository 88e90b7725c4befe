"""Stop paths of `python -m pipeline run`: SIGTERM at any moment of its life stops it within a few
seconds and leaves no shared-memory segment and no process behind.

- while the parent is still importing and provisioning (before any segment exists);
- while the workers load their models (before capture has even started);
- while a killed worker waits out its restart backoff, and while its replacement loads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.test_pipeline_e2e import ROOT, free_port, healthz, pipeline_env, spoken_request, wait_for, worker_pids

STOP_WITHIN_S = 8.0


@pytest.fixture(scope="module")
def request_wav(tmp_path_factory) -> Path:
    return spoken_request(tmp_path_factory.mktemp("audio") / "request.wav")


def start(request_wav: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "--input", str(request_wav), "--loop",
         "--events", str(tmp_path / "events.jsonl"), *extra],
        cwd=ROOT, env=pipeline_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def sigterm_and_check(proc: subprocess.Popen, seen: set[int]) -> float:
    """SIGTERM; the run must end in time, and nothing of it may remain. Returns the stop time."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"no exit 30 s after SIGTERM\n{proc.stderr.read()[-3000:]}")
    took = time.monotonic() - started
    stderr = proc.stderr.read()
    assert took < STOP_WITHIN_S, f"took {took:.1f} s to stop\n{stderr[-3000:]}"
    gone = wait_for(lambda: not [p for p in seen if psutil.pid_exists(p)
                                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE], 5, 0.1)
    assert gone, f"processes left: {[p for p in seen if psutil.pid_exists(p)]}"
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"vigil-{proc.pid}-")], stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return took


@pytest.mark.parametrize("delay_s", [0.05, 0.4, 1.0])
def test_sigterm_while_starting_up(request_wav, tmp_path, models, delay_s):
    """Early: imports, config, model checks, segment creation — the signal may land anywhere in them."""
    proc = start(request_wav, tmp_path)
    time.sleep(delay_s)
    seen = set(worker_pids(psutil.Process(proc.pid)).values())
    sigterm_and_check(proc, seen)
    assert proc.returncode in (0, -signal.SIGTERM), proc.returncode


def test_sigterm_while_workers_load_their_models(request_wav, tmp_path, models):
    proc = start(request_wav, tmp_path)
    parent = psutil.Process(proc.pid)
    pids = wait_for(lambda: (lambda found: found if len(found) >= 3 else None)(worker_pids(parent)), 30, 0.02)
    assert pids, "the workers were not spawned"
    assert "capture" not in pids  # capture starts only once the others have loaded: we are mid-load
    time.sleep(0.3)  # into the model loading itself
    pids = worker_pids(parent)
    assert "capture" not in pids
    sigterm_and_check(proc, set(pids.values()))
    assert proc.returncode == 0


@pytest.mark.parametrize("moment", ["backoff", "reloading"])
def test_sigterm_while_a_killed_worker_restarts(request_wav, tmp_path, models, moment):
    port = free_port()
    env_backoff = "3.0" if moment == "backoff" else "0.1"
    os.environ["VIGIL_SUPERVISOR__BACKOFF_INITIAL_S"] = env_backoff
    try:
        proc = start(request_wav, tmp_path, "--http", f"127.0.0.1:{port}")
    finally:
        del os.environ["VIGIL_SUPERVISOR__BACKOFF_INITIAL_S"]
    parent = psutil.Process(proc.pid)
    try:
        up = wait_for(lambda: (h := healthz_or_none(port)) and h["status"] == "ok" and len(h["workers"]) >= 5, 120)
        assert up, "the pipeline did not come up"
        pids = worker_pids(parent)
        seen = set(pids.values())
        os.kill(pids["stt"], signal.SIGKILL)
        if moment == "backoff":  # the supervisor noticed, and waits 3 s before the restart
            assert wait_for(lambda: healthz_or_none(port)["workers"]["stt"]["state"] == "restarting", 5, 0.05)
            assert worker_pids(parent).get("stt") is None
        else:  # the replacement is spawned and loading its model
            assert wait_for(lambda: worker_pids(parent).get("stt") not in (None, pids["stt"]), 10, 0.02)
            assert healthz_or_none(port)["workers"]["stt"]["state"] == "starting"
        seen |= set(worker_pids(parent).values())
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    sigterm_and_check(proc, seen)
    assert proc.returncode == 0


def healthz_or_none(port: int) -> dict | None:
    try:
        return healthz(port)
    except OSError:
        return None
