"""Render a bench run: `report.json` -> `report.md` (tables) and PNG plots (matplotlib, Agg).

    python -m bench.render RUN_DIR

Every section of report.json is optional: a missing or empty section renders as "n/a" and
its plot is skipped, never a crash. Plots (each only when its data exists):
  latency_cdf.png  CDF per span, Vigil solid vs the sequential baseline dashed (per-utterance data)
  stages.png       per utterance, Vigil's speech end -> first token split into endpoint wait,
                   STT compute and routing/LLM to first token
  idle.png         CPU % and RSS MB over time per worker during idle listening
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.latency import SPANS, finite, percentiles

HEADLINE = "speech_end_to_first_token"
CDF_SPANS = ("speech_end_to_first_token", "wake_to_first_token", "speech_end_to_transcript",
             "transcript_to_first_token")
SPAN_LABELS = {
    "wake_to_speech_end": "wake → speech end",
    "speech_end_to_transcript": "speech end → transcript",
    "transcript_to_first_token": "transcript → first token",
    "speech_end_to_first_token": "speech end → first token",
    "wake_to_first_token": "wake → first token",
    "first_token_to_done": "first token → done",
}
PLOTS = ("latency_cdf.png", "stages.png", "idle.png")
TARGET_MS = 1000.0  # our own target: speech end -> first token p95 under 1.0 s

VIGIL_COLOR, BASELINE_COLOR = "#1f77b4", "#d62728"
STAGE_COLORS = ("#bdbdbd", "#2ca02c", "#ff7f0e")  # endpoint wait, STT compute, routing/LLM


# ----------------------------------------------------------------------------------------------
# small helpers

def fmt_ms(value: Any) -> str:
    v = finite(value)
    if v is None:
        return "n/a"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"


def fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    v = finite(value)
    return "n/a" if v is None else f"{v:.{digits}f}{suffix}"


def fmt_g(value: Any) -> str:
    v = finite(value)
    return "n/a" if v is None else f"{v:g}"


def fmt_int(value: Any) -> str:
    v = finite(value)
    return "n/a" if v is None else str(int(round(v)))


def fmt_pct(fraction: Any) -> str:
    v = finite(fraction)
    return "n/a" if v is None else f"{100 * v:.1f} %"


def ratio(num: Any, den: Any) -> float | None:
    a, b = finite(num), finite(den)
    if a is None or b is None or b == 0:
        return None
    return a / b


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def table(headers: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    """A Markdown table; `align` one char per column ('l' or 'r'), default first left, rest right."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def route_kind(route: Any) -> str | None:
    """'skill' for 'skill' / 'skill:NAME', 'llm' for 'llm', else None."""
    if not isinstance(route, str) or not route:
        return None
    head = route.split(":", 1)[0].strip().lower()
    return head if head in ("skill", "llm") else None


def span_order(*dicts: dict) -> list[str]:
    """Known spans in pipeline order first, then any others sorted."""
    present: set[str] = set()
    for d in dicts:
        present |= set(_dict(d))
    known = [name for name, _, _ in SPANS if name in present]
    return known + sorted(present - set(known))


def _values(utterances: list[dict], side: str, key: str, kind: str | None = None) -> list[float]:
    out = []
    for u in utterances:
        if kind is not None and route_kind(u.get("route")) != kind:
            continue
        v = finite(_dict(u.get(side)).get(key))
        if v is not None:
            out.append(v)
    return out


# ----------------------------------------------------------------------------------------------
# report.md

def _span_table(vigil: dict, base: dict) -> list[str]:
    names = span_order(vigil, base)
    if not names:
        return ["_no span data_"]
    rows = []
    for name in names:
        v, b = _dict(vigil.get(name)), _dict(base.get(name))
        label = SPAN_LABELS.get(name, name)
        if name == HEADLINE:
            label = f"**{label}** (headline)"
        rows.append([label, fmt_ms(v.get("p50")), fmt_ms(v.get("p95")), fmt_ms(v.get("p99")), fmt_int(v.get("n")),
                     fmt_ms(b.get("p50")), fmt_ms(b.get("p95")), fmt_ms(b.get("p99")), fmt_int(b.get("n")),
                     fmt(ratio(b.get("p50"), v.get("p50")), 2, "×"), fmt(ratio(b.get("p95"), v.get("p95")), 2, "×")])
    return table(["span (ms)", "Vigil p50", "p95", "p99", "n", "baseline p50", "p95", "p99", "n",
                  "ratio p50", "ratio p95"], rows)


