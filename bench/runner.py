"""`python -m pipeline bench`: the latency budget under continuous use, idle listening and load.

One run measures, on the same corpus and the same machine, one after the other so they
do not compete for the two cores:
1. Vigil: the corpus replayed in real time through the full multiprocess pipeline;
2. the sequential single-process baseline and each engine's isolated compute floor;
3. idle listening (silence and noise): CPU and RSS per worker over time;
4. load: requests faster than answers can come.
Then report.json (DESIGN.md "Contracts"), report.md and plots under <out>/<run>/.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench import phase_lines
from bench.analysis import (
    HEADLINE_SPANS, STAGES, baseline_rows, budget_p95_ms, endpoint_summary, floor_figures, input_t0_ns,
    join_baseline, join_floor, match_sessions, span_percentiles, speedup, stage_percentiles, stage_split,
    threshold_curve, utterance_records, wake_by_condition, wake_summary,
)
from bench.replay import RATE, build_replay, progress_bar, run_pipeline
from bench.resources import summarize
from bench.speaker_bench import speaker_by, speaker_summary
from bench.synth import pink_noise, write_wav16
from core.config import Config
from core.events import DropEvent, Event, WakeEvent, WorkerEvent
from pipeline.latency import percentiles


def default_corpus_dir(config: Config, quick: bool) -> Path:
    return Path(config.models.dir).parent / ("corpus-quick" if quick else "corpus-full")


def machine_info() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "model": model, "python": platform.python_version()}


def _drops(events: list[Event]) -> dict[str, int]:
    drops: dict[str, int] = {}
    for event in events:
        if isinstance(event, DropEvent):
            drops[event.ring] = drops.get(event.ring, 0) + event.count
    return drops


def _restarts(events: list[Event]) -> int:
    return sum(1 for e in events if isinstance(e, WorkerEvent) and e.event in ("exited", "hung"))


def measure_vigil(utterances, run_dir: Path, passes: int, gap_s: float, progress: bool) -> tuple[list[dict], dict]:
    wav = run_dir / "replay.wav"
    placements = build_replay(utterances, wav, passes, gap_s)
    audio_s = placements[-1].offset_s + placements[-1].duration_s + gap_s
    bar, tick = progress_bar(audio_s + 10, f"vigil: replaying {len(placements)} utterances", progress)
    result = run_pipeline(wav, run_dir / "vigil", extra_args=("--exit-when-done",), on_tick=tick,
                          timeout_s=audio_s * 2 + 300)
    bar.close()
    wav.unlink()  # large, and rebuilt from the corpus in a second
    if result.returncode != 0:
        raise RuntimeError(f"the pipeline exited with {result.returncode}:\n{result.stderr_tail}")
    t0 = input_t0_ns(result.events)
    matched, unmatched = match_sessions(placements, result.sessions, t0)
    records = utterance_records(utterances, matched, t0)
    extra = {"unmatched": unmatched, "drops": _drops(result.events), "restarts": _restarts(result.events),
             "resources": summarize(result.samples), "wall_s": round(result.wall_s, 1)}
    return records, extra


ENDPOINT_MODES = ("turn", "silence")
ENDPOINT_VOICES = ("piper", "espeak-ng:en-us", "flite:slt")  # complete requests replayed in the other mode
ENDPOINT_TARGETS = {"p50_ms": 350.0, "p95_ms": 600.0, "cut_off_rate": 0.05, "vs_baseline_p50": 3.0}


# `[stt]` settings replayed one at a time on the endpoint set by `bench --endpoint-sweep`: the trade-off between the
# wait every answer pays and the hesitations cut off (report.json endpoint.sweep).
# * turn_min_pause_ms: the pause is decoded from its first frame (~200 ms), so a floor below that changes nothing;
# * turn_sure_ending: how sure whisper must be of the sentence end it wrote (engines/stt/turn.py).
ENDPOINT_SWEEP: tuple[tuple[str, float], ...] = (
    ("turn_min_pause_ms", 100), ("turn_min_pause_ms", 300), ("turn_min_pause_ms", 500),
    ("turn_sure_ending", 0.0), ("turn_sure_ending", 0.7),
)


def measure_endpoint_mode(utterances, run_dir: Path, mode: str, progress: bool, gap_s: float = 1.5,
                          voices: tuple[str, ...] = ENDPOINT_VOICES, setting: tuple[str, float] | None = None
                          ) -> list[dict]:
    """The hesitation set and complete requests (the neural voice and one of each other engine) replayed once
    with ``[stt] endpoint = mode`` (and one more ``[stt]`` ``(key, value)``, when given): the other endpoint mode
    than the main replay's, or one point of the endpoint sweep, in the same run."""
    chosen = [u for u in utterances if u.wake and (getattr(u, "pause_s", None) is not None
                                                    or any(u.voice.startswith(v) for v in voices))]
    if not chosen:
        return []
    label = mode if setting is None else f"{mode}-{setting[0]}-{setting[1]}"
    env = {"VIGIL_STT__ENDPOINT": mode}
    if setting is not None:
        env[f"VIGIL_STT__{setting[0].upper()}"] = str(setting[1])
    wav = run_dir / f"endpoint-{label}.wav"
    placements = build_replay(chosen, wav, passes=1, gap_s=gap_s)
    audio_s = placements[-1].offset_s + placements[-1].duration_s + gap_s
    bar, tick = progress_bar(audio_s + 10, f"endpoint {label}: replaying {len(placements)} utterances", progress)
    result = run_pipeline(wav, run_dir / f"endpoint-{label}", extra_args=("--exit-when-done",), on_tick=tick,
                          env=env, timeout_s=audio_s * 2 + 300)
    bar.close()
    wav.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"the pipeline ({label} endpointing) exited with {result.returncode}:\n{result.stderr_tail}")
    t0 = input_t0_ns(result.events)
    matched, _ = match_sessions(placements, result.sessions, t0)
    return utterance_records(chosen, matched, t0)


