"""The whole pipeline as an operator runs it: `python -m pipeline run`, real processes and models.

A synthesized spoken request is replayed through the capture worker's WAV source; the
tests read the JSONL event stream of the contract.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest

from bench.synth import synthesize, write_wav16
from tests.conftest import our_segments
from core.audio import load_wav

ROOT = Path(__file__).resolve().parents[2]
REQUEST = "Hey Jarvis, what is the capital of France?"


def spoken_request(path: Path, text: str = REQUEST, lead_s: float = 2.0, tail_s: float = 1.5) -> Path:
    """A request with silence before it (the wake detector's warm-up) and after it (the endpoint)."""
    voice = synthesize(text, path.with_suffix(".voice.wav"), engine="flite", pad_s=0.1)
    samples = load_wav(voice)
    silence = lambda s: np.zeros(int(s * 16_000), dtype=np.int16)  # noqa: E731
    return write_wav16(path, np.concatenate([silence(lead_s), samples, silence(tail_s)]))


def pipeline_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["VIGIL_METRICS__STATE_DIR"] = str(tmp_path / "state")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("VIGIL_LLM__TEMPERATURE", "0.0")  # greedy decoding: the same answer every run
    # --exit-when-done: every test WAV ends in >= 1.5 s of silence, so a last wake is verified and its session
    # open (or not) by the time the input ends; the product's 2 s grace would only add idle seconds per run.
    env.setdefault("VIGIL_SUPERVISOR__DONE_GRACE_S", "0.3")
    return env


def read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def request_wav(tmp_path_factory) -> Path:
    return spoken_request(tmp_path_factory.mktemp("audio") / "request.wav")


def test_spoken_request_is_answered_with_latency(request_wav, tmp_path, models):
    events_path = tmp_path / "events.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--input", str(request_wav), "--exit-when-done",
         "--events", str(events_path)],
        cwd=ROOT, env=pipeline_env(tmp_path), capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = read_events(events_path)
    kinds = [e["type"] for e in events]
    wakes = [e for e in events if e["type"] == "wake"]
    assert len(wakes) == 1, f"expected one wake, got {kinds}\n{proc.stderr[-3000:]}"
    transcripts = [e for e in events if e["type"] == "transcript" and e["final"]]
    assert transcripts, kinds
    # Transcribed during the endpoint silence: a partial with the same words comes before the final.
    partials = [e for e in events if e["type"] == "transcript" and not e["final"]]
    assert partials and partials[-1]["text"] == transcripts[0]["text"], partials
    assert events.index(partials[-1]) < events.index(transcripts[0])
    words = transcripts[0]["text"].lower()
    assert "capital" in words and "france" in words, words
    tokens = [e for e in events if e["type"] == "token"]
    responses = [e for e in events if e["type"] == "response"]
    assert tokens and len(responses) == 1
    response = responses[0]
    assert response["text"].strip() and response["route"] == "llm" and not response["degraded"]
    assert "".join(t["text"] for t in tokens).strip() == response["text"]
    latency = response["latency_ms"]
    for span in ("wake_to_first_token", "speech_end_to_first_token", "speech_end_to_transcript",
                 "transcript_to_first_token", "stt_compute"):
        assert latency.get(span, -1) > 0, (span, latency)
    assert latency["wake_to_first_token"] > latency["speech_end_to_first_token"]
    # Every event carries its type and a unix time; the order of the contract holds.
    assert all("t" in e and abs(e["t"] - time.time()) < 600 for e in events)
    assert kinds.index("wake") < kinds.index("transcript") < kinds.index("token") < kinds.index("response")
    assert "vigil: " in proc.stdout and "capital" in proc.stdout.lower()
    # at the default turn threshold the words decide, so Smart Turn is not loaded (its memory saved)
    assert "turn model not loaded" in proc.stderr
    # The session is in the metrics store, and `report` reads it back.
    report = subprocess.run([sys.executable, "-m", "pipeline", "report", "--json"], cwd=ROOT,
                            env=pipeline_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    spans = json.loads(report.stdout)["spans_ms"]
    assert spans["speech_end_to_first_token"]["n"] == 1


def worker_pids(parent: psutil.Process) -> dict[str, int]:
    found = {}
    for child in parent.children(recursive=True):
        try:
            title = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if title.startswith("vigil-"):
            found[title.split()[0][len("vigil-"):]] = child.pid
    return found


def wait_for(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM, as systemd or Ctrl-C would; kill only if the orderly stop hangs."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthz(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as err:  # 503 while degraded still carries the JSON
        return json.loads(err.read())


def check_live_metrics(text: str, pids: dict[str, int], uptime_s: float) -> None:
    """A live scrape: `promtool check metrics` accepts it, and the per-worker series are there with sane values
    (after one answer and one restart of stt)."""
    from prometheus_client.parser import text_string_to_metric_families

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (the Makefile's APT_TEST)"
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    samples = {(s.name, s.labels.get("worker") or s.labels.get("span") or s.labels.get("stage")): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    for name, pid in pids.items():
        rss = samples[("vigil_worker_resident_memory_bytes", name)]
        assert 20e6 < rss < 3e9, (name, rss)  # a Python process with its libraries, not a leak
        assert abs(rss - psutil.Process(pid).memory_info().rss) < 0.25 * rss, name  # the worker's, not the parent's
        cpu = samples[("vigil_worker_cpu_seconds_total", name)]
        assert 0 < cpu < 2 * uptime_s, (name, cpu)  # 2 cores
        assert samples[("vigil_worker_restarts_total", name)] == (1 if name == "stt" else 0), name
    # Base units: the answer's spans in seconds (a few, not thousands), and the renamed histograms only.
    assert samples[("vigil_latency_seconds_count", "speech_end_to_first_token")] >= 1
    assert 0 < samples[("vigil_latency_seconds_sum", "speech_end_to_first_token")] < 60
    assert 0 < samples[("vigil_stage_compute_seconds_sum", "stt")] < 60
    assert "milliseconds" not in text
    assert samples[("process_resident_memory_bytes", None)] > 20e6  # the parent's own


def test_killed_worker_is_restarted_and_sigterm_leaves_nothing(request_wav, tmp_path, models):
    events_path = tmp_path / "events.jsonl"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "--input", str(request_wav), "--loop",
         "--events", str(events_path), "--http", f"127.0.0.1:{port}"],
        cwd=ROOT, env=pipeline_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    parent_started = time.monotonic()
    try:
        parent = psutil.Process(proc.pid)
        responses = lambda: [e for e in read_events(events_path) if e["type"] == "response"]  # noqa: E731
        assert wait_for(lambda: len(responses()) >= 1, 120), "no first answer"
        pids = worker_pids(parent)
        assert set(pids) == {"capture", "wakeword", "stt", "speaker", "llm", "responder"}, pids
        health = healthz(port)
        assert health["status"] == "ok", health
        assert {name: w["pid"] for name, w in health["workers"].items()} == pids
        segments = our_segments()
        assert any(name.startswith(f"vigil-{proc.pid}-") for name in segments)
        answered = len(responses())
        os.kill(pids["stt"], signal.SIGKILL)
        restarted = wait_for(lambda: [e for e in read_events(events_path) if e["type"] == "worker"
                                      and e["name"] == "stt" and e["event"] == "restarted"], 30)
        assert restarted, "stt was not restarted"
        assert proc.poll() is None, "the parent died with its worker"
        assert wait_for(lambda: len(responses()) > answered, 90), "no answer after the restart"
        new_pids = worker_pids(parent)
        assert new_pids["stt"] != pids["stt"] and new_pids["llm"] == pids["llm"]
        health = healthz(port)
        assert health["workers"]["stt"]["restarts"] == 1 and health["workers"]["stt"]["pid"] == new_pids["stt"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            metrics = reply.read().decode()
        assert 'vigil_worker_restarts_total{worker="stt"} 1.0' in metrics, metrics[:2000]
        check_live_metrics(metrics, new_pids, time.monotonic() - parent_started)
    finally:
        stop(proc)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    assert not [n for n in our_segments() if n.startswith(f"vigil-{proc.pid}-")]
    assert not [p for p in pids.values() if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


def test_workers_exit_when_the_parent_is_killed_and_a_new_run_cleans_up(request_wav, tmp_path, models):
    from shm.segments import cleanup_stale

    events_path = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "--input", str(request_wav), "--loop", "--events", str(events_path)],
        cwd=ROOT, env=pipeline_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    parent = psutil.Process(proc.pid)
    pids = wait_for(lambda: (lambda found: found if len(found) == 5 else None)(worker_pids(parent)), 120)
    assert pids, "the workers did not all start"
    proc.kill()
    proc.wait()
    gone = wait_for(lambda: not [p for p in pids.values() if psutil.pid_exists(p)
                                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE], 15)
    assert gone, "orphaned workers outlived their supervisor"
    cleanup_stale()  # what the next `pipeline run` does first
    assert not [n for n in our_segments() if n.startswith(f"vigil-{proc.pid}-")]
