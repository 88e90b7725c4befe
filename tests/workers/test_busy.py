"""`Worker.busy()` under the real supervisor: a worker inside one long native call (real whisper.cpp)
keeps beating, but only for the time it declared, so a wedged call is still caught as hung.

The doubles below are real `Worker` subclasses in real spawned processes; what makes them doubles is
the work they do (the same transcription over and over, without a session) and the short heartbeat
timeout, so that one block of work lasts several timeouts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

from bench.synth import tts_samples
from core.config import load_config
from engines.stt.whispercpp import WhisperEngine
from pipeline.supervisor import PipelineSupervisor
from shm.heartbeat import HeartbeatTable
from workers.base import Worker, WorkerSpec

HEARTBEAT_TIMEOUT_S = 1.0  # the operator's floor; a block below lasts well over twice that
BLOCK_S = 2.5  # at least this long without a beat of its own (whisper.cpp, called until it has passed)
CLIP_ENV, LOG_ENV = "BUSY_TEST_CLIP", "BUSY_TEST_LOG"


class TranscribingDouble(Worker):
    """Each step is one block of whisper.cpp transcriptions lasting at least BLOCK_S, inside `busy(busy_s)`
    (or nothing); it appends {"pid", "start", "end"} (monotonic s, one clock system-wide) to the log file."""

    busy_s: float | None = 30.0
    block_s: float = BLOCK_S

    def setup(self) -> None:
        self.engine = WhisperEngine(Path(self.config.stt.model), n_threads=1)
        self.clip = np.load(os.environ[CLIP_ENV])
        self.engine.transcribe(self.clip[:16_000])  # the first call allocates

    def step(self) -> None:
        start = time.monotonic()
        with self.busy(self.busy_s) if self.busy_s is not None else nullcontext():
            while time.monotonic() - start < self.block_s:
                self.engine.transcribe(self.clip)  # releases the GIL while it computes, as native engines do
        with open(os.environ[LOG_ENV], "a") as log:
            log.write(json.dumps({"pid": os.getpid(), "start": start, "end": time.monotonic()}) + "\n")


class SilentDouble(TranscribingDouble):
    """The same block without `busy()`: what a worker did before it."""

    busy_s = None


class WedgedDouble(TranscribingDouble):
    """A call that runs far past what it declared (busy for 1 s, works for 60 s): a hang to the supervisor."""

    busy_s = 1.0
    block_s = 60.0


@pytest.fixture
def clip(tmp_path, monkeypatch) -> Path:
    """~10 s of speech: one transcription takes ~0.5 s with tiny.en on one thread."""
    speech = tts_samples("Turn on the kitchen lights, then tell me the weather for tomorrow morning "
                         "and set a timer for twenty minutes for the pasta.", engine="flite")
    path = tmp_path / "clip.npy"
    np.save(path, speech)
    monkeypatch.setenv(CLIP_ENV, str(path))
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "blocks.jsonl"))
    return path


@pytest.fixture
def run(models, clip, tmp_path):
    """Start one double under the real supervisor; stop it and free the heartbeat afterwards."""
    name = f"vigil-{os.getpid()}-test-busy-heartbeat"
    table = HeartbeatTable.create(name, 1)
    started: list[PipelineSupervisor] = []

    def start(double: str) -> tuple[PipelineSupervisor, list[dict]]:
        config = load_config(None, environ={"VIGIL_STT__MODEL": str(models.whisper)})
        config = dataclasses.replace(config, supervisor=dataclasses.replace(
            config.supervisor, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S, backoff_initial_s=30.0))
        spec = WorkerSpec("stt", f"tests.workers.test_busy:{double}", row=0, heartbeat=name, heartbeat_rows=1)
        events: list[dict] = []
        sup = PipelineSupervisor(config, [spec], table, on_event=lambda e: events.append(e.to_dict()))
        started.append(sup)
        sup.start()
        return sup, events

    yield start
    for sup in started:
        sup.stop()
    table.close()


def blocks(tmp_path: Path) -> list[dict]:
    path = tmp_path / "blocks.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def poll(sup: PipelineSupervisor, until, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sup.poll()
        if until():
            return True
        time.sleep(0.05)
    return False


def hung(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("event") == "hung"]


def test_a_long_native_call_inside_busy_is_not_taken_for_a_hang(run, tmp_path):
    sup, events = run("TranscribingDouble")
    pid = sup.workers["stt"].pid
    assert poll(sup, lambda: len(blocks(tmp_path)) >= 2 or hung(events), 90), (sup.health(), events)
    done = blocks(tmp_path)
    assert not hung(events) and len(done) >= 2, (events, done)
    assert all(b["end"] - b["start"] >= 2 * HEARTBEAT_TIMEOUT_S for b in done), done  # long enough to be killed
    assert {b["pid"] for b in done} == {pid} and sup.workers["stt"].restarts == 0


def test_the_same_call_without_busy_is_killed_as_hung(run, tmp_path):
    """The control: the test above could fail."""
    sup, events = run("SilentDouble")
    assert poll(sup, lambda: hung(events), 60), (sup.health(), events, blocks(tmp_path))


def test_busy_beats_only_for_the_time_it_declared(run, tmp_path):
    sup, events = run("WedgedDouble")
    assert poll(sup, lambda: hung(events), 60), (sup.health(), events)
    killed = time.monotonic()
    assert not blocks(tmp_path), "the wedged block finished: it was not caught"
    # Caught after its 1 s of beats plus the timeout, long before its 60 s were over.
    assert sup.heartbeat.beats(0) >= 3, "busy() did not beat at all"
    assert killed - sup.workers["stt"].started_at < 20