def measure_endpoint_sweep(utterances, run_dir: Path, progress: bool) -> list[dict]:
    """The endpoint set replayed in "turn" mode once per ``ENDPOINT_SWEEP`` setting: complete requests' speech
    end -> first token against the hesitations cut off, per setting."""
    curve = []
    for key, value in ENDPOINT_SWEEP:
        try:
            records = measure_endpoint_mode(utterances, run_dir, "turn", progress, setting=(key, value))
        except Exception as exc:  # one point lost, not the bench
            tqdm.write(f"{key} = {value} not measured: {exc}")
            continue
        summary = endpoint_summary(records)
        curve.append({"key": key, "value": value, **summary["complete"][HEADLINE_SPANS[0]],
                      "cut_offs": summary["hesitation"]["cut_offs"], "hesitations": summary["hesitation"]["n"]})
    return curve


def endpoint_report(config: Config, records: list[dict], other: dict[str, list[dict]], baseline_spans: dict,
                    sweep: list[dict] | None = None) -> dict:
    """report.json's ``endpoint``: per mode (the main replay's and the other), the targets and whether they hold."""
    modes = {config.stt.endpoint: endpoint_summary(records)}
    modes.update({mode: endpoint_summary(recs) for mode, recs in other.items()})
    default = modes[config.stt.endpoint]
    head = default["complete"]["speech_end_to_first_token"]
    base_p50 = (baseline_spans.get("speech_end_to_first_token") or {}).get("p50")
    vs = round(base_p50 / head["p50"], 2) if base_p50 and head.get("n") and head["p50"] > 0 else None
    rate = default["hesitation"]["cut_off_rate"]
    t = ENDPOINT_TARGETS
    from engines.stt.turn import TurnPolicy

    curve = threshold_curve(records, config.stt.turn_max_pause_ms, TurnPolicy().text_weight) \
        if config.stt.endpoint == "turn" else []
    return {"default": config.stt.endpoint, "modes": modes, "threshold_curve": curve,
            "sweep": sweep or [],
            "config": {"turn_threshold": config.stt.turn_threshold, "turn_max_pause_ms": config.stt.turn_max_pause_ms,
                       "turn_min_pause_ms": config.stt.turn_min_pause_ms,
                       "turn_sure_ending": config.stt.turn_sure_ending, "end_silence_ms": config.stt.end_silence_ms},
            "baseline_end_silence_ms": config.bench.baseline_end_silence_ms, "vs_baseline_p50": vs,
            "targets": {**t, "met": {"p50": bool(head.get("n")) and head["p50"] <= t["p50_ms"],
                                     "p95": bool(head.get("n")) and head["p95"] <= t["p95_ms"],
                                     "cut_offs": rate is not None and rate <= t["cut_off_rate"],
                                     "vs_baseline": vs is not None and vs >= t["vs_baseline_p50"]}}}