def _route_section(report: dict, utterances: list[dict]) -> list[str]:
    by_route = _dict(report.get("spans_ms_by_route"))
    kinds = [k for k in ("skill", "llm") if _dict(by_route.get(k))]
    kinds += sorted(k for k in by_route if k not in ("skill", "llm") and _dict(by_route.get(k)))
    if not kinds:
        return []
    out = ["## Latency by route", "",
           "Skills answer in code, LLM answers wait for the model: reported apart so fast skills do not hide "
           "LLM latency. Baseline columns are computed from the per-utterance data of the same utterances.", ""]
    for kind in kinds:
        vigil = _dict(by_route.get(kind))
        rows = []
        for name in span_order(vigil):
            v = _dict(vigil.get(name))
            b = percentiles(_values(utterances, "baseline", name, kind))
            rows.append([SPAN_LABELS.get(name, name), fmt_ms(v.get("p50")), fmt_ms(v.get("p95")),
                         fmt_ms(v.get("p99")), fmt_int(v.get("n")), fmt_ms(b["p50"]), fmt_ms(b["p95"]),
                         fmt_int(b["n"]), fmt(ratio(b["p95"], v.get("p95")), 2, "×")])
        out += [f"### {kind}", ""]
        out += table(["span (ms)", "Vigil p50", "p95", "p99", "n", "baseline p50", "p95", "n", "ratio p95"], rows)
        out.append("")
    return out


def _endpoint_section(report: dict) -> list[str]:
    """Per endpoint mode, same run: complete requests' speech end -> first token, the hesitation set's cut-offs."""
    endpoint = _dict(report.get("endpoint"))
    modes = _dict(endpoint.get("modes"))
    if not modes:
        return []
    targets, met = _dict(endpoint.get("targets")), _dict(_dict(endpoint.get("targets")).get("met"))
    rows, voices = [], []
    for mode, m in modes.items():
        m = _dict(m)
        c, h = _dict(m.get("complete")), _dict(m.get("hesitation"))
        head, wait = _dict(c.get(HEADLINE)), _dict(c.get("speech_end_to_endpoint"))
        hes = _dict(h.get(HEADLINE))
        label = f"**{mode}** (default)" if mode == endpoint.get("default") else mode
        rows.append([label, fmt_ms(head.get("p50")), fmt_ms(head.get("p95")), fmt_int(head.get("n")),
                     fmt_ms(wait.get("p50")), fmt_ms(wait.get("p95")),
                     f"{fmt_int(h.get('cut_offs'))} / {fmt_int(h.get('n'))}", fmt_pct(h.get("cut_off_rate")),
                     fmt_ms(hes.get("p50")), fmt_ms(h.get("extra_wait_ms"))])
        for voice, pct in _dict(c.get("by_voice")).items():
            pct = _dict(pct)
            voices.append([mode, voice, fmt_ms(pct.get("p50")), fmt_ms(pct.get("p95")), fmt_int(pct.get("n"))])
    check = lambda key: "met" if met.get(key) is True else "**missed**" if met.get(key) is False else "n/a"  # noqa: E731
    out = ["## Endpointing: when is the person done?", "",
           "Complete requests (no pause inside) and the hesitation set (a 0.4–0.8 s pause mid-request) replayed "
           "under each endpoint mode in the same run. Cut-off: the request was taken as ended before the words "
           "after the pause began. Extra wait: hesitation requests' speech end → first token p50 minus complete "
           "requests'.", ""]
    out += table(["mode", "speech end → first token p50", "p95", "n", "speech end → endpoint p50", "p95",
                  "cut-offs", "rate", "hesitations SE→FT p50", "extra wait"], rows) + [""]
    out += [f"Targets (default mode): p50 ≤ {fmt_ms(targets.get('p50_ms'))} ms {check('p50')}, p95 ≤ "
            f"{fmt_ms(targets.get('p95_ms'))} ms {check('p95')}, cut-offs ≤ {fmt_pct(targets.get('cut_off_rate'))} "
            f"{check('cut_offs')}, ≥ {fmt(targets.get('vs_baseline_p50'), 0)}× faster at p50 than the sequential "
            f"baseline's {fmt_int(endpoint.get('baseline_end_silence_ms'))} ms silence rule: "
            f"{fmt(endpoint.get('vs_baseline_p50'), 2, '×')} {check('vs_baseline')}.", ""]
    if voices:
        out += ["Complete requests per voice:", ""] + table(["mode", "voice", "p50", "p95", "n"], voices) + [""]
    sweep = [_dict(c) for c in _list(endpoint.get("sweep"))]
    if sweep:
        out += ["Trade-off (measured, `bench --endpoint-sweep`): the endpoint set replayed in turn mode once per "
                "setting — `turn_min_pause_ms`, the shortest pause that may end a request; `turn_sure_ending`, how "
                "sure whisper must be of the sentence end it wrote.", ""]
        out += table(["[stt] setting", "SE→FT p50", "p95", "n", "hesitations cut off"],
                     [[f"{c.get('key')} = {fmt_g(c.get('value'))}", fmt_ms(c.get("p50")), fmt_ms(c.get("p95")),
                       fmt_int(c.get("n")), f"{fmt_int(c.get('cut_offs'))} / {fmt_int(c.get('hesitations'))}"]
                      for c in sweep]) + [""]
    curve = [_dict(c) for c in _list(endpoint.get("threshold_curve"))]
    if any(c.get("n") for c in curve):  # only requests the turn model scored have a point on it
        out += ["Trade-off (estimated from this run's turn-model scores): a higher `turn_threshold` makes complete "
                "requests wait; the hesitation set's open endings wait whatever the threshold.", ""]
        out += table(["turn_threshold", "SE→FT p50", "p95", "requests that wait", "n"],
                     [[fmt(c.get("threshold"), 2), fmt_ms(c.get("p50")), fmt_ms(c.get("p95")),
                       fmt_int(c.get("waiting")), fmt_int(c.get("n"))] for c in curve]) + [""]
    return out + _tail_section(report)


