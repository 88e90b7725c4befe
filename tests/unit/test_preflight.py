"""`python -m pipeline run` with a bad value stops before anything starts: one line naming the key.

Each value here once put a worker in a crash loop (and left the kiosk deaf for 90 s at every
start) or was accepted in silence. Now the run ends with exit 2 and one line, before any model
is provisioned, any process spawned or any shared memory made -- so these tests are fast. The
`report` and `enroll` commands on damaged files give one line too, never a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.synth import write_wav16
from tests.conftest import our_processes

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vigil" / "models"


def vigil_segments_of(pid: int) -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"vigil-{pid}-")]


def run_vigil(args: list[str], tmp_path: Path, env: dict[str, str] | None = None,
              toml: str | None = None) -> tuple[subprocess.CompletedProcess, float]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    environ.update({"VIGIL_METRICS__STATE_DIR": str(tmp_path / "state"),
                    "VIGIL_MODELS__DIR": str(tmp_path / "no-models"), **(env or {})})
    if toml is not None:
        (tmp_path / "vigil.toml").write_text(toml)
        args = [*args, "--config", str(tmp_path / "vigil.toml")]
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not vigil_segments_of(proc.pid), "shared memory was created"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - started


@pytest.fixture
def quiet_wav(tmp_path) -> Path:
    return write_wav16(tmp_path / "quiet.wav", np.zeros(16_000, dtype=np.int16))


def busy_port() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


# Each: environment, vigil.toml, extra arguments, what the one line must say.
CASES = {
    "stt model missing": ({"VIGIL_STT__MODEL": "/nonexistent/ggml.bin"}, None, [],
                          "[stt] model: whisper model /nonexistent/ggml.bin: file does not exist"),
    "llm model missing": ({"VIGIL_LLM__MODEL": "/nonexistent/m.gguf"}, None, [], "[llm] model: "),
    "llama.cpp aborts on a negative repeat penalty": ({"VIGIL_LLM__REPEAT_PENALTY": "-3.0"}, None, [],
                                                      "[llm] repeat_penalty must be > 0"),
    "heartbeat shorter than a beat": ({"VIGIL_SUPERVISOR__HEARTBEAT_TIMEOUT_S": "0.001"}, None, [],
                                      "[supervisor] heartbeat_timeout_s must be >= 1"),
    "events folder missing": ({}, None, ["--events", "/nonexistent_dir/ev.jsonl"],
                              "--events /nonexistent_dir/ev.jsonl: no such directory"),
    "state dir is a file": ({"VIGIL_METRICS__STATE_DIR": "{tmp}/a-file"}, None, [], "[metrics] state_dir"),
    "skill typos": ({}, '[skills]\nallowed = "tme,date,timr"\n', [],
                    "[skills] allowed: no skill named 'tme' (did you mean 'time'?)"),
    "one underscore": ({"VIGIL_STT_THREADS": "2"}, None, [],
                       "VIGIL_STT_THREADS: not a setting (did you mean VIGIL_STT__THREADS?"),
    "key typo": ({"VIGIL_STT__THRADS": "2"}, None, [], "unknown key 'thrads' in [stt] (did you mean 'threads'?)"),
    "threshold beyond a cosine": ({"VIGIL_SPEAKER__THRESHOLD": "5.0"}, None, [], "[speaker] threshold"),
    "negative temperature": ({}, "[llm]\ntemperature = -5.0\n", [], "[llm] temperature must be >= 0"),
    "wake model typo": ({"VIGIL_WAKE__MODEL": "hey_jarvs"}, None, [], "(did you mean 'hey_jarvis'?)"),
    "corrupt stt model": ({"VIGIL_STT__MODEL": "{tmp}/a-file"}, None, [], "[stt] model: whisper model"),
    "corrupt speaker weights": ({"VIGIL_SPEAKER__MODEL_DIR": "{tmp}/a-file"}, None, [], "[speaker] model_dir: "),
    "public http without a token": ({}, None, ["--http", "0.0.0.0:0"], "[http] host '0.0.0.0' is not loopback"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_value_stops_before_start_with_one_line_naming_it(case, tmp_path, quiet_wav):
    env, toml, extra, needle = CASES[case]
    (tmp_path / "a-file").write_bytes(b"not a model and not a folder\n" * 10)
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    proc, took = run_vigil(["run", "--input", str(quiet_wav), "--exit-when-done", "--max-seconds", "30", *extra],
                           tmp_path, env, toml)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr[-3000:])
    assert lines[0].startswith("vigil: error: ") and needle in lines[0], lines[0]
    assert not (tmp_path / "no-models").exists(), "models were provisioned before the check"
    assert not (tmp_path / "state").exists(), "the state dir was created"
    assert our_processes() == []
    assert took < 15, f"{took:.1f} s: the check must come before anything loads"


def test_an_http_port_in_use_is_one_line(tmp_path, quiet_wav):
    with busy_port() as sock:
        port = sock.getsockname()[1]
        proc, _ = run_vigil(["run", "--input", str(quiet_wav), "--exit-when-done", "--http", f"127.0.0.1:{port}"],
                            tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert f"[http] port {port} on 127.0.0.1 is already in use" in lines[0]


def test_several_problems_are_one_line_each(tmp_path, quiet_wav):
    proc, _ = run_vigil(["run", "--input", str(quiet_wav), "--events", "/nonexistent_dir/ev.jsonl"], tmp_path,
                        {"VIGIL_STT__MODEL": "/nonexistent/ggml.bin", "VIGIL_SKILLS__ENROLLED_ONLY": "timr"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 3, proc.stderr
    assert [line.split(": ", 2)[2].split(" ")[0] for line in lines] == ["--events", "[skills]", "[stt]"], lines


# ---- report: a corrupt store says so; a broken row is skipped and counted ---------------------

def test_report_on_a_corrupt_metrics_db_says_so_and_exits_non_zero(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "metrics.db").write_bytes(b"this is not an sqlite database" * 100)
    proc, _ = run_vigil(["report"], tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "metrics.db is corrupt" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_report_skips_and_counts_a_broken_row(tmp_path):
    from pipeline.metrics_store import MetricsStore

    store = MetricsStore(tmp_path / "state", run_id="t")
    for session in (1, 2, 3):
        store.record(session, transcript="what time is it", speaker="unknown", route="skill:time", degraded=False,
                     response="It's noon.", spans={"speech_end_to_first_token": 100.0 * session}, marks={"wake": 1})
    store.close()
    db = sqlite3.connect(tmp_path / "state" / "metrics.db")
    db.execute("UPDATE sessions SET spans_json = '{\"broken' WHERE session = 2")
    db.commit()
    db.close()
    proc, _ = run_vigil(["report"], tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("2 session(s) from") and "(1 broken row(s) skipped)" in proc.stdout, proc.stdout
    proc, _ = run_vigil(["report", "--json"], tmp_path)
    assert json.loads(proc.stdout)["skipped_rows"] == 1
    proc, _ = run_vigil(["report", "--trace", str(tmp_path)], tmp_path)  # a folder, not a file
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ---- enroll on a damaged voiceprint file: one line, exit 2, the file untouched -----------------

@pytest.mark.parametrize("damage", [
    {"speakers": {"alice": 5}},
    {"version": 1, "engine": "resemblyzer", "dim": 256, "speakers": {"alice": {"embedding": ["x"] * 256}}},
    {"version": 1, "engine": "resemblyzer", "dim": 256,
     "speakers": {"alice": {"embedding": [0.1] * 256, "utterances": 3, "enrolled_at": "yesterday"}}},
])
def test_enroll_on_a_damaged_voiceprint_file_is_one_line_and_keeps_the_file(damage, tmp_path):
    from bench.synth import synthesize

    folder = tmp_path / "state" / "voiceprints"
    folder.mkdir(parents=True)
    damaged = json.dumps(damage).encode()
    (folder / "resemblyzer.json").write_bytes(damaged)
    voice = synthesize("Good morning, my name is Carol and I would like to enroll.", tmp_path / "carol.wav",
                       engine="flite", pad_s=0.2)
    env = {"VIGIL_MODELS__DIR": str(MODELS)}  # the provisioned speaker weights
    for args in (["enroll", "--list"], ["enroll", "--delete", "alice"], ["enroll", "Carol", str(voice)]):
        proc, _ = run_vigil(args, tmp_path, env)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.stderr[-2000:])
        assert "resemblyzer.json" in lines[0] and "Traceback" not in proc.stderr, lines
        assert (folder / "resemblyzer.json").read_bytes() == damaged, f"{args} rewrote the damaged file"
    assert sorted(p.name for p in folder.iterdir()) == ["resemblyzer.json"]
