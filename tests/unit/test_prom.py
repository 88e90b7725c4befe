"""pipeline.prom: what `/metrics` renders passes `promtool check metrics`, in base units, with bounded labels.

The live scrape of a whole running pipeline is checked in tests/e2e/test_pipeline_e2e.py; here the same
exposition is fed every kind of event and figure, including ones that are wrong.
"""

from __future__ import annotations

import shutil
import subprocess
import time

from prometheus_client.parser import text_string_to_metric_families

from pipeline.prom import MAX_LABELS, OTHER, PipelineMetrics


def promtool(text: bytes) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: apt-get install prometheus (the Makefile's APT_TEST)"
    return subprocess.run([exe, "check", "metrics"], input=text, capture_output=True, timeout=30)


def samples(text: bytes) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def health(workers: list[str], restarts: int = 0) -> dict:
    return {"status": "ok", "workers": {w: {"pid": 1, "state": "running", "restarts": restarts,
                                            "heartbeat_age_s": 0.1} for w in workers}}


def test_every_series_passes_promtool_in_base_units():
    workers = ["capture", "wakeword", "stt", "speaker", "llm", "responder"]
    m = PipelineMetrics(health=lambda: health(workers))
    m.watch_workers(lambda: {w: {"rss_bytes": 100e6 + i, "cpu_s": 1.5 * i} for i, w in enumerate(workers)})
    m.watch_sse(lambda: {"clients": 1, "published": 10, "dropped": 0})
    t = time.time()
    for event in ({"type": "wake", "t": t, "session": 1, "seq": 5, "score": 0.9, "engine": "oww"},
                  {"type": "wake_rejected", "t": t, "seq": 9, "score": 0.3},
                  {"type": "transcript", "t": t, "session": 1, "text": "hi", "final": True},
                  {"type": "token", "t": t, "session": 1, "text": "Hi"},
                  {"type": "response", "t": t, "session": 1, "route": "llm", "degraded": False,
                   "latency_ms": {"speech_end_to_first_token": 512.0, "stt_compute": 230.0,
                                  "speech_end_to_endpoint": 300.0, "endpoint_score": 0.9}},
                  {"type": "worker", "t": t, "name": "stt", "event": "restarted", "pid": 7, "exitcode": -9},
                  {"type": "drop", "t": t, "ring": "audio.stt", "count": 2},
                  {"type": "error", "t": t, "where": "llm", "message": "x"}):
        m.observe_event(event)
    text = m.render()
    check = promtool(text)
    assert check.returncode == 0, check.stdout + check.stderr
    assert b"milliseconds" not in text
    got = samples(text)
    assert got[("vigil_latency_seconds_sum", (("span", "speech_end_to_first_token"),))] == 0.512
    assert got[("vigil_latency_seconds_bucket", (("le", "0.5"), ("span", "speech_end_to_first_token")))] == 0
    assert got[("vigil_latency_seconds_bucket", (("le", "0.65"), ("span", "speech_end_to_first_token")))] == 1
    assert got[("vigil_stage_compute_seconds_sum", (("stage", "stt"),))] == 0.23
    assert got[("vigil_endpoint_pause_seconds_sum", (("decided_by", "turn"),))] == 0.3
    for i, w in enumerate(workers):
        assert got[("vigil_worker_resident_memory_bytes", (("worker", w),))] == 100e6 + i
        assert got[("vigil_worker_cpu_seconds_total", (("worker", w),))] == 1.5 * i
        # every worker has its restart series from the first scrape, not only after its first restart
        assert got[("vigil_worker_restarts_total", (("worker", w),))] == (1 if w == "stt" else 0)
    assert got[("process_resident_memory_bytes", ())] > 0  # the parent's own


def test_worker_labels_are_bounded_and_a_bad_source_never_breaks_a_scrape():
    many = [f"w{i}" for i in range(MAX_LABELS + 8)]
    m = PipelineMetrics(health=lambda: health(many))
    m.watch_workers(lambda: {w: {"rss_bytes": 1e6, "cpu_s": 1.0} for w in many})
    text = m.render()
    assert promtool(text).returncode == 0
    got = samples(text)
    rss = {labels: v for (name, labels), v in got.items() if name == "vigil_worker_resident_memory_bytes"}
    assert len(rss) == MAX_LABELS + 1 and rss[(("worker", OTHER),)] == 8e6  # the ones past the limit add up

    broken = PipelineMetrics()
    figures = {"calls": 0}

    def flaky() -> dict:
        figures["calls"] += 1
        if figures["calls"] == 2:  # the first call is the registration's
            raise RuntimeError("supervisor gone")
        return {"stt": {"rss_bytes": float("nan"), "cpu_s": -1}, "llm": "garbage"}

    broken.watch_workers(flaky)
    for _ in range(2):  # raises, then returns nonsense: both scrapes render, without worker series
        text = broken.render()
        assert promtool(text).returncode == 0 and b"vigil_worker_cpu_seconds_total{" not in text