def _tail_section(report: dict) -> list[str]:
    """Where speech end → first token went, per stage, in each bench section that replayed requests."""
    tail = _dict(report.get("tail"))
    if not tail:
        return []
    names = ("speech_end_to_endpoint", "endpoint_to_transcript", "stt_compute", "transcript_to_first_token",
             "speech_end_to_first_token")
    rows = []
    for section, split in tail.items():
        split = _dict(split)
        rows.append([section] + [f"{fmt_ms(_dict(split.get(n)).get('p50'))} / {fmt_ms(_dict(split.get(n)).get('p95'))}"
                                 for n in names] + [fmt_int(_dict(split.get(HEADLINE)).get("n"))])
    return (["### Per stage, per bench section (p50 / p95 ms)", ""]
            + table(["section", "speech end → endpoint", "endpoint → transcript", "STT compute",
                     "transcript → first token", "speech end → first token", "n"], rows) + [""])


def _stages_section(report: dict) -> list[str]:
    vigil = _dict(report.get("stages_ms"))
    base = _dict(_dict(report.get("baseline")).get("stages_ms"))
    names = [n for n in vigil] + [n for n in base if n not in vigil]
    out = ["## Stage compute times", "", "Each stage's own compute time (not wall time between marks).", ""]
    if not names:
        return out + ["_no stage data_", ""]
    rows = [[name, fmt_ms(_dict(vigil.get(name)).get("p50")), fmt_ms(_dict(vigil.get(name)).get("p95")),
             fmt_ms(_dict(base.get(name)).get("p50")), fmt_ms(_dict(base.get(name)).get("p95"))] for name in names]
    return out + table(["stage (ms)", "Vigil p50", "p95", "baseline p50", "p95"], rows) + [""]


def _overhead_section(report: dict) -> list[str]:
    floor, overhead = _dict(report.get("floor_ms")), _dict(report.get("overhead_ms"))
    head = _dict(_dict(report.get("spans_ms")).get(HEADLINE))
    base_head = _dict(_dict(_dict(report.get("baseline")).get("spans_ms")).get(HEADLINE))
    ratios = _dict(report.get("ratio_baseline_over_vigil"))
    out = ["## Overhead and floor", "",
           "Floor: each engine's isolated compute on the same utterance (STT on the exact audio + LLM time to "
           "first token on the exact prompt). Overhead: Vigil's speech end → first token minus the floor.", ""]
    rows = [["compute floor", fmt_ms(floor.get("p50")), fmt_ms(floor.get("p95"))],
            ["Vigil speech end → first token", fmt_ms(head.get("p50")), fmt_ms(head.get("p95"))],
            ["pipeline overhead (Vigil − floor)", fmt_ms(overhead.get("p50")), fmt_ms(overhead.get("p95"))],
            ["baseline speech end → first token", fmt_ms(base_head.get("p50")), fmt_ms(base_head.get("p95"))],
            ["ratio baseline / Vigil", fmt(ratios.get("p50"), 2, "×"), fmt(ratios.get("p95"), 2, "×")]]
    return out + table(["(ms)", "p50", "p95"], rows) + [""]


def _wake_section(report: dict) -> list[str]:
    wake = _dict(report.get("wake"))
    detected, missed = finite(wake.get("detected")), finite(wake.get("missed"))
    false_wakes, hours = finite(wake.get("false_wakes")), finite(wake.get("negatives_hours"))
    rate = ratio(detected, (detected or 0) + (missed or 0)) if detected is not None else None
    per_hour = ratio(false_wakes, hours)
    rows = [["detected", fmt_int(detected)], ["missed", fmt_int(missed)], ["detection rate", fmt_pct(rate)],
            ["false wakes", fmt_int(false_wakes)], ["negative audio (hours)", fmt(hours, 3)],
            ["false wakes per hour", fmt(per_hour, 2)]]
    return (["## Wake word", "", "In the pipeline replay:", ""] + table(["", "value"], rows) + [""]
            + _wake_engines_section(wake))


WAKE_CONDITIONS = ("clean", "pink", "babble", "room")


