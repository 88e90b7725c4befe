"""Replay audio through the real pipeline: `python -m pipeline run --input replay.wav`.

The corpus is joined into one WAV (utterances back to back with short gaps, several
passes), so the pipeline runs continuously as it would at a kiosk, through the capture
worker's real-time WAV source. The offset of every utterance in that file, with the
`input` event's `t0_ns`, turns the manifest's ground truth into monotonic times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.resources import ResourceSampler
from bench.synth import write_wav16
from core.events import Event, parse_event
from pipeline.metrics_store import MetricsStore
from core.audio import load_wav

ROOT = Path(__file__).resolve().parents[1]
RATE = 16_000


@dataclass(frozen=True)
class Placement:
    """Where one corpus utterance sits in the replay file."""

    index: int  # position in the corpus
    pass_no: int
    offset_s: float
    duration_s: float


def build_replay(utterances, path: Path, passes: int, gap_s: float, lead_s: float = 2.0) -> list[Placement]:
    """Join the corpus into one WAV; the lead silence covers the wake detector's warm-up."""
    audio = {i: load_wav(u.wav) for i, u in enumerate(utterances)}
    gap = np.zeros(int(gap_s * RATE), dtype=np.int16)
    parts = [np.zeros(int(lead_s * RATE), dtype=np.int16)]
    placements, cursor = [], len(parts[0])
    for pass_no in range(passes):
        for i in range(len(utterances)):
            placements.append(Placement(i, pass_no, cursor / RATE, len(audio[i]) / RATE))
            parts += [audio[i], gap]
            cursor += len(audio[i]) + len(gap)
    write_wav16(path, np.concatenate(parts))
    return placements


def progress_bar(total_s: float, desc: str, enabled: bool) -> tuple[tqdm, Callable[[float], None]]:
    """A seconds bar for a replay of about ``total_s`` and the ``on_tick`` for ``run_pipeline`` that moves it."""
    bar = tqdm(total=round(total_s), desc=desc, unit="s", disable=not enabled, leave=False)

    def tick(elapsed: float) -> None:
        bar.n = min(round(elapsed), bar.total)
        bar.refresh()

    return bar, tick


@dataclass
class ReplayResult:
    returncode: int
    events: list[Event]  # the run's --events file
    sessions: list[dict]  # MetricsStore rows
    samples: list[dict]  # ResourceSampler rows
    stderr_tail: str
    wall_s: float


def run_pipeline(wav: Path, run_dir: Path, *, extra_args: tuple[str, ...] = (), env: dict | None = None,
                 on_tick: Callable[[float], None] | None = None, timeout_s: float | None = None,
                 sample_interval: float = 1.0, capture_s: float | None = None) -> ReplayResult:
    """Run the real pipeline on `wav` until it exits by itself (--exit-when-done or --max-seconds), or, with
    `capture_s`, until it has listened that long (counted from the capture worker's first sample: on a busy box
    the models may take longer to load than the listening itself)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    events_path = run_dir / "events.jsonl"
    state_dir = run_dir / "state"
    child_env = {**os.environ, "VIGIL_METRICS__STATE_DIR": str(state_dir), "PYTHONUNBUFFERED": "1", **(env or {})}
    stderr_path = run_dir / "pipeline.stderr.log"
    started = time.monotonic()
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", "--input", str(wav), "--events", str(events_path), *extra_args],
            cwd=ROOT, env=child_env, stdout=subprocess.DEVNULL, stderr=stderr,
        )
        sampler = ResourceSampler(proc.pid, sample_interval).start()
        capture_since = None
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                now = time.monotonic()
                if on_tick:
                    on_tick(now - started)
                if capture_s is not None and capture_since is None and sampler.samples \
                        and "capture" in sampler.samples[-1]["rss_mb"]:  # the newest sample: one per second
                    capture_since = now
                if (timeout_s and now - started > timeout_s) or (capture_since and now - capture_since > capture_s):
                    proc.terminate()
                    proc.wait(30)
        finally:
            samples = sampler.stop()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    events = [parse_event(json.loads(line)) for line in events_path.read_text().splitlines() if line.strip()] \
        if events_path.exists() else []
    store = MetricsStore(state_dir, run_id="bench")
    sessions = store.recent()
    store.close()
    tail = stderr_path.read_text()[-4000:]
    return ReplayResult(proc.returncode, events, sessions, samples, tail, time.monotonic() - started)
