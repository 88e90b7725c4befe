"""Ground truth meets measurement: which session answered which utterance, and how fast.

Every session's marks are monotonic ns (MetricsStore). The replay's `input` event gives
the monotonic time of the file's sample 0, so an utterance's true speech end is
`t0_ns + (offset_s + speech_end_s) · 1e9`. A session belongs to the utterance during
which its wake frame was captured; a session anywhere else is a false wake.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.replay import Placement
from core.events import Event, InputStartedEvent
from pipeline.latency import percentiles

HEADLINE_SPANS = ("speech_end_to_first_token", "wake_to_first_token", "speech_end_to_transcript",
                  "transcript_to_first_token", "wake_to_speech_end")
# the baseline's stages (bench/baseline.py) -> the replay's span of the same compute
STAGES = {"stt": "stt_compute", "llm_first_token": "llm_first_token_compute"}


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
            "wav": str(u.wav), "kind": u.kind, "voice": u.voice or u.speaker, "voice_id": u.speaker,
            "pass": m.placement.pass_no, "offset_s": m.placement.offset_s, "duration_s": m.placement.duration_s,
            "wake_expected": bool(u.wake), "wake_detected": m.session is not None,
            "extra_wakes": m.extra_wakes, "transcript_ref": u.transcript, "transcript": row.get("transcript"),
            "route": row.get("route"), "degraded": row.get("degraded"), "response": row.get("response"),
            "speaker_heard": row.get("speaker"), "vigil": {},
        }
        pause_s = getattr(u, "pause_s", None)
        if pause_s is not None:
            record["pause_s"] = list(pause_s)
        record["condition"] = getattr(u, "condition", "") or "clean"
        if m.session is not None:
            speech_end_ns = t0_ns + int((m.placement.offset_s + u.speech_end_s) * 1e9)
            vigil = ground_truth_spans(row["marks"], speech_end_ns)
            endpoint_ns = row["marks"].get("endpoint")
            if endpoint_ns is not None:
                vigil["speech_end_to_endpoint"] = round((endpoint_ns - speech_end_ns) / 1e6, 1)
            if "endpoint_score" in row["spans"]:
                vigil["endpoint_score"] = row["spans"]["endpoint_score"]
            heard_end_ns = row["marks"].get("speech_end")
            if pause_s is not None and heard_end_ns is not None:
                # the request was taken as ended before the words after the pause began: they are lost
                heard_end_s = (heard_end_ns - t0_ns) / 1e9 - m.placement.offset_s
                record["cut_off"] = bool(heard_end_s < pause_s[1])
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


def wake_by_condition(records: list[dict]) -> dict[str, dict]:
    """Wake utterances detected per recording condition (clean, room, ...) in the replay."""
    out: dict[str, dict] = {}
    for r in (r for r in records if r["wake_expected"]):
        c = out.setdefault(r.get("condition") or "clean", {"detected": 0, "total": 0})
        c["total"] += 1
        c["detected"] += bool(r["wake_detected"])
    for c in out.values():
        c["rate"] = round(c["detected"] / c["total"], 4)
    return out


# ---- the sequential baseline and the compute floor beside the replay, by file -------------------------------


def join_baseline(records: list[dict], baseline: list[dict]) -> None:
    """Each record's ``baseline``: the sequential script's spans and stages on the same file (by wav)."""
    by_wav = {b["wav"]: b for b in baseline}
    for record in records:
        b = by_wav.get(record["wav"], {})
        record["baseline"] = {**b.get("spans_ms", {}),
                              **{STAGES[k]: v for k, v in b.get("stages_ms", {}).items() if k in STAGES}}


def baseline_rows(records: list[dict]) -> list[dict]:
    """One row per corpus file (after ``join_baseline``): the baseline ran each file once, however many
    passes the replay made, so its percentiles are taken over these."""
    return [{"wake_expected": r["wake_expected"], "baseline": r.get("baseline", {})}
            for r in {r["wav"]: r for r in records}.values()]


def speedup(base: dict, ours: dict, key: str) -> float | None:
    """base[key] / ours[key] (e.g. the baseline's p50 over Vigil's), None when either is missing."""
    b, v = base.get(key), ours.get(key)
    if not b or not v or np.isnan(b) or np.isnan(v) or v <= 0:
        return None
    return round(b / v, 2)


def join_floor(records: list[dict], floor: list[dict]) -> None:
    """Each record's ``floor``: the engines' isolated compute on the same file (by wav)."""
    by_wav = {f["wav"]: f for f in floor}
    for record in records:
        f = by_wav.get(record["wav"], {})
        record["floor"] = {k: f[k] for k in ("stt_ms", "llm_first_token_ms") if k in f}


def floor_figures(records: list[dict]) -> dict:
    """After ``join_floor``: the floor (STT + first token, each alone) and Vigil's overhead over it on
    speech end -> first token, p50/p95."""
    floors, overheads = [], []
    for r in records:
        f = r.get("floor", {})
        if "stt_ms" in f and "llm_first_token_ms" in f:
            floors.append(f["stt_ms"] + f["llm_first_token_ms"])
            if HEADLINE_SPANS[0] in r["vigil"]:
                overheads.append(r["vigil"][HEADLINE_SPANS[0]] - floors[-1])
    return {"floor_ms": {k: percentiles(floors)[k] for k in ("p50", "p95")},
            "overhead_ms": {k: percentiles(overheads)[k] for k in ("p50", "p95")}}


def budget_p95_ms(records: list[dict]) -> float:
    """p95 of wake -> first token minus the request's own speech: what the latency budget bounds."""
    return percentiles([r["vigil"]["wake_to_first_token"] - max(0.0, r["vigil"]["request_speech"]) for r in records
                        if "wake_to_first_token" in r["vigil"] and "request_speech" in r["vigil"]])["p95"]