def _wake_engines_section(wake: dict) -> list[str]:
    """The offline wake evaluation (bench/wake_eval.py): one row per configuration."""
    engines = _dict(wake.get("by_engine"))
    skipped = _dict(wake.get("skipped"))
    if wake.get("eval_error"):
        return ["### Wake corpus, per configuration", "", f"Not measured: {wake['eval_error']}", ""]
    if not engines and not skipped:
        return []
    corpus = _dict(wake.get("corpus"))
    minutes = _dict(corpus.get("minutes"))
    out = ["### Wake corpus, per configuration", "",
           f"Default: `{wake.get('default_config', 'n/a')}`. Corpus: {len(_list(corpus.get('voices')))} voices; "
           + ", ".join(f"{k} {fmt(v, 1)} min" for k, v in minutes.items())
           + ". Pink noise and babble at 10 dB SNR; room = a far-field room (bench/rooms.py: T30 0.4-0.8 s, "
             "1-2 m away); delay = end of \"jarvis\" → accepted wake.", ""]
    rows = []
    for name, r in engines.items():
        r = _dict(r)
        cond, fw = _dict(r.get("conditions")), _dict(r.get("false_wakes"))
        held = _dict(r.get("heldout"))

        def det(c: str, src: dict = cond) -> str:
            d = _dict(src.get(c))
            return f"{fmt_int(d.get('detected'))}/{fmt_int(d.get('total'))}" if d else "n/a"

        delay, ver = _dict(r.get("delay_ms")), _dict(r.get("verify_ms"))
        rows.append([f"`{name}`", det("clean"), det("pink"), det("babble"), det("room"),
                     " ".join(det(c, held) for c in WAKE_CONDITIONS),
                     fmt(_dict(fw.get("ordinary")).get("per_hour"), 2), fmt(_dict(fw.get("noise")).get("per_hour"), 2),
                     fmt_int(_dict(fw.get("near_miss")).get("count")),
                     f"{fmt_int(_dict(fw.get('ordinary:room')).get('count'))} / "
                     f"{fmt_int(_dict(fw.get('near_miss:room')).get('count'))}", fmt_int(r.get("double_wakes")),
                     f"{fmt_ms(delay.get('p50'))} / {fmt_ms(delay.get('p95'))}",
                     fmt(r.get("proposer_cpu_ms_per_audio_s"), 1),
                     f"{fmt_ms(ver.get('p50'))} / {fmt_ms(ver.get('p95'))}" if ver else "—"])
    for name, why in skipped.items():
        rows.append([f"`{name}`", "skipped: " + str(why)[:120]] + [""] * 12)
    return out + table(["config", "clean", "pink", "babble", "room", "held-out voices (c/p/b/r)", "ordinary false/h",
                        "noise false/h", "near-miss false", "room false (ordinary / near miss)", "double wakes",
                        "delay p50 / p95 ms",
                        "proposer CPU ms/s", "verify p50 / p95 ms"], rows) + [""] + _wake_gate_section(wake)


def _wake_gate_section(wake: dict) -> list[str]:
    """openWakeWord behind the idle gate (workers/wake_gate.py) against ungated, per stream of the corpus."""
    gate = _dict(wake.get("gate"))
    if not gate:
        return []
    rows = [[f"`{k}`", fmt(_dict(v).get("cpu_ms_per_audio_s"), 1), fmt_pct(_dict(v).get("skipped")),
             fmt_int(_dict(v).get("proposals")), fmt_int(_dict(v).get("proposals_lost")),
             fmt_int(_dict(v).get("proposals_added"))] for k, v in _dict(gate.get("by_stream")).items()]
    cpu = _dict(gate.get("cpu_ms_per_audio_s"))
    return (["### Idle gate", "",
             f"openWakeWord CPU ms per audio second: {fmt(cpu.get('ungated'), 1)} ungated, {fmt(cpu.get('gated'), 1)} "
             f"gated; proposals at {gate.get('threshold')} changed: {fmt_int(gate.get('proposals_changed'))}.", ""]
            + table(["stream", "gated CPU ms/s", "frames skipped", "proposals", "lost", "added"], rows) + [""])


def _stt_speaker_section(report: dict) -> list[str]:
    stt, speaker = _dict(report.get("stt")), _dict(report.get("speaker"))
    rows = [["STT word error rate", fmt_pct(stt.get("wer"))],
            ["STT utterances scored", fmt_int(stt.get("n"))],
            ["speaker accuracy", fmt_pct(speaker.get("accuracy"))
             + (f" ({speaker['note']})" if speaker.get("note") and finite(speaker.get("accuracy")) is None else "")],
            ["enrolled voices identified", fmt_pct(speaker.get("enrolled_identified"))],
            ["strangers called unknown", fmt_pct(speaker.get("strangers_rejected"))]]
    first_word_errors = f"{fmt_int(stt.get('first_word_errors'))} / {fmt_int(stt.get('files'))}"
    rows[2:2] = [["first word not heard (files)", first_word_errors],
                 ["wake-phrase leaks (files)", fmt_int(stt.get("leaks"))],
                 ["repetition loops", fmt_int(stt.get("loops"))]]
    return (["## Transcription and speaker ID", "",
             "WER with Whisper's English normaliser (numbers, contractions, punctuation, case); first word = the "
             "transcript starts with the request's first word; leak = words before it (\"This, set a timer\"); "
             "speaker figures by the voices enrolled in this run "
             f"({', '.join(_list(speaker.get('enrolled'))) or 'n/a'}).",
             ""] + table(["", "value"], rows) + [""] + _hearing_by_condition(report) + _stt_by_voice(stt))


