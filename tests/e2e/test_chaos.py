"""Chaos, short: the real pipeline hears the quick corpus in a loop through a virtual microphone
(a private PulseAudio source) while its workers are killed with SIGKILL and frozen with SIGSTOP at
random moments, and the microphone itself is taken away (`python -m pipeline chaos`, ~27 s of faults).

Every fault must be recovered (a new worker process beating; for the microphone, the *same* capture
process on the device again, having shown `no_device` in /healthz meanwhile), the parent must live
through all of them, answers must come again after the last one, and a SIGTERM must leave no
shared-memory segment and no process (zombie or not) behind.
"""

from __future__ import annotations

import json
import os

import psutil
import pytest

from bench.chaos import MIC, run_chaos
from bench.pulse import pulse_available

WORKERS = ("capture", "wakeword", "stt", "llm", "responder")


@pytest.mark.skipif(not pulse_available(), reason="pulseaudio is not installed (make test installs it)")
def test_chaos_every_fault_recovers_and_answers_resume(tmp_path, models):
    lines: list[str] = []
    report = run_chaos(0.45, seed=180, out=tmp_path, min_gap_s=4.0, max_gap_s=6.0, heartbeat_timeout_s=5.0,
                       settle_s=5.0, workers=WORKERS, env={"VIGIL_LLM__TEMPERATURE": "0.0"}, mic=True,
                       say=lines.append)
    detail = json.dumps({k: v for k, v in report.items() if k != "faults"}, indent=1) + "\n" + "\n".join(lines)
    faults = report["faults"]
    # seed 180 begins: the sound server SIGKILLed (no input device at all, for 8 s), capture SIGKILL,
    # responder SIGSTOP
    assert len(faults) >= 3 and report["kills"] >= 1 and report["stops"] >= 1, detail
    assert [(f["worker"], f["kind"]) for f in faults[:3]] == [(MIC, "kill"), ("capture", "kill"),
                                                             ("responder", "stop")], detail
    assert report["unrecovered"] == [] and report["recoveries"] == len(faults), detail
    for f in faults:
        if f["worker"] == MIC:  # a state, not a restart: shown in /healthz, the same capture process back on it
            assert f["device_state"] in ("lost", "no_device") and f["detected_s"] < report["device_down_s"], f
            assert f["new_pid"] == f["pid"], f
            continue
        # a new process each time, and the old one is gone (SIGSTOPped ones were killed)
        assert f["new_pid"] not in (None, f["pid"]), f
        assert not psutil.pid_exists(f["pid"]) or psutil.Process(f["pid"]).status() == psutil.STATUS_ZOMBIE, f
    device = report["device"]
    assert device["faults"] >= 1 and device["undetected"] == [] and device["capture_restarted"] == [], detail
    assert device["recovered_s"]["max"] < 5.0, detail  # polled every <= 2 s, then opened
    assert not [u for u in report["unplanned"] if u["worker"] == "capture"], detail  # never taken for hung
    stop = next(f for f in faults if f["kind"] == "stop" and f["worker"] != MIC)
    assert stop["recovered_s"] >= 5.0 * 0.9, stop  # noticed through the silent heartbeat, not by luck
    assert report["recovery_s"]["p95"] < 30, detail
    assert report["parent_alive"] and report["health_at_end"] == "ok", detail
    assert report["answers_after_last_fault_s"] is not None and report["answers_after_last_fault_s"] < 40, detail
    assert report["answers"]["answered"] >= 2 and report["answers_last_minute"] >= 2, detail
    assert report["stop"]["exit_code"] == 0 and report["stop"]["seconds"] < 10, detail
    assert report["stop"]["segments_left"] == [] and report["stop"]["processes_left"] == [], detail
    assert report["zombies_while_running"] == [], detail
    # No ring wedged or damaged: every writer killed mid-write left a slot its reader skipped or its
    # successor rewrote, and the readers killed mid-read left their rings consumable.
    rings = report["rings"]
    assert {"audio", "stt.in", "llm.out", "responder.in"} <= set(rings), detail
    assert report["corrupt_slots"] == 0 and report["full_rings"] == [], detail
    assert report["ok"], detail
    saved = json.loads((tmp_path / os.listdir(tmp_path)[0] / "chaos.json").read_text())
    assert saved["kills"] == report["kills"] and saved["recovery_s"] == report["recovery_s"]
