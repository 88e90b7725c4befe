"""`python -m pipeline doctor [--apply] [--json]`: real machine, real tiny.en model, real config file.

One full doctor run (module fixture, ~10-20 s) measures the real provisioned whisper tiny.en in a subprocess
and applies its recommendation to a config file; the other tests are fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from core.config import ConfigError, load_config
from tools.doctor import apply_settings, dumps_toml
from models.provision import WHISPER, ensure_models

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**clean, **(env or {})}, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    """doctor --apply --json on a models dir holding only the real tiny.en, against an existing config."""
    tiny = ensure_models(progress=False).whisper
    tmp = tmp_path_factory.mktemp("doctor")
    models = tmp / "models"
    models.mkdir()
    (models / WHISPER.filename).symlink_to(tiny)
    config = tmp / "conf" / "vigil.toml"
    config.parent.mkdir()
    config.write_text("# operator's file\n[http]\nport = 9911\n\n[stt]\nend_silence_ms = 900\nthreads = 2\n")
    inode_before = config.stat().st_ino
    proc = run_cli("doctor", "--apply", "--json", "--config", str(config),
                   env={"VIGIL_MODELS__DIR": str(models), "OLLAMA_HOST": "127.0.0.1:9"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout), config, inode_before


def test_doctor_reports_machine_and_measures_tiny(applied):
    report, _, _ = applied
    machine = report["machine"]
    assert machine["cpus"] >= 1 and machine["cpus_usable"] >= 1
    assert machine["mem_total_mb"] > 0 and len(machine["load_avg"]) == 3
    assert "inputs" in machine["audio"] and "running" in machine["pulseaudio"]
    assert report["engines"]["pywhispercpp"]["version"] == "1.5.1"
    assert report["engines"]["ollama_server"]["reachable"] is False  # port 9: nothing listens
    tiny = next(m for m in report["models"] if m["name"] == "tiny.en")
    assert tiny["present"] and tiny["valid"]
    measured = tiny["measured"]
    assert "error" not in measured, measured
    assert measured["rtf"] > 0 and measured["decode_ms"] > 0 and measured["load_ms"] > 0
    assert 50 < measured["rss_mb"] < 2000
    if measured["clip"] == "espeak-ng":  # the real model heard the real synthesized sentence
        assert "weather" in measured["text"].lower(), measured["text"]
    # The LLM is not in this models dir: reported missing, not measured, no crash.
    llm = [m for m in report["models"] if m["kind"] == "llm"]
    assert llm and all(not m["present"] and m["problem"] == "missing" and "measured" not in m for m in llm)
    assert report["recommendation"]["stt"] == "tiny.en"
    assert report["seconds"] < 60


def test_apply_writes_a_config_load_config_reads_back(applied):
    report, config, inode_before = applied
    loaded = load_config(config, environ={})
    settings = report["recommendation"]["settings"]
    assert loaded.http.port == 9911  # an unrelated existing key is kept
    assert loaded.stt.threads == 2
    assert loaded.stt.end_silence_ms == settings["stt"]["end_silence_ms"] != 900
    assert loaded.stt.model == settings["stt"]["model"] == ""  # tiny.en: the provisioned default
    changes = {c["key"]: c for c in report["applied"]["changes"]}
    assert changes["stt.end_silence_ms"]["old"] == 900
    # Atomic: a new file renamed over the old one (new inode), no temporary left beside it.
    assert config.stat().st_ino != inode_before
    assert sorted(p.name for p in config.parent.iterdir()) == ["vigil.toml"]


def test_apply_is_atomic_and_refuses_an_invalid_result(tmp_path):
    config = tmp_path / "vigil.toml"
    original = b"[wake]\nthreshold = 0.4\n"
    config.write_bytes(original)
    with pytest.raises(ConfigError):
        apply_settings(config, {"stt": {"threads": 0}})  # load_config rejects it before the rename
    assert config.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["vigil.toml"]
    changes = apply_settings(config, {"stt": {"end_silence_ms": 500}})
    assert changes == [("stt.end_silence_ms", changes[0][1], 500)]
    assert load_config(config, environ={}).wake.threshold == 0.4
    assert apply_settings(config, {"stt": {"end_silence_ms": 500}}) == []  # idempotent


def test_toml_writer_round_trips_awkward_values():
    data = {"llm": {"system_prompt": 'Say "hi"\\ to\n\tJürgen 😀', "temperature": 0.2, "max_tokens": 64,
                    "speculate": False},
            "skills": {"allowed": "time,date"}}
    assert tomllib.loads(dumps_toml(data)) == data


def test_missing_and_corrupt_models_are_reported_not_fatal(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    proc = run_cli("doctor", "--json", env={"VIGIL_MODELS__DIR": str(models), "OLLAMA_HOST": "127.0.0.1:9"},
                   timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    tiny = next(m for m in report["models"] if m["name"] == "tiny.en")
    assert tiny["present"] is False and tiny["problem"] == "missing" and "measured" not in tiny
    assert report["recommendation"]["stt"] is None and report["recommendation"]["estimate_ms"] is None

    (models / WHISPER.filename).write_bytes(b"\x00" * 4096)  # a corrupt file must never reach whisper.cpp
    proc = run_cli("doctor", env={"VIGIL_MODELS__DIR": str(models), "OLLAMA_HOST": "127.0.0.1:9"}, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bad magic" in proc.stdout and "no recommendation" in proc.stdout


@pytest.mark.parametrize("args", [["doctor", "--bogus"], ["doctor", "--apply", "extra"], ["doctor", "--json=1"]])
def test_bad_arguments_exit_2_with_one_line(args):
    proc = run_cli(*args, timeout=30)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "error" in proc.stderr