def _hearing_by_condition(report: dict) -> list[str]:
    """Wake detection (replay), STT and speaker ID per recording condition of the bench corpus."""
    wake = _dict(_dict(report.get("wake")).get("by_condition"))
    stt = _dict(_dict(report.get("stt")).get("by_condition"))
    speaker = _dict(_dict(report.get("speaker")).get("by_condition"))
    rows = []
    for c in dict.fromkeys([*wake, *stt, *speaker]):
        w, t, s = _dict(wake.get(c)), _dict(stt.get(c)), _dict(speaker.get(c))
        rows.append([c, f"{fmt_int(w.get('detected'))}/{fmt_int(w.get('total'))}", fmt(t.get("wer"), 3),
                     f"{fmt_int(t.get('first_word_errors'))}/{fmt_int(t.get('files'))}", fmt_int(t.get("leaks")),
                     fmt_int(t.get("loops")), fmt_pct(s.get("accuracy"))])
    if not rows:
        return []
    return ["### Per condition", ""] + table(["condition", "wake detected", "WER", "first word not heard", "leaks",
                                              "loops", "speaker accuracy"], rows) + [""]


def _stt_by_voice(stt: dict) -> list[str]:
    voices = _dict(stt.get("by_voice"))
    rows = [[f"`{v}`", fmt(_dict(x).get("wer"), 3), f"{fmt_int(_dict(x).get('first_word_errors'))}/"
             f"{fmt_int(_dict(x).get('files'))}", fmt_int(_dict(x).get("loops"))] for v, x in voices.items()]
    errors = [f"- {fmt_int(_dict(e).get('count'))}× \"{_dict(e).get('ref')}\" → \"{_dict(e).get('heard')}\""
              for e in _list(stt.get("top_errors"))]
    out = (["### WER per voice", ""] + table(["voice", "WER", "first word not heard", "loops"], rows) + [""]
           if rows else [])
    return out + (["Most frequent wrong transcripts:", ""] + errors + [""] if errors else [])


def _skills_section(report: dict) -> list[str]:
    """Skill routing on the labelled phrasings (bench/skill_eval.py): right skill, and no false skill."""
    skills = _dict(report.get("skills"))
    if not skills:
        return []
    rows = [["skill accuracy (phrasings that must reach a skill)",
             f"{fmt_pct(skills.get('skill_accuracy'))} of {fmt_int(skills.get('to_skill'))}"],
            ["false-skill rate (answered by a skill they should not reach)",
             f"{fmt_pct(skills.get('false_skill_rate'))} of {fmt_int(skills.get('phrasings'))}"],
            ["near misses routed right", f"{fmt_pct(skills.get('near_miss_accuracy'))} of "
                                         f"{fmt_int(skills.get('near_misses'))}"]]
    wrong = [f"- false skill: \"{w.get('text')}\" → {w.get('routed')} (expected {w.get('expected') or 'the LLM'})"
             for w in _list(skills.get("false_skills")) if isinstance(w, dict)]
    wrong += [f"- missed: \"{m.get('text')}\" → {m.get('routed') or 'the LLM'} (expected {m.get('expected')})"
              for m in _list(skills.get("missed")) if isinstance(m, dict)]
    return ["## Skill routing", ""] + table(["", "value"], rows) + [""] + (wrong + [""] if wrong else [])


def _variants_section(report: dict) -> list[str]:
    """The A/B replays: what the verifier and a slow speaker ID do to the headline (same run)."""
    variants = _dict(report.get("variants"))
    if not variants:
        return []
    rows = []
    for name, v in variants.items():
        v = _dict(v)
        head = _dict(v.get("speech_end_to_first_token"))
        rows.append([name, fmt_ms(head.get("p50")), fmt_ms(head.get("p95")), str(v.get("p50_ratio_to_default", "n/a")),
                     f"{fmt_int(v.get('answered'))} / {fmt_int(v.get('utterances'))}",
                     f"{fmt_int(v.get('speaker_overlapped_stt'))} / {fmt_int(v.get('speaker_compared'))}",
                     fmt_int(v.get("wake_rejected"))])
    return ["## Variants: verifier and speaker ID (same utterances, same run)", ""] + table(
        ["variant", "speech end → first token p50", "p95", "p50 ÷ default", "answered", "speaker ∥ STT",
         "wake_rejected"], rows) + [""]


