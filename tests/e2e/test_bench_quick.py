"""`python -m pipeline bench --quick`: the harness and its report work end to end (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_KEYS = {"spans_ms", "stages_ms", "baseline", "overhead_ms", "wake", "stt", "speaker", "idle", "drops",
                 "machine"}


# A few files of the quick corpus: one request per synthetic voice, the neural voice's complete and hesitant
# requests (the endpoint phase replays those) and a near miss. Every phase runs on them; the load case, the same
# replay back to back, is left to `make bench` (the CI budget: the whole quick corpus took ~5.5 min here).
SUBSET = ("espeak-en-us_command_what-time-is-it.wav", "flite-slt_question_what-is-the-capital-of-france.wav",
          "piper-joe_command_set-a-timer-for-five-minutes.wav", "piper-joe_hesitation_set-a-timer-for-ten-minutes.wav",
          "espeak-en-us_negative_hey-marvin-what-is-the-weather.wav")


def subset_corpus(folder: Path) -> Path:
    """A corpus folder whose manifest names SUBSET's files of the cached quick corpus by absolute path."""
    from bench.corpus import build_default_corpus
    from bench.runner import default_corpus_dir
    from core.config import load_config

    quick = build_default_corpus(default_corpus_dir(load_config(), True), quick=True, progress=False).parent
    lines = [json.loads(line) for line in (quick / "manifest.jsonl").read_text().splitlines() if line.strip()]
    chosen = [{**d, "wav": str(quick / d["wav"])} for d in lines if d["wav"] in SUBSET]
    assert len(chosen) == len(SUBSET), "the quick corpus no longer has these files: update SUBSET"
    folder.mkdir()
    (folder / "manifest.jsonl").write_text("".join(json.dumps(d) + "\n" for d in chosen))
    return folder


@pytest.mark.timeout(600)  # the harness on five files: every phase but load, ~3.5 min on a 2-core box
def test_quick_bench_writes_the_contract_report(tmp_path, models):
    out = tmp_path / "out"
    corpus = subset_corpus(tmp_path / "corpus")
    env_state = {"VIGIL_METRICS__STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.run([sys.executable, "-m", "pipeline", "bench", "--quick", "--corpus", str(corpus),
                           "--idle", "3", "--no-load", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env_state})
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1 = budget exceeded: a measurement, not a failure
    latest = out / "latest"
    assert latest.is_symlink() and (latest / "report.json").is_file()
    report = json.loads((latest / "report.json").read_text())
    assert CONTRACT_KEYS <= set(report)
    for span in ("speech_end_to_first_token", "wake_to_first_token"):
        assert set(report["spans_ms"][span]) >= {"p50", "p95", "p99", "n"}
        assert set(report["baseline"]["spans_ms"][span]) >= {"p50", "p95", "p99", "n"}
    assert report["spans_ms"]["speech_end_to_first_token"]["n"] >= 1, "no utterance was answered"
    # the neural voice's "set a timer for … ten minutes": the turn endpoint decodes the pause at once, sees the
    # open "for" and hears on; the request is answered whole
    hesitation = report["endpoint"]["modes"]["turn"]["hesitation"]
    assert hesitation["n"] == 1 and hesitation["cut_offs"] == 0, hesitation
    assert report["wake"]["detected"] >= 1 and report["wake"]["negatives_hours"] > 0
    assert report["stt"]["wer"] is not None and 0 <= report["stt"]["wer"] <= 1
    assert set(report["idle"]) >= {"cpu_percent_total", "cpu_percent_by_worker", "rss_mb_by_worker",
                                   "rss_slope_mb_per_h", "seconds"}
    assert {"capture", "wakeword", "stt", "speaker", "llm"} <= set(report["idle"]["rss_mb_by_worker"])
    # Speaker ID: corpus voices were enrolled before the replay, and strangers told apart.
    assert report["speaker"]["n"] >= 1 and 0 <= report["speaker"]["accuracy"] <= 1
    # The A/B replays ran on the same utterances: the speaker interval overlapped STT's.
    variants = report["variants"]
    assert set(variants) == {"default", "verify_off", "speaker_slow"}
    assert variants["default"]["answered"] >= 1 and variants["default"]["speaker_overlapped_stt"] >= 1
    assert set(report["machine"]) >= {"cpus", "model", "python"}
    assert report["budget"]["ok"] == (proc.returncode == 0)
    # each phase's figures were printed as it ended (bench/phase_lines.py), not only at the end
    printed = proc.stdout.splitlines()
    for phase in ("vigil ", "baseline ", "floor ", "idle ", "variants ", "wake ", "endpoint ", "skills: "):
        assert any(line.startswith(phase) for line in printed), (phase, proc.stdout[-3000:])
    md = (latest / "report.md").read_text()
    assert "**speech end → first token** (headline)" in md and "## Variants" in md and "## Endpointing" in md
    for png in ("latency_cdf.png", "stages.png", "idle.png"):
        data = (latest / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    trace = tmp_path / "trace.json"
    state = latest / "vigil" / "state"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "report", "--trace", str(trace)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "VIGIL_METRICS__STATE_DIR": str(state)})
    assert proc.returncode == 0, proc.stderr
    assert "speech_end_to_first_token" in proc.stdout
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e.get("ph") == "X" for e in events)
