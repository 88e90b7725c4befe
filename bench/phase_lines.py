"""What `pipeline bench` prints as each phase ends: its key figures in a line or two, while the next one runs.

A full bench takes many minutes; an operator should not have to wait for report.md to see that the
replay answered or that the baseline is slower. Every figure here is computed by the function the
report takes it from (bench/analysis.py, bench/wer.py, bench/speaker_bench.py, ...) or read from a
phase's own result, so what scrolls by is what report.json will say.
"""

from __future__ import annotations

import math

from bench.analysis import (
    HEADLINE_SPANS, baseline_rows, budget_p95_ms, endpoint_summary, floor_figures, span_percentiles, speedup,
    wake_summary,
)
from bench.speaker_bench import speaker_summary
from bench.wer import stt_summary

HEAD = HEADLINE_SPANS[0]  # speech_end_to_first_token
WIDTH = 10  # the phase names' column


def _line(name: str, *parts: str) -> str:
    return f"{name:<{WIDTH}s} " + " · ".join(p for p in parts if p)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _ms(value) -> str:
    return "n/a" if _missing(value) else f"{value:.0f} ms"


def _p(pct: dict | None) -> str:
    pct = pct or {}
    return f"p50 {_ms(pct.get('p50'))} p95 {_ms(pct.get('p95'))}"


def _percent(rate) -> str:
    return "n/a" if _missing(rate) else f"{rate * 100:.0f} %"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def vigil(records: list[dict], extra: dict, enrolled: dict[str, str] | None, budget_ms: float) -> list[str]:
    """The continuous replay: requests, the headline, what STT heard; wake, speaker ID, budget, drops."""
    head = span_percentiles(records)[HEAD]
    wake = wake_summary(records, extra["unmatched"])
    stt = stt_summary(records)
    speaker = speaker_summary(records, enrolled)
    budget = budget_p95_ms(records)
    requests = wake["detected"] + wake["missed"]
    wer = "n/a" if stt["wer"] is None else f"{stt['wer']:.3f}"
    return [_line("vigil", f"{requests} requests, {head['n']} answered", f"speech end → first token {_p(head)}",
                  f"WER {wer}", _count(stt["loops"], "loop"), f"{stt['first_word_errors']} first-word errors"),
            _line("", f"wake {wake['detected']}/{requests}, {wake['false_wakes']} false",
                  f"speaker {_percent(speaker['accuracy'])} of {speaker['n']}",
                  f"budget p95 {_ms(budget)} of {budget_ms:.0f} ms",
                  _count(sum(extra["drops"].values()), "drop"), _count(extra["restarts"], "restart"))]


def baseline(records: list[dict], results: list[dict]) -> str:
    """The sequential script (after ``join_baseline``): its headline and its ratio to Vigil's."""
    base = span_percentiles(baseline_rows(records), key="baseline")[HEAD]
    ours = span_percentiles(records)[HEAD]
    ratio = {p: speedup(base, ours, p) for p in ("p50", "p95")}
    faster = "" if ratio["p50"] is None else \
        f"baseline ÷ Vigil {ratio['p50']}× at p50, {'n/a' if ratio['p95'] is None else ratio['p95']}× at p95"
    errors = sum(1 for r in results if "error" in r)
    return _line("baseline", f"speech end → first token {_p(base)} (n {base['n']})", faster,
                 _count(errors, "error") if errors else "")


def floor(records: list[dict], results: list[dict]) -> str:
    """The engines alone (after ``join_floor``): STT + first token, and Vigil's overhead over that."""
    figures = floor_figures(records)
    errors = sum(1 for r in results if "error" in r)
    return _line("floor", f"STT + first token alone {_p(figures['floor_ms'])}",
                 f"Vigil's overhead over it {_p(figures['overhead_ms'])}", _count(errors, "error") if errors else "")


def idle(summary: dict) -> str:
    """Idle listening: CPU (percent of one core) and memory of all workers together."""
    return _line("idle", f"CPU {summary['cpu_percent_total']:.1f} % of one core",
                 f"RSS {summary['rss_mb_total']:.0f} MB in {len(summary['rss_mb_by_worker'])} processes",
                 _count(summary["false_wakes"], "false wake"), _count(sum(summary["drops"].values()), "drop"),
                 f"{summary['seconds']:.0f} s measured")


def load(result: dict) -> str:
    """Requests back to back: how many were answered, how fast, and whether anything broke."""
    return _line("load", f"{result['requests']} requests back to back, {result['answered']} answered, "
                         f"{result['cancelled']} cancelled", f"speech end → first token {_p(result.get(HEAD))}",
                 f"exit {result['exit_code']}", _count(result["worker_restarts"], "restart"),
                 _count(sum(result["drops"].values()), "drop"))


def variants(results: dict) -> str:
    """The A/B replays: each variant's headline p50 and its ratio to the default's."""
    parts = []
    for name, v in results.items():
        if "error" in v:
            parts.append(f"{name} failed ({v['error']})")
            continue
        ratio = v.get("p50_ratio_to_default")
        parts.append(f"{name} p50 {_ms(v[HEAD].get('p50'))}" + ("" if name == "default" or ratio is None
                                                                else f" ({ratio}×)")
                     + f", {v['answered']}/{v['utterances']} answered")
    return _line("variants", *parts)


def wake(detail: dict) -> str:
    """The offline wake evaluation, the configured default's row: detections per condition, false wakes per set."""
    if "eval_error" in detail:
        return _line("wake", f"evaluation failed: {detail['eval_error']}")
    conditions = detail.get("conditions") or {}
    false = detail.get("false_wakes_by_set") or {}
    return _line("wake", str(detail.get("default_config")),
                 " ".join(f"{c} {v['detected']}/{v['total']}" for c, v in conditions.items() if v.get("total")),
                 "false wakes " + " ".join(f"{s} {v['count']}" for s, v in false.items() if v.get("hours")),
                 f"phrase end → wake {_p(detail.get('phrase_end_to_wake_ms'))}")


def endpoint(modes: dict[str, list[dict]]) -> list[str]:
    """Per endpoint mode (its replay's records): complete requests' headline, and the hesitations cut off."""
    lines = []
    for mode, records in modes.items():
        s = endpoint_summary(records)
        complete, hesitation = s["complete"][HEAD], s["hesitation"]
        lines.append(_line("endpoint", f"{mode}: speech end → first token {_p(complete)} (n {complete['n']})",
                           f"hesitations cut off {hesitation['cut_offs']}/{hesitation['n']}",
                           "" if hesitation["extra_wait_ms"] is None else
                           f"extra wait on a hesitation {_ms(hesitation['extra_wait_ms'])}"))
    return lines


def sweep(curve: list[dict]) -> str:
    """The endpoint sweep: each setting's complete-request headline and the hesitations it cut off."""
    return _line("sweep", *(f"{c['key']} {c['value']:g}: {_p(c)}, cut off {c['cut_offs']}/{c['hesitations']}"
                            for c in curve))
