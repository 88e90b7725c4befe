"""Bench output: report.md + PNG plots from report.json, and the Perfetto trace export."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bench.render import render, route_kind
from pipeline.latency import percentiles
from tools.trace import TRACKS, sessions_to_trace, write_trace

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------- render

WORKERS = ("capture", "wakeword", "stt", "speaker", "llm", "responder")


def _utterance(rng: random.Random, i: int) -> dict:
    kind = rng.choice(["command", "question"])
    route = "skill:time" if kind == "command" else "llm"
    wake_to_speech_end = rng.uniform(1200, 2600)
    stt = rng.uniform(380, 650)
    endpoint = rng.uniform(250, 420)
    t2f = rng.uniform(3, 15) if route != "llm" else rng.uniform(60, 260)
    s2t = endpoint + stt
    vigil = {"wake_to_speech_end": wake_to_speech_end, "speech_end_to_transcript": s2t,
             "transcript_to_first_token": t2f, "speech_end_to_first_token": s2t + t2f,
             "wake_to_first_token": wake_to_speech_end + s2t + t2f, "stt_compute": stt,
             "llm_first_token_compute": t2f * 0.8 if route == "llm" else None}
    b_stt, b_speaker = stt * rng.uniform(1.0, 1.2), rng.uniform(25, 40)
    b_t2f = t2f * rng.uniform(1.0, 1.4) + b_speaker
    b_s2t = endpoint * rng.uniform(1.3, 1.8) + b_stt
    baseline = {"wake_to_speech_end": wake_to_speech_end, "speech_end_to_transcript": b_s2t,
                "transcript_to_first_token": b_t2f, "speech_end_to_first_token": b_s2t + b_t2f,
                "wake_to_first_token": wake_to_speech_end + b_s2t + b_t2f, "stt_compute": b_stt,
                "llm_first_token_compute": b_t2f * 0.8}
    return {"wav": f"corpus/{i:03d}_{kind}.wav", "kind": kind, "voice": rng.choice(["en-us", "kal", "en-gb"]),
            "wake_expected": True, "wake_detected": rng.random() > 0.1,
            "transcript_ref": "what time is it" if kind == "command" else "what is the capital of france",
            "transcript": "what time is it" if kind == "command" else "what is the capital of france",
            "route": route, "vigil": vigil, "baseline": baseline,
            "floor": {"stt_ms": stt * 0.95, "llm_first_token_ms": t2f * 0.7}}


def full_report(n_utterances: int = 40) -> dict:
    rng = random.Random(4)
    utterances = [_utterance(rng, i) for i in range(n_utterances)]
    utterances.append({"wav": "corpus/neg_noise.wav", "kind": "negative", "voice": "noise", "wake_expected": False,
                       "wake_detected": False, "transcript_ref": "", "transcript": None, "route": None,
                       "vigil": {}, "baseline": {}, "floor": {}})

    def spans_of(side: str, kind: str | None = None) -> dict:
        names = ["wake_to_speech_end", "speech_end_to_transcript", "transcript_to_first_token",
                 "speech_end_to_first_token", "wake_to_first_token"]
        out = {}
        for name in names:
            vals = [u[side][name] for u in utterances if name in u[side]
                    and (kind is None or route_kind(u["route"]) == kind)]
            out[name] = percentiles(vals)
        return out

    def stages_of(side: str) -> dict:
        out = {}
        for stage in ("stt_compute", "llm_first_token_compute"):
            p = percentiles([u[side][stage] for u in utterances if u[side].get(stage) is not None])
            out[stage] = {"p50": p["p50"], "p95": p["p95"]}
        return out

    spans, base = spans_of("vigil"), spans_of("baseline")
    floor = percentiles([u["floor"]["stt_ms"] + u["floor"]["llm_first_token_ms"] for u in utterances if u["floor"]])
    head = spans["speech_end_to_first_token"]
    samples = []
    for k in range(61):
        t = k * 10.0
        samples.append({"t": t, "cpu": {w: (3.0 if w == "wakeword" else 0.4) + rng.uniform(-0.3, 0.3) for w in WORKERS},
                        "rss_mb": {w: {"wakeword": 205, "stt": 190, "llm": 210, "speaker": 160}.get(w, 45)
                                   + 0.002 * t + rng.uniform(-0.2, 0.2) for w in WORKERS}})
    return {
        "run": "20260101-120000", "corpus": "bench/corpus/default", "passes": 2,
        "config": {"stt": {"engine": "whispercpp", "threads": 2}, "llm": {"engine": "xllamacpp", "threads": 1}},
        "spans_ms": spans,
        "spans_ms_by_route": {"llm": spans_of("vigil", "llm"), "skill": spans_of("vigil", "skill")},
        "stages_ms": stages_of("vigil"),
        "baseline": {"spans_ms": base, "stages_ms": stages_of("baseline")},
        "ratio_baseline_over_vigil": {"p50": base["speech_end_to_first_token"]["p50"] / head["p50"],
                                      "p95": base["speech_end_to_first_token"]["p95"] / head["p95"]},
        "floor_ms": {"p50": floor["p50"], "p95": floor["p95"]},
        "overhead_ms": {"p50": head["p50"] - floor["p50"], "p95": head["p95"] - floor["p95"]},
        "budget": {"budget_ms": 1500.0, "p95_ms": 980.0, "ok": True},
        "wake": {"detected": 36, "missed": 4, "false_wakes": 1, "negatives_hours": 0.25},
        "stt": {"wer": 0.083, "n": 40},
        "speaker": {"accuracy": None},
        "idle": {"cpu_percent_total": 5.1, "cpu_percent_by_worker": {w: 0.4 for w in WORKERS},
                 "rss_mb_by_worker": {w: 100.0 for w in WORKERS}, "rss_slope_mb_per_h": {w: 0.1 for w in WORKERS},
                 "seconds": 600, "samples": samples},
        "load": {"fed": 30, "answered": 12, "dropped_sessions": 18, "rss_mb_max": {"llm": 214.2}},
        "drops": {"audio:stt": 0, "tokens": 3},
        "machine": {"cpus": 2, "model": "Intel Xeon", "python": "3.11.9"},
        "utterances": utterances,
    }


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5000, (path, len(data))


def test_render_full_report(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(full_report()))
    render(tmp_path)
    md = (tmp_path / "report.md").read_text()
    head_row = next(line for line in md.splitlines() if "speech end → first token** (headline)" in line)
    cells = [c.strip() for c in head_row.strip("|").split("|")]
    assert len(cells) == 11 and cells[4] == "40" and cells[8] == "40"  # n for Vigil and the baseline
    assert float(cells[-1].rstrip("×")) > 1.0  # the baseline is slower in this synthetic run
    for name in ("latency_cdf.png", "stages.png", "idle.png"):
        assert name in md
        _assert_png(tmp_path / name)
    assert "### llm" in md and "### skill" in md
    assert "speaker accuracy | n/a" in md
    assert "Budget check" in md and "**OK**" in md
    assert "8.3 %" in md  # WER


def test_render_shows_the_idle_gate_check(tmp_path):
    report = full_report()
    report["wake"] = {"by_engine": {"oww@0.5": {"conditions": {}}}, "gate": {
        "threshold": 0.005, "proposals_changed": 3, "cpu_ms_per_audio_s": {"ungated": 67.6, "gated": 13.8},
        "by_stream": {"noise": {"cpu_ms_per_audio_s": 34.6, "skipped": 0.66, "proposals": 31,
                                "proposals_lost": 2, "proposals_added": 1}}}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    render(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "### Idle gate" in md and "67.6 ungated, 13.8 gated" in md and "changed: 3" in md
    row = next(line for line in md.splitlines() if line.startswith("| `noise`"))
    assert [c.strip() for c in row.strip("|").split("|")] == ["`noise`", "34.6", "66.0 %", "31", "2", "1"]


def test_render_sparse_report(tmp_path):
    report = {"run": "empty", "spans_ms": {"speech_end_to_first_token": percentiles([])},
              "baseline": {}, "idle": None, "load": None, "utterances": [], "speaker": {"accuracy": None},
              "stt": {"wer": float("nan"), "n": 0}, "ratio_baseline_over_vigil": {"p50": float("nan")}}
    (tmp_path / "report.json").write_text(json.dumps(report))  # NaN is written as the JS literal NaN
    (tmp_path / "idle.png").write_bytes(PNG_MAGIC)  # stale plot from an earlier render
    render(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "n/a" in md
    for name in ("latency_cdf.png", "stages.png", "idle.png"):
        assert not (tmp_path / name).exists()
    # and the bare minimum: an empty object
    (tmp_path / "report.json").write_text("{}")
    render(tmp_path)
    assert (tmp_path / "report.md").read_text().startswith("# Vigil bench")


def test_render_cli(tmp_path):
    from bench.render import main

    assert main([str(tmp_path)]) == 2  # no report.json
    (tmp_path / "report.json").write_text(json.dumps(full_report(5)))
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "report.md").is_file()


# ---------------------------------------------------------------------------------------------- trace

def _row(session: int, t0_ns: int, transcript: str, *, missing: tuple[str, ...] = ()) -> dict:
    ms = 1_000_000
    marks = {"wake_audio": t0_ns, "wake": t0_ns + 150 * ms, "speech_end": t0_ns + 1900 * ms,
             "transcript": t0_ns + 2700 * ms, "llm_request": t0_ns + 2705 * ms, "first_token": t0_ns + 2790 * ms,
             "done": t0_ns + 3500 * ms}
    for name in missing:
        marks.pop(name)
    spans = {"speech_end_to_transcript": 800.0, "transcript_to_first_token": 90.0, "speech_end_to_first_token": 890.0,
             "stt_compute": 520.0, "llm_first_token_compute": 80.0, "llm_compute": 700.0}
    return {"run_id": "r1", "session": session, "finished_unix": 1.7e9, "transcript": transcript, "speaker": "unknown",
            "route": "llm", "degraded": False, "response": "Paris.", "spans": spans, "marks": marks}


def _slices(trace: dict) -> dict[str, list[dict]]:
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    out: dict[str, list[dict]] = {name: [] for name in names.values()}
    for e in trace["traceEvents"]:
        if e["ph"] in ("X", "i"):
            out[names[e["pid"]]].append(e)
    return out


def test_trace_two_sessions(tmp_path):
    base = 5_000_000_000_000
    rows = [_row(1, base, "what is the capital of france"), _row(2, base + 10_000_000_000, "what time is it")]
    path = write_trace(rows, tmp_path / "trace.json")
    trace = json.loads(path.read_text())
    assert trace["displayTimeUnit"] == "ms"
    assert set(_slices(trace)) == set(TRACKS)
    tracks = _slices(trace)
    for events in tracks.values():
        for e in events:
            assert e["ts"] >= 0
            if e["ph"] == "X":
                assert e["dur"] >= 0
    assert min(e["ts"] for events in tracks.values() for e in events) == 0
    names = {track: sorted({e["name"] for e in events}) for track, events in tracks.items()}
    assert names["wakeword"] == ["wake", "wake detection"]
    assert names["stt"] == ["endpoint wait", "listen (endpointing)", "transcribe"]
    assert names["llm"] == ["generate", "prompt → first token"]
    assert "session 1: what is the capital of france" in names["coordinator"]
    assert "session 2: what time is it" in names["coordinator"]
    assert len([e for e in tracks["stt"] if e["name"] == "transcribe"]) == 2
    transcribe = next(e for e in tracks["stt"] if e["name"] == "transcribe")
    assert transcribe["dur"] == pytest.approx(520_000)  # µs
    wait = next(e for e in tracks["stt"] if e["name"] == "endpoint wait")
    assert wait["dur"] == pytest.approx(280_000)


def test_trace_missing_marks_gives_fewer_slices():
    base = 1_000_000_000
    full = sessions_to_trace([_row(1, base, "hello")])
    partial_row = _row(1, base, "hello", missing=("first_token", "done"))
    partial_row["spans"].pop("stt_compute")
    partial = sessions_to_trace([partial_row, {"session": 3, "marks": {}, "spans": {}}])
    count = lambda t: sum(e["ph"] in ("X", "i") for e in t["traceEvents"])  # noqa: E731
    assert 0 < count(partial) < count(full)
    names = {e["name"] for e in partial["traceEvents"] if e["ph"] == "X"}
    assert "generate" not in names and "transcribe" not in names and "listen (endpointing)" in names
    json.dumps(partial)
    assert sessions_to_trace([])["traceEvents"]  # metadata only, no error


def test_render_endpoint_trade_offs(tmp_path):
    """The measured endpoint sweep is a table; a threshold curve no request has a point on is left out."""
    report = full_report()
    report["endpoint"] = {
        "default": "turn", "modes": {"turn": {"complete": {}, "hesitation": {"n": 4, "cut_offs": 0}}},
        "threshold_curve": [{"threshold": 0.5, "p50": None, "p95": None, "n": 0, "waiting": 0}],
        "sweep": [{"key": "turn_min_pause_ms", "value": 50, "p50": 361.0, "p95": 512.0, "n": 9, "cut_offs": 1,
                   "hesitations": 4},
                  {"key": "turn_sure_ending", "value": 0.5, "p50": 404.0, "p95": 478.0, "n": 9, "cut_offs": 0,
                   "hesitations": 4}]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    render(tmp_path)
    md = (tmp_path / "report.md").read_text()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
            if line.startswith("| turn_")]
    assert rows == [["turn_min_pause_ms = 50", "361", "512", "9", "1 / 4"],
                    ["turn_sure_ending = 0.5", "404", "478", "9", "0 / 4"]]
    assert "turn_threshold" not in md.split("## Endpointing")[1].split("##")[0]