def measure_idle(run_dir: Path, seconds: float, progress: bool) -> dict:
    """Listen to a loop of silence and soft noise; skip the model-loading start."""
    quiet = np.zeros(20 * RATE, dtype=np.int16)
    wav = write_wav16(run_dir / "idle.wav", np.concatenate([quiet, pink_noise(20.0, rms=120.0, seed=7)]))
    bar, tick = progress_bar(seconds + 10, "idle listening", progress)
    result = run_pipeline(wav, run_dir / "idle", extra_args=("--loop", "--max-seconds", str(seconds + 120)),
                          on_tick=tick, timeout_s=seconds + 200, capture_s=seconds + 4.0)
    bar.close()
    wav.unlink()
    started = next((s["t"] for s in result.samples if "capture" in s["rss_mb"]), 0.0)
    summary = summarize(result.samples, skip_s=started + 3.0)
    summary["samples"] = [s for s in result.samples if s["t"] >= started + 3.0]
    summary["drops"] = _drops(result.events)
    summary["false_wakes"] = sum(1 for e in result.events if isinstance(e, WakeEvent))
    return summary


def measure_load(utterances, run_dir: Path, progress: bool, count: int = 16) -> dict:
    """Requests back to back with almost no gap: answers overlap the next wake (barge-in)."""
    chosen = [u for u in utterances if u.wake][:count]
    if not chosen:
        return {}
    wav = run_dir / "load.wav"
    placements = build_replay(chosen, wav, passes=1, gap_s=0.1)
    audio_s = placements[-1].offset_s + placements[-1].duration_s
    bar, tick = progress_bar(audio_s + 10, "load", progress)
    result = run_pipeline(wav, run_dir / "load", extra_args=("--exit-when-done",), on_tick=tick,
                          timeout_s=audio_s * 2 + 300)
    bar.close()
    wav.unlink()
    t0 = input_t0_ns(result.events) if result.returncode == 0 else 0
    matched, _ = match_sessions(placements, result.sessions, t0)
    records = utterance_records(chosen, matched, t0)
    answered = [r for r in records if "speech_end_to_first_token" in r["vigil"]]
    rss = [s["rss_mb"] for s in result.samples]
    return {
        "requests": len(chosen),
        "answered": len(answered),
        "cancelled": sum(1 for r in records if r["route"] == "cancelled"),
        "exit_code": result.returncode,
        "worker_restarts": _restarts(result.events),
        "drops": _drops(result.events),
        "speech_end_to_first_token": percentiles([r["vigil"]["speech_end_to_first_token"] for r in answered]),
        "rss_mb_max_by_worker": {w: max(s.get(w, 0.0) for s in rss) for w in sorted({w for s in rss for w in s})},
        "rss_mb_first_by_worker": rss[0] if rss else {},
    }


