"""Ground truth meets measurement: which session answered which utterance, and how fast.

Every session's marks are monotonic ns (MetricsStore). The replay's `input` event gives
the monotonic time of the file's sample 0, so an utterance's true speech end is
`t0_ns + (offset_s + speech_end_s) · 1e9`. A session belongs to the utterance during
which its wake frame was captured; a session anywhere else is a false wake.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.replay import Placement
from core.events import Event, InputStartedEvent
from pipeline.latency import percentiles

HEADLINE_SPANS = ("speech_end_to_first_token", "wake_to_first_token", "speech_end_to_transcript",
                  "transcript_to_first_token", "wake_to_speech_end")


def input_t0_ns(events: list[Event]) -> int:
    for event in events:
        if isinstance(event, InputStartedEvent):
            return event.t0_ns
    raise ValueError("the pipeline reported no input start (no `input` event): did capture run?")


@dataclass
class Matched:
    placement: Placement
    session: dict | None = None
    extra_wakes: int = 0


def match_sessions(placements: list[Placement], sessions: list[dict], t0_ns: int,
                   tail_s: float = 0.4) -> tuple[list[Matched], int]:
    """Assign sessions to utterances by wake time; returns (per placement, unmatched sessions)."""
    matched = [Matched(p) for p in placements]
    unmatched = 0
    for row in sessions:
        wake_ns = row["marks"].get("wake_audio") or row["marks"].get("wake")
        if wake_ns is None:
            continue
        at = (wake_ns - t0_ns) / 1e9
        slot = next((m for m in matched if m.placement.offset_s <= at <= m.placement.offset_s
                     + m.placement.duration_s + tail_s), None)
        if slot is None:
            unmatched += 1
        elif slot.session is None:
            slot.session = row
        else:
            slot.extra_wakes += 1
    return matched, unmatched


def ground_truth_spans(marks: dict, speech_end_ns: int) -> dict[str, float]:
    """The headline spans measured from the true end of speech instead of the VAD's guess."""
    def ms(start: int | None, end: int | None) -> float | None:
        return None if start is None or end is None else round((end - start) / 1e6, 1)

    spans = {
        "speech_end_to_first_token": ms(speech_end_ns, marks.get("first_token")),
        "wake_to_first_token": ms(marks.get("wake"), marks.get("first_token")),
        "speech_end_to_transcript": ms(speech_end_ns, marks.get("transcript")),
        "transcript_to_first_token": ms(marks.get("transcript"), marks.get("first_token")),
        "wake_to_speech_end": ms(marks.get("wake"), speech_end_ns),
        "request_speech": ms(marks.get("wake_audio"), speech_end_ns),
    }
    return {name: value for name, value in spans.items() if value is not None}


def utterance_records(utterances, matched: list[Matched], t0_ns: int) -> list[dict]:
    records = []
    for m in matched:
        u = utterances[m.placement.index]
        row = m.session or {}
        record = {
            "wav": str(u.wav), "kind": u.kind, "voice": u.voice or u.speaker, "voice_id": u.speaker, "pass": m.placement.pass_no,
            "offset_s": m.placement.offset_s, "duration_s": m.placement.duration_s, "wake_expected": bool(u.wake), "wake_detected": m.session is not None,
            "extra_wakes": m.extra_wakes, "transcript_ref": u.transcript, "transcript": row.get("transcript"),
            "route": row.get("route"), "degraded": row.get("degraded"), "response": row.get("response"),
            "speaker_heard": row.get("speaker"), "vigil": {},
        }
        if m.session is not None:
            speech_end_ns = t0_ns + int((m.placement.offset_s + u.speech_end_s) * 1e9)
            vigil = ground_truth_spans(row["marks"], speech_end_ns)
            for key in ("stt_compute", "llm_first_token_compute", "llm_compute"):
                if key in row["spans"]:
                    vigil[key] = row["spans"][key]
            record["vigil"] = vigil
        records.append(record)
    return records


def span_percentiles(records: list[dict], key: str = "vigil", route: str | None = None) -> dict:
    """p50/p95/p99/n per headline span over answered wake utterances (optionally one route)."""
    chosen = [r for r in records if r["wake_expected"] and r.get(key)
              and (route is None or (r.get("route") or "").split(":")[0] == route)]
    return {span: percentiles([r[key][span] for r in chosen if span in r[key]]) for span in HEADLINE_SPANS}


def stage_percentiles(records: list[dict], key: str, names: dict[str, str]) -> dict:
    out = {}
    for stage, field in names.items():
        values = [r[key][field] for r in records if r.get(key) and field in r[key]]
        pct = percentiles(values)
        out[stage] = {"p50": pct["p50"], "p95": pct["p95"]}
    return out


def wake_summary(records: list[dict], unmatched: int) -> dict:
    wakes = [r for r in records if r["wake_expected"]]
    negatives = [r for r in records if not r["wake_expected"]]
    negative_s = sum(r["duration_s"] for r in negatives)
    false_wakes = unmatched + sum(1 for r in negatives if r["wake_detected"]) + sum(r["extra_wakes"] for r in records)
    return {
        "detected": sum(1 for r in wakes if r["wake_detected"]),
        "missed": sum(1 for r in wakes if not r["wake_detected"]),
        "false_wakes": false_wakes,
        "negatives_hours": round(negative_s / 3600.0, 4),
    }

