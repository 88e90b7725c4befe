"""LatencyTracker: named monotonic marks per session, spans between them, percentiles.

Marks come from every process (each stamps `time.monotonic_ns()`, which is one clock
system-wide on Linux), so a span can start in the wake-word worker and end in the LLM
worker. The tracker itself lives in the parent; it keeps a bounded number of sessions.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np

# (span name, start mark, end mark). The headline is speech_end_to_first_token.
SPANS: tuple[tuple[str, str, str], ...] = (
    ("wake_to_speech_end", "wake", "speech_end"),
    # The endpoint decision: how long the pause had lasted when the request was taken as complete.
    ("speech_end_to_endpoint", "speech_end", "endpoint"),
    ("speech_end_to_transcript", "speech_end", "transcript"),
    ("transcript_to_first_token", "transcript", "first_token"),
    ("speech_end_to_first_token", "speech_end", "first_token"),
    ("wake_to_first_token", "wake", "first_token"),
    ("first_token_to_done", "first_token", "done"),
    ("wake_to_verified", "wake", "verified"),  # two-stage wake: proposal → the verifier's accept
    ("wake_to_speaker", "wake", "speaker"),  # speaker ID result, computed beside STT
)


def finite(value: Any) -> float | None:
    """A finite float, or None for missing, NaN, infinite or non-numeric values (reports, traces)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def percentiles(values: Iterable[float]) -> dict[str, float]:
    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "n": 0}
    p50, p95, p99 = np.percentile(data, [50, 95, 99])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1), "n": int(data.size)}


def summarize_spans(sessions: Iterable[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Percentiles per span name over many sessions' span dicts (tracker sessions or stored rows)."""
    collected: dict[str, list[float]] = {}
    for spans in sessions:
        for name, value in spans.items():
            collected.setdefault(name, []).append(value)
    return {name: percentiles(values) for name, values in collected.items()}


class LatencyTracker:
    """Marks and per-stage compute times for the last `max_sessions` sessions."""

    def __init__(self, max_sessions: int = 1000) -> None:
        self._marks: OrderedDict[int, dict[str, int]] = OrderedDict()
        self._stages: dict[int, dict[str, float]] = {}
        self._notes: dict[int, dict[str, float]] = {}
        self._max = max_sessions

    def _session(self, session: int) -> dict[str, int]:
        marks = self._marks.get(session)
        if marks is None:
            marks = self._marks[session] = {}
            self._stages[session] = {}
            self._notes[session] = {}
            while len(self._marks) > self._max:
                old, _ = self._marks.popitem(last=False)
                self._stages.pop(old, None)
                self._notes.pop(old, None)
        return marks

    def mark(self, session: int, name: str, t_ns: int | None = None) -> None:
        """Record when `name` happened; the first mark of a name wins (later ones are retries)."""
        self._session(session).setdefault(name, time.monotonic_ns() if t_ns is None else int(t_ns))

    def stage(self, session: int, stage: str, compute_ms: float) -> None:
        """Record a stage's own compute time (not wall time between marks)."""
        self._session(session)
        self._stages[session][stage] = float(compute_ms)

    def note(self, session: int, name: str, value: float) -> None:
        """Record a figure that belongs with the spans (e.g. ``endpoint_score``, the turn model's verdict)."""
        self._session(session)
        self._notes[session][name] = float(value)

    def marks(self, session: int) -> dict[str, int]:
        return dict(self._marks.get(session, {}))

    def measure(self, session: int, start: str, end: str) -> float | None:
        """Milliseconds from mark `start` to mark `end`, or None if either is missing."""
        marks = self._marks.get(session, {})
        if start not in marks or end not in marks:
            return None
        return (marks[end] - marks[start]) / 1e6

    def spans(self, session: int) -> dict[str, float]:
        out = {}
        for name, start, end in SPANS:
            value = self.measure(session, start, end)
            if value is not None:
                out[name] = round(value, 1)
        for stage, ms in self._stages.get(session, {}).items():
            out[f"{stage}_compute"] = round(ms, 1)
        for name, value in self._notes.get(session, {}).items():
            out[name] = round(value, 3)
        return out

    def report(self) -> dict[str, dict[str, float]]:
        """Percentiles (p50/p95/p99, n) per span and per stage compute time over kept sessions."""
        return summarize_spans(self.spans(session) for session in self._marks)