def measure_wake(config: Config, run_dir: Path, quick: bool, progress: bool) -> dict:
    """The offline wake evaluation (bench/wake_eval.py) on the wake corpus, for report.json's ``wake``.

    Nested under keys of its own so the pipeline replay's {detected, missed, false_wakes,
    negatives_hours} stay as they are: ``by_engine`` (every configuration), and for the
    configured default (``default_config``) its ``conditions``, ``false_wakes_by_set``,
    ``phrase_end_to_wake_ms`` and ``by_voice``.
    """
    from bench.wake_corpus import build_wake_corpus, default_wake_corpus_dir
    from bench.wake_eval import DEFAULT_CONFIGS, QUICK_CONFIGS, run_wake_eval

    cache = default_corpus_dir(config, quick).parent
    corpus = build_wake_corpus(default_wake_corpus_dir(cache, quick), quick=quick, progress=progress).parent
    w = config.wake
    short = {"openwakeword": "oww"}.get(w.engine, w.engine)
    if w.verify and w.verify != "off":
        stages = ("+onset" if w.onset else "") + ("+forced" if w.verify == "forced" else "+verify")
        sure = f"+sure{w.sure_threshold:g}" if w.sure_threshold < 1 else ""
        default = f"{short}@{w.proposal_threshold:g}{stages}{sure}"
    else:
        default = f"{short}@{w.threshold:g}" if short == "oww" else short
    configs = list(QUICK_CONFIGS if quick else DEFAULT_CONFIGS)
    if default not in configs:
        configs.append(default)
    say = (lambda m: tqdm.write(m)) if progress else None
    result = run_wake_eval(corpus, run_dir / "wake", configs, say)
    chosen = result["configs"].get(default) or next(iter(result["configs"].values()), {})
    return {"default_config": default, "conditions": chosen.get("conditions"),
            "false_wakes_by_set": chosen.get("false_wakes"), "phrase_end_to_wake_ms": chosen.get("delay_ms"),
            "by_voice": chosen.get("by_voice"), "by_engine": result["configs"], "skipped": result["skipped"],
            "verifier": result["verifier"], "corpus": result["corpus"], "gate": result.get("gate")}


def assemble(config: Config, corpus_dir: Path, run: str, passes: int, records: list[dict], vigil_extra: dict,
             baseline: list[dict], floor: list[dict], idle: dict | None, load: dict | None) -> dict:
    from bench.wer import stt_summary

    join_baseline(records, baseline)
    join_floor(records, floor)
    unique_baseline = baseline_rows(records)
    vigil_spans = span_percentiles(records)
    base_spans = span_percentiles(unique_baseline, key="baseline")
    headline = "speech_end_to_first_token"
    budget_p95 = budget_p95_ms(records)
    return {
        "run": run,
        "corpus": str(corpus_dir),
        "passes": passes,
        "config": {section: dataclasses.asdict(getattr(config, section))
                   for section in ("wake", "stt", "llm", "bench")},
        "spans_ms": vigil_spans,
        "spans_ms_by_route": {route: span_percentiles(records, route=route) for route in ("llm", "skill")},
        "stages_ms": stage_percentiles(records, "vigil", STAGES),
        "baseline": {"spans_ms": base_spans, "stages_ms": stage_percentiles(unique_baseline, "baseline", STAGES),
                     "end_silence_ms": config.bench.baseline_end_silence_ms},
        "ratio_baseline_over_vigil": {p: speedup(base_spans[headline], vigil_spans[headline], p)
                                      for p in ("p50", "p95")},
        **floor_figures(records),
        "budget": {"budget_ms": config.bench.budget_ms, "p95_ms": budget_p95,
                   "ok": bool(np.isnan(budget_p95) or budget_p95 <= config.bench.budget_ms)},
        "wake": {**wake_summary(records, vigil_extra["unmatched"]), "by_condition": wake_by_condition(records)},
        "stt": stt_summary(records),
        "speaker": speaker_summary(records),
        "idle": idle,
        "load": load,
        "drops": vigil_extra["drops"],
        "continuous": {"resources": vigil_extra["resources"], "worker_restarts": vigil_extra["restarts"],
                       "wall_s": vigil_extra["wall_s"]},
        "machine": machine_info(),
        "utterances": records,
    }