# ---- endpointing: complete requests and the hesitation set, per endpoint mode -------------------------------


def endpoint_summary(records: list[dict]) -> dict:
    """One endpoint mode's figures over answered wake utterances: speech end -> first token on complete
    requests (overall and per voice), the hesitation set's cut-offs, and the extra wait a hesitation costs."""
    wakes = [r for r in records if r["wake_expected"] and r["wake_detected"]]
    complete = [r for r in wakes if "pause_s" not in r and HEADLINE_SPANS[0] in r["vigil"]]
    hesitant = [r for r in wakes if "pause_s" in r]
    head = HEADLINE_SPANS[0]
    judged = [r for r in hesitant if r.get("cut_off") is not None]
    cut = [r for r in judged if r["cut_off"]]
    whole = [r for r in judged if not r["cut_off"] and head in r["vigil"]]
    complete_pct = percentiles([r["vigil"][head] for r in complete])
    hesitant_pct = percentiles([r["vigil"][head] for r in whole])
    by_voice: dict[str, list[float]] = {}
    for r in complete:
        by_voice.setdefault(r["voice"], []).append(r["vigil"][head])
    return {
        "complete": {head: complete_pct,
                     "speech_end_to_endpoint": percentiles([r["vigil"]["speech_end_to_endpoint"] for r in complete
                                                            if "speech_end_to_endpoint" in r["vigil"]]),
                     "by_voice": {v: percentiles(x) for v, x in sorted(by_voice.items())}},
        "hesitation": {"n": len(judged), "cut_offs": len(cut),
                       "cut_off_rate": round(len(cut) / len(judged), 4) if judged else None,
                       "cut_off_files": [r["wav"].rsplit("/", 1)[-1] for r in cut],
                       head: hesitant_pct,
                       "extra_wait_ms": (round(hesitant_pct["p50"] - complete_pct["p50"], 1)
                                         if whole and complete else None)},
        "scores": percentiles([r["vigil"]["endpoint_score"] for r in complete if "endpoint_score" in r["vigil"]]),
    }


def stage_split(records: list[dict]) -> dict:
    """Where speech end -> first token goes, per stage (p50/p95): the endpoint decision, the transcript
    after it, the answer's first token after the transcript."""
    answered = [r["vigil"] for r in records if r["wake_expected"] and HEADLINE_SPANS[0] in r.get("vigil", {})]
    split = {"speech_end_to_endpoint": [v["speech_end_to_endpoint"] for v in answered if "speech_end_to_endpoint" in v],
             "endpoint_to_transcript": [v["speech_end_to_transcript"] - v["speech_end_to_endpoint"] for v in answered
                                        if "speech_end_to_endpoint" in v and "speech_end_to_transcript" in v],
             "stt_compute": [v["stt_compute"] for v in answered if "stt_compute" in v],
             "transcript_to_first_token": [v["transcript_to_first_token"] for v in answered
                                           if "transcript_to_first_token" in v],
             "speech_end_to_first_token": [v[HEADLINE_SPANS[0]] for v in answered]}
    return {name: {k: percentiles(values)[k] for k in ("p50", "p95", "n")} for name, values in split.items()}


def threshold_curve(records: list[dict], max_pause_ms: float, text_weight: float,
                    thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)) -> list[dict]:
    """What other turn thresholds would have cost the complete requests of a turn-mode run (an estimate).

    Each complete request that the turn model scored fired when its evidence e = s + w (1 - s) met the
    threshold: at once for e >= t, else after ``max_pause_ms (1 - e / t)`` of pause (engines/stt/turn.py).
    A higher threshold only delays requests (it cannot add cut-offs: the hesitation set's open endings
    wait regardless), so each request's measured speech end -> first token grows by the extra wait.
    """
    head = HEADLINE_SPANS[0]
    scored = [r["vigil"] for r in records if r["wake_expected"] and "pause_s" not in r
              and "endpoint_score" in r.get("vigil", {}) and head in r["vigil"]]
    curve = []
    for t in thresholds:
        values = []
        for v in scored:
            e = v["endpoint_score"] + text_weight * (1.0 - v["endpoint_score"])
            wait = 0.0 if e >= t else max_pause_ms * (1.0 - e / t)
            fired = max(0.0, v.get("speech_end_to_endpoint", 0.0))
            values.append(v[head] + max(0.0, wait - fired))
        pct = percentiles(values)
        curve.append({"threshold": t, "p50": pct["p50"], "p95": pct["p95"], "n": pct["n"],
                      "waiting": sum(1 for v in scored if v["endpoint_score"] + text_weight
                                     * (1.0 - v["endpoint_score"]) < t)})
    return curve