def _resources_table(res: dict) -> list[str]:
    cpu, rss = _dict(res.get("cpu_percent_by_worker")), _dict(res.get("rss_mb_by_worker"))
    slope = _dict(res.get("rss_slope_mb_per_h"))
    workers = list(dict.fromkeys([*cpu, *rss, *slope]))
    rows = [[w, fmt(cpu.get(w), 1), fmt(rss.get(w), 1), fmt(slope.get(w), 2)] for w in workers]
    rss_total = sum(v for v in (finite(rss.get(w)) for w in workers) if v is not None) if rss else None
    rows.append(["**total**", fmt(res.get("cpu_percent_total"), 1), fmt(rss_total, 1), ""])
    return table(["worker", "CPU % (mean)", "RSS MB (median)", "RSS slope MB/h"], rows)


def _idle_section(report: dict) -> list[str]:
    idle = report.get("idle")
    out = ["## Idle listening", ""]
    if not isinstance(idle, dict) or not idle:
        return out + ["n/a (no idle run)", ""]
    out.append(f"{fmt(idle.get('seconds'), 0)} s of silence and background noise; CPU % of one core.")
    return out + [""] + _resources_table(idle) + [""]


def _continuous_section(report: dict) -> list[str]:
    cont = _dict(report.get("continuous"))
    res = _dict(cont.get("resources"))
    if not cont:
        return []
    out = ["## Resources during continuous use", "",
           f"{fmt(cont.get('wall_s'), 0)} s of replay; worker restarts: {fmt_int(cont.get('worker_restarts'))}.", ""]
    if res:
        out += _resources_table(res) + [""]
    return out