def _json_safe(value):
    """NaN (an empty percentile) becomes null: report.json stays strict JSON for any reader."""
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def print_summary(report: dict, run_dir: Path) -> None:
    print(f"\nVigil bench {report['run']}: {run_dir}")
    print(f"{'span (ms)':30s} {'vigil p50':>10s} {'p95':>8s} {'baseline p50':>13s} {'p95':>8s} {'n':>4s}")
    for span, v in report["spans_ms"].items():
        b = report["baseline"]["spans_ms"].get(span, {})
        print(f"{span:30s} {v['p50']:10.0f} {v['p95']:8.0f} {b.get('p50', float('nan')):13.0f} "
              f"{b.get('p95', float('nan')):8.0f} {v['n']:4d}")
    w = report["wake"]
    print(f"wake: {w['detected']} detected, {w['missed']} missed, {w['false_wakes']} false "
          f"({w['negatives_hours'] * 60:.1f} min negatives); WER {report['stt']['wer']}")
    st = report["stt"]
    print(f"stt: first-word errors {st.get('first_word_errors')}/{st.get('files')}, leaks {st.get('leaks')}, "
          f"loops {st.get('loops')}; WER by condition "
          + ", ".join(f"{c} {v['wer']}" for c, v in (st.get("by_condition") or {}).items()))
    if w.get("by_engine"):
        from bench.wake_eval import summary_table

        print(f"wake corpus (default {w['default_config']}):")
        print(summary_table({"configs": w["by_engine"], "skipped": w.get("skipped", {})}))
    if report["idle"]:
        print(f"idle: {report['idle']['cpu_percent_total']:.1f} % of one core in total; "
              f"by worker {report['idle']['cpu_percent_by_worker']}")
    if report.get("skills"):
        from bench.skill_eval import summary_line

        print(summary_line(report["skills"]))
    for mode, m in (report.get("endpoint") or {}).get("modes", {}).items():
        c, h = m["complete"]["speech_end_to_first_token"], m["hesitation"]
        print(f"endpoint {mode}: speech end -> first token p50 {c['p50']} / p95 {c['p95']} ms (n {c['n']}); "
              f"hesitations cut off {h['cut_offs']}/{h['n']}, extra wait {h['extra_wait_ms']} ms")
    budget = report["budget"]
    print(f"budget: p95 wake→first token minus the request's speech = {budget['p95_ms']} ms "
          f"(budget {budget['budget_ms']:.0f} ms): {'OK' if budget['ok'] else 'EXCEEDED'}")


