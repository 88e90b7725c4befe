"""Sessions from MetricsStore as a Chrome / Perfetto trace (the trace-event JSON format).

Open the file in https://ui.perfetto.dev or chrome://tracing: one process track per worker
(wakeword, stt, llm, coordinator), one slice per stage per session, so a person can see where
a slow answer spent its time. Timestamps are microseconds relative to the earliest mark of
all the rows (the marks are `time.monotonic_ns()`, one clock across processes on Linux).

Slices (each only when its marks exist):
  wakeword     "wake detection" wake_audio -> wake, instant "wake" at wake
  stt          "listen (endpointing)" wake -> speech_end, "endpoint wait" speech_end ->
               transcript - stt_compute, "transcribe" transcript - stt_compute -> transcript
  llm          "prompt → first token" llm_request -> first_token, "generate" first_token -> done
  coordinator  "session N: <transcript>" wake -> done, nested "route" transcript -> llm_request
Sessions that overlap on a track (barge-in, load) go to separate lanes (threads) of that track.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.latency import finite


def _ns(value: Any) -> int | None:
    number = finite(value)
    return None if number is None else int(number)


def _ms(value: Any) -> float | None:
    number = finite(value)
    return number if number is not None and number >= 0 else None


TRACKS: dict[str, int] = {"wakeword": 1, "stt": 2, "llm": 3, "coordinator": 4}
_NAME_CHARS = 60


def _short(text: Any) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= _NAME_CHARS else text[: _NAME_CHARS - 1] + "…"


def _session_slices(row: dict) -> list[tuple[str, str, int, int | None, dict]]:
    """(track, name, start ns, end ns or None for an instant, args) for one session row."""
    marks = {k: v for k, v in ((k, _ns(v)) for k, v in dict(row.get("marks") or {}).items()) if v is not None}
    spans = dict(row.get("spans") or {})
    session = row.get("session")
    out: list[tuple[str, str, int, int | None, dict]] = []

    def add(track: str, name: str, start: int | None, end: int | None, args: dict) -> None:
        if start is None or end is None or end < start:
            return
        out.append((track, name, start, end, {k: v for k, v in args.items() if v is not None}))

    wake, wake_audio = marks.get("wake"), marks.get("wake_audio")
    speech_end, transcript = marks.get("speech_end"), marks.get("transcript")
    llm_request, first_token, done = marks.get("llm_request"), marks.get("first_token"), marks.get("done")
    base = {"session": session}

    # wakeword
    add("wakeword", "wake detection", wake_audio, wake, {**base, "detection_ms": _diff_ms(wake_audio, wake)})
    if wake is not None:
        out.append(("wakeword", "wake", wake, None, dict(base)))

    # stt
    add("stt", "listen (endpointing)", wake, speech_end,
        {**base, "wake_to_speech_end_ms": spans.get("wake_to_speech_end")})
    stt_ms = _ms(spans.get("stt_compute"))
    if transcript is not None and stt_ms is not None:
        tx_start = transcript - int(stt_ms * 1e6)
        if speech_end is not None:
            add("stt", "endpoint wait", speech_end, tx_start,
                {**base, "endpoint_wait_ms": _diff_ms(speech_end, tx_start)})
            tx_start = max(tx_start, speech_end)  # compute that began before speech end: clip to the track
        add("stt", "transcribe", tx_start, transcript,
            {**base, "stt_compute_ms": stt_ms, "speech_end_to_transcript_ms": spans.get("speech_end_to_transcript"),
             "transcript": row.get("transcript")})

    # llm
    add("llm", "prompt → first token", llm_request, first_token,
        {**base, "llm_first_token_compute_ms": spans.get("llm_first_token_compute"),
         "transcript_to_first_token_ms": spans.get("transcript_to_first_token"), "route": row.get("route")})
    add("llm", "generate", first_token, done,
        {**base, "first_token_to_done_ms": spans.get("first_token_to_done"), "llm_compute_ms": spans.get("llm_compute"),
         "response": row.get("response")})

    # coordinator
    add("coordinator", f"session {session}: {_short(row.get('transcript'))}", wake, done,
        {**base, "run_id": row.get("run_id"), "transcript": row.get("transcript"), "speaker": row.get("speaker"),
         "route": row.get("route"), "degraded": row.get("degraded"), "response": row.get("response"),
         "spans_ms": spans})
    add("coordinator", "route", transcript, llm_request, {**base, "route": row.get("route")})
    return out


def _diff_ms(start: int | None, end: int | None) -> float | None:
    return None if start is None or end is None else round((end - start) / 1e6, 3)


def sessions_to_trace(rows: Iterable[dict]) -> dict:
    """Trace-event JSON ({"traceEvents": [...], "displayTimeUnit": "ms"}) for MetricsStore rows."""
    rows = list(rows)
    per_session = [_session_slices(row) for row in rows]
    starts = [start for slices in per_session for _, _, start, _, _ in slices]
    starts += [ns for row in rows for ns in (_ns(v) for v in dict(row.get("marks") or {}).values()) if ns is not None]
    t0 = min(starts) if starts else 0  # the earliest mark of all the rows

    events: list[dict] = []
    for track, pid in TRACKS.items():
        events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": track}})
        events.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": pid}})

    # lanes: per track, a session's slices share a lane; overlapping sessions take the next free lane
    lane_ends: dict[str, list[int]] = {track: [] for track in TRACKS}
    for slices in sorted(per_session, key=lambda s: min((x[2] for x in s), default=0)):
        by_track: dict[str, list] = {}
        for item in slices:
            by_track.setdefault(item[0], []).append(item)
        for track, items in by_track.items():
            start = min(i[2] for i in items)
            end = max(i[3] if i[3] is not None else i[2] for i in items)
            ends = lane_ends[track]
            lane = next((k for k, e in enumerate(ends) if e <= start), None)
            if lane is None:
                lane = len(ends)
                ends.append(end)
            else:
                ends[lane] = end
            pid, tid = TRACKS[track], lane + 1
            for _, name, s, e, args in items:
                ts = (s - t0) / 1000.0
                if e is None:
                    events.append({"name": name, "cat": track, "ph": "i", "s": "t", "ts": ts, "pid": pid, "tid": tid,
                                   "args": args})
                else:
                    events.append({"name": name, "cat": track, "ph": "X", "ts": ts, "dur": (e - s) / 1000.0,
                                   "pid": pid, "tid": tid, "args": args})
    for track, ends in lane_ends.items():
        for lane in range(len(ends)):
            label = "sessions" if lane == 0 else f"sessions (overlap {lane + 1})"
            events.append({"name": "thread_name", "ph": "M", "pid": TRACKS[track], "tid": lane + 1,
                           "args": {"name": label}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_trace(rows: Iterable[dict], path: str | Path) -> Path:
    """Write the trace of `rows` to `path` (atomically) and return the path."""
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(sessions_to_trace(rows), ensure_ascii=False, default=str))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a failed write or rename, nothing half-written stays
    return path