def _flatten(prefix: str, value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(f"{prefix}.{k}" if prefix else str(k), v)
    else:
        yield prefix, value


def _load_section(report: dict) -> list[str]:
    load = report.get("load")
    out = ["## Load (utterances faster than answers)", ""]
    if not isinstance(load, dict) or not load:
        return out + ["n/a (no load run)", ""]
    rows = []
    for key, value in _flatten("", load):
        v = finite(value)
        if isinstance(value, list):
            text = f"[{', '.join(map(str, value))}]" if len(value) <= 8 else f"list of {len(value)}"
        else:
            text = str(value) if v is None else (str(int(v)) if float(v).is_integer() else f"{v:.2f}")
        rows.append([key, text])
    return out + table(["", "value"], rows) + [""]


def _drops_section(report: dict) -> list[str]:
    drops = _dict(report.get("drops"))
    out = ["## Ring drops", ""]
    if not drops:
        return out + ["none recorded", ""]
    return out + table(["ring", "dropped"], [[ring, fmt_int(n)] for ring, n in drops.items()]) + [""]


def _machine_section(report: dict) -> list[str]:
    machine = _dict(report.get("machine"))
    rows = [[k, str(machine.get(k, "n/a"))] for k in ("cpus", "model", "python")]
    rows += [[k, str(v)] for k, v in machine.items() if k not in ("cpus", "model", "python")]
    return ["## Machine", ""] + table(["", ""], rows, align="ll") + [""]


def budget_line(report: dict) -> str:
    budget = _dict(report.get("budget"))
    ok = budget.get("ok")
    verdict = "**OK**" if ok is True else "**OVER BUDGET**" if ok is False else "n/a"
    return (f"Budget check: wake → first token minus the request's own speech duration, p95 = "
            f"{fmt_ms(budget.get('p95_ms'))} ms vs budget {fmt_ms(budget.get('budget_ms'))} ms: {verdict}")


def _utterance_section(utterances: list[dict]) -> list[str]:
    if not utterances:
        return []
    rows = []
    for u in utterances:
        v, b, floor = _dict(u.get("vigil")), _dict(u.get("baseline")), _dict(u.get("floor"))
        floor_sum = None
        if finite(floor.get("stt_ms")) is not None and finite(floor.get("llm_first_token_ms")) is not None:
            floor_sum = finite(floor.get("stt_ms")) + finite(floor.get("llm_first_token_ms"))
        wake = f"{'yes' if u.get('wake_detected') else 'no'}" + ("" if u.get("wake_expected", True) else " (neg)")
        rows.append([Path(str(u.get("wav", "?"))).name, str(u.get("kind", "")), str(u.get("voice", "")), wake,
                     str(u.get("route") or ""), fmt_ms(v.get(HEADLINE)), fmt_ms(b.get(HEADLINE)),
                     fmt_ms(floor_sum), str(u.get("transcript_ref") or ""), str(u.get("transcript") or "")])
    out = ["## Per utterance", "", f"<details><summary>{len(utterances)} utterances</summary>", ""]
    out += table(["wav", "kind", "voice", "wake", "route", "Vigil SE→FT ms", "baseline SE→FT ms", "floor ms",
                  "reference", "transcript"], rows, align="lllllrrrll")
    return out + ["", "</details>", ""]


def render_markdown(report: dict, plots: list[str]) -> str:
    spans = _dict(report.get("spans_ms"))
    base_spans = _dict(_dict(report.get("baseline")).get("spans_ms"))
    utterances = [u for u in _list(report.get("utterances")) if isinstance(u, dict)]
    head = _dict(spans.get(HEADLINE))
    lines = [f"# Vigil bench — {report.get('run', 'run')}", "",
             f"Corpus `{report.get('corpus', 'n/a')}`, {fmt_int(report.get('passes'))} pass(es), "
             f"{len(utterances)} utterance(s) replayed in real time through the full pipeline.", "",
             f"Headline: speech end → first token p50 {fmt_ms(head.get('p50'))} ms, "
             f"p95 {fmt_ms(head.get('p95'))} ms (target p95 < {TARGET_MS:.0f} ms), n = {fmt_int(head.get('n'))}.", "",
             budget_line(report), "",
             "## Latency: Vigil vs sequential baseline", "",
             "Same corpus, same engines, same run. Ratio = baseline / Vigil (> 1: Vigil is faster).", ""]
    lines += _span_table(spans, base_spans) + [""]
    lines += _endpoint_section(report)
    lines += _route_section(report, utterances)
    lines += _stages_section(report)
    lines += _overhead_section(report)
    lines += _wake_section(report)
    lines += _stt_speaker_section(report)
    lines += _skills_section(report)
    lines += _variants_section(report)
    lines += _continuous_section(report)
    lines += _idle_section(report)
    lines += _load_section(report)
    lines += _drops_section(report)
    lines += _machine_section(report)
    lines += ["## Plots", ""]
    descriptions = {
        "latency_cdf.png": "latency CDF per span, Vigil solid vs baseline dashed",
        "stages.png": "per-utterance split of Vigil's speech end → first token",
        "idle.png": "CPU % and RSS over time per worker while idle",
    }
    lines += [f"- `{name}`: {descriptions[name]}\n\n  ![{name}]({name})" for name in plots] or ["none (no data)"]
    lines.append("")
    lines += _utterance_section(utterances)
    config = report.get("config")
    if isinstance(config, dict) and config:
        lines += ["## Config", "", "```json", json.dumps(config, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# plots

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cdf(utterances: list[dict], path: Path) -> bool:
    data = {span: (_values(utterances, "vigil", span), _values(utterances, "baseline", span)) for span in CDF_SPANS}
    if not any(v or b for v, b in data.values()):
        return False
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    for ax, span in zip(axes.flat, CDF_SPANS):
        vigil, base = data[span]
        for values, label, color, style in ((vigil, "Vigil", VIGIL_COLOR, "-"),
                                            (base, "baseline (sequential)", BASELINE_COLOR, "--")):
            if not values:
                continue
            xs = np.sort(np.asarray(values, dtype=float))
            ys = np.arange(1, xs.size + 1) / xs.size
            p95 = float(np.percentile(xs, 95))
            ax.step(np.concatenate([[xs[0]], xs]), np.concatenate([[0.0], ys]), where="post", color=color,
                    linestyle=style, linewidth=2,
                    label=f"{label}: p50 {np.median(xs):.0f}, p95 {p95:.0f} ms, n={xs.size}")
        if not vigil and not base:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
        if span == HEADLINE:
            ax.axvline(TARGET_MS, color="black", linestyle=":", linewidth=1)
            ax.text(TARGET_MS, 0.5, " target\n p95 < 1 s", fontsize=8, va="center")
        ax.axhline(0.95, color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(SPAN_LABELS.get(span, span))
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("fraction of utterances ≤ x")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(left=0)
        ax.grid(True, alpha=0.3)
        if vigil or base:
            ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    fig.suptitle("Latency CDF per span — Vigil (solid) vs sequential baseline (dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def stage_split(u: dict) -> tuple[float, float, float] | None:
    """(endpoint wait, STT compute, routing/LLM to first token) in ms for Vigil, or None if incomplete."""
    v = _dict(u.get("vigil"))
    s2t, stt, t2f = (finite(v.get(k)) for k in ("speech_end_to_transcript", "stt_compute", "transcript_to_first_token"))
    if s2t is None or stt is None or t2f is None:
        return None
    return max(0.0, s2t - stt), stt, max(0.0, t2f)


def _label(u: dict, index: int) -> str:
    name = Path(str(u.get("wav") or f"#{index}")).stem
    kind = route_kind(u.get("route"))
    return f"{index}: {name}" + (f" [{kind}]" if kind else "")


def plot_stages(utterances: list[dict], path: Path) -> bool:
    items = [(i, u, split) for i, u in enumerate(utterances, 1) if (split := stage_split(u)) is not None]
    if not items:
        return False
    import numpy as np

    plt = _pyplot()
    n = len(items)
    labelled = n <= 100
    fig, ax = plt.subplots(figsize=(12, max(3.5, 0.24 * n + 1.8) if labelled else 9))
    y = np.arange(n)
    parts = np.array([split for _, _, split in items])
    if not labelled:  # too many to name: sort by total so the distribution of the split reads at a glance
        parts = parts[np.argsort(parts.sum(axis=1), kind="stable")]
    left = np.zeros(n)
    names = ("endpoint wait (speech end → STT start)", "STT compute", "routing + LLM → first token")
    height = 0.75 if labelled else 1.0
    for k in range(3):
        ax.barh(y, parts[:, k], left=left, height=height, color=STAGE_COLORS[k], label=names[k],
                edgecolor="white" if labelled else None, linewidth=0.5 if labelled else 0)
        left += parts[:, k]
    ax.axvline(TARGET_MS, color="black", linestyle=":", linewidth=1, label=f"target {TARGET_MS / 1000:.1f} s")
    if labelled:
        ax.set_yticks(y, [_label(u, i) for i, u, _ in items], fontsize=8)
    else:
        ax.set_ylabel("utterances, sorted by speech end → first token")
        ax.set_ylim(-0.5, n - 0.5)
    ax.invert_yaxis()
    ax.set_xlabel("ms after speech end")
    ax.set_xlim(left=0)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize=8, frameon=False)
    ax.set_title(f"Vigil: speech end → first token per utterance, by stage (n={n})", pad=22)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_idle(idle: Any, path: Path) -> bool:
    samples = [s for s in _list(_dict(idle).get("samples")) if isinstance(s, dict) and finite(s.get("t")) is not None]
    if not samples:
        return False
    workers = list(dict.fromkeys(w for s in samples for key in ("cpu", "rss_mb") for w in _dict(s.get(key))))
    if not workers:
        return False
    plt = _pyplot()
    t_max = max(finite(s["t"]) for s in samples)
    scale, unit = (3600.0, "h") if t_max > 3 * 3600 else (60.0, "min") if t_max > 300 else (1.0, "s")
    fig, (ax_cpu, ax_rss) = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, w in enumerate(workers):
        color = colors[i % len(colors)]
        for ax, key in ((ax_cpu, "cpu"), (ax_rss, "rss_mb")):
            pts = [(finite(s["t"]) / scale, finite(_dict(s.get(key)).get(w))) for s in samples]
            pts = [(t, v) for t, v in pts if v is not None]
            if pts:
                ax.plot(*zip(*pts), color=color, linewidth=1.5, label=w, marker="." if len(pts) < 60 else None)
    totals = [(finite(s["t"]) / scale,
               sum(v for v in (finite(x) for x in _dict(s.get("cpu")).values()) if v is not None))
              for s in samples if _dict(s.get("cpu"))]
    if totals:
        ax_cpu.plot(*zip(*totals), color="black", linestyle="--", linewidth=1.2, label="total")
    ax_cpu.set_ylabel("CPU % (of one core)")
    ax_cpu.set_ylim(bottom=0)
    ax_cpu.set_title("Idle listening: CPU per worker")
    ax_rss.set_ylabel("RSS (MB)")
    ax_rss.set_ylim(bottom=0)
    ax_rss.set_title("Idle listening: resident memory per worker")
    ax_rss.set_xlabel(f"time since start ({unit})")
    for ax in (ax_cpu, ax_rss):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------------

def render(run_dir: Path) -> None:
    """Read `run_dir/report.json`; write `run_dir/report.md` and the plots whose data exists."""
    run_dir = Path(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    if not isinstance(report, dict):
        raise ValueError(f"{run_dir / 'report.json'}: not a JSON object")
    utterances = [u for u in _list(report.get("utterances")) if isinstance(u, dict)]
    makers = {"latency_cdf.png": lambda p: plot_cdf(utterances, p),
              "stages.png": lambda p: plot_stages(utterances, p),
              "idle.png": lambda p: plot_idle(report.get("idle"), p)}
    plots = []
    for name in PLOTS:
        path = run_dir / name
        path.unlink(missing_ok=True)  # no stale plot from an earlier render of this directory
        if makers[name](path):
            plots.append(name)
    (run_dir / "report.md").write_text(render_markdown(report, plots))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.render",
                                     description="Render RUN_DIR/report.json into report.md and PNG plots.")
    parser.add_argument("run_dir", type=Path, help="a bench run directory holding report.json")
    args = parser.parse_args(argv)
    if not (args.run_dir / "report.json").is_file():
        print(f"python -m bench.render: error: {args.run_dir / 'report.json'} not found", file=sys.stderr)
        return 2
    try:
        render(args.run_dir)
    except (ValueError, OSError) as exc:  # json.JSONDecodeError is a ValueError
        print(f"python -m bench.render: error: {exc}", file=sys.stderr)
        return 2
    print(args.run_dir / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