def run_bench(config: Config, *, corpus: Path | None, out: Path, passes: int, gap_s: float, idle_s: float,
              load: bool, quick: bool, progress: bool = True, wake_eval: bool = True,
              variant_runs: bool = True, endpoint_modes: bool = True, endpoint_sweep: bool = False,
              figures: bool | None = None) -> int:
    """The whole bench into ``out``/<run>/; 1 when the latency budget is exceeded. ``progress``: bars (for a
    terminal); ``figures``: each phase's key figures printed as it ends (default: with the bars), plain lines
    that belong in a log too; ``endpoint_sweep``: the endpoint set once per ``ENDPOINT_SWEEP`` setting."""
    from bench.baseline import run_baseline, run_floor
    from bench.corpus import build_default_corpus, load_corpus
    from bench.render import render
    from bench.skill_eval import evaluate as evaluate_skill_routing
    from bench.skill_eval import summary_line
    from bench.speaker_bench import enroll_voices
    from bench.variants import measure_variants
    from models.provision import ensure_models

    models = ensure_models(Path(config.models.dir), progress=progress)
    corpus_dir = corpus or build_default_corpus(default_corpus_dir(config, quick), quick=quick,
                                                progress=progress).parent
    utterances = load_corpus(corpus_dir)
    run = time.strftime("%Y%m%d-%H%M%S")
    run_dir = out / run
    run_dir.mkdir(parents=True, exist_ok=True)
    show_figures = progress if figures is None else figures

    def say(*lines: str) -> None:
        """Each phase's key figures as it ends (bench/phase_lines.py), above the bar of the next; flushed, so
        a log or a pipe gets them then too."""
        if show_figures:
            for line in lines:
                tqdm.write(line)
            sys.stdout.flush()

    enrolled = enroll_voices(config, run_dir / "vigil" / "state", progress=progress)  # the replay's state dir
    records, vigil_extra = measure_vigil(utterances, run_dir, passes, gap_s, progress)
    say(*phase_lines.vigil(records, vigil_extra, enrolled, config.bench.budget_ms))
    baseline = run_baseline(utterances, models, config, progress=progress,
                            baseline_end_silence_ms=config.bench.baseline_end_silence_ms)
    join_baseline(records, baseline)
    say(phase_lines.baseline(records, baseline))
    wake_at = {b["wav"]: b["wake_audio_s"] for b in baseline if b.get("wake_audio_s") is not None}
    floor = run_floor(utterances, models, config, progress=progress, wake_audio_s=wake_at)
    join_floor(records, floor)
    say(phase_lines.floor(records, floor))
    idle = measure_idle(run_dir, idle_s, progress) if idle_s > 0 else None
    if idle:
        say(phase_lines.idle(idle))
    load_result = measure_load(utterances, run_dir, progress) if load else None
    if load_result:
        say(phase_lines.load(load_result))
    variants = measure_variants(utterances, run_dir, count=4 if quick else 24, progress=progress) if variant_runs \
        else None
    if variants:
        say(phase_lines.variants(variants))
    wake_detail = None
    if wake_eval:
        try:
            wake_detail = measure_wake(config, run_dir, quick, progress)
        except Exception as exc:  # the rest of the bench still counts; the reason is reported
            wake_detail = {"eval_error": f"{type(exc).__name__}: {exc}"}
        say(phase_lines.wake(wake_detail))
    other_modes = {}
    if endpoint_modes:
        for mode in (m for m in ENDPOINT_MODES if m != config.stt.endpoint):
            try:
                other_modes[mode] = measure_endpoint_mode(utterances, run_dir, mode, progress,
                                                          voices=("piper",) if quick else ENDPOINT_VOICES)
            except Exception as exc:  # the rest of the bench still counts; the reason is reported
                other_modes[mode] = []
                tqdm.write(f"endpoint mode {mode} not measured: {exc}")
        say(*phase_lines.endpoint({config.stt.endpoint: records, **other_modes}))
    sweep = measure_endpoint_sweep(utterances, run_dir, progress) if endpoint_sweep else []
    if sweep:
        say(phase_lines.sweep(sweep))
    report = assemble(config, corpus_dir, run, passes, records, vigil_extra, baseline, floor, idle, load_result)
    # speaker figures by what this run enrolled (a held-out --corpus names its speakers its own way)
    report["speaker"] = {**speaker_summary(records, enrolled),
                         "by_condition": speaker_by(records, enrolled, "condition")}
    report["endpoint"] = endpoint_report(config, records, other_modes, report["baseline"]["spans_ms"],
                                         sweep)
    report["tail"] = {"continuous": stage_split(records),
                      **{f"endpoint_{mode}": stage_split(recs) for mode, recs in other_modes.items()}}
    if wake_detail:
        report["wake"] = {**report["wake"], **wake_detail}
    report["variants"] = variants
    report["skills"] = evaluate_skill_routing()  # the labelled phrasings: skill accuracy, false-skill rate
    say(summary_line(report["skills"]))
    (run_dir / "report.json").write_text(json.dumps(_json_safe(report), indent=1))
    render(run_dir)
    latest = out / "latest"
    tmp = out / f".latest-{os.getpid()}"
    tmp.symlink_to(run, target_is_directory=True)
    os.replace(tmp, latest)
    print_summary(report, run_dir)
    return 0 if report["budget"]["ok"] else 1
