"""Offline wake-word evaluation over the wake corpus: detection per condition and voice,
false wakes per hour per negative set, delay, CPU, verifier cost, double wakes.

How: the corpus files of one set (positives of one condition, near misses, ordinary
speech, noise) are concatenated into one stream (2 s of silence first, for the
detector's warm-up) and fed frame by frame (1280 samples) through
``engines.wake.detector.WakeDetector`` and an engine — as fast as the CPU allows, not
paced.  A two-stage configuration hands each proposal's window (``WINDOW_BEFORE_S``
before the end of the peak frame, ``WINDOW_AFTER_S`` after) to
``engines.wake.text_verify.WakeVerifier``.  Proposals at the same threshold are computed once
and shared by the single-stage and two-stage configurations of that threshold.

Scoring:
* a positive file is detected when an accepted wake's peak frame lies in
  [wake_start - 0.2 s, wake_end + 1.5 s] of that file; more than one accepted wake inside
  one positive file is a double wake ("one utterance wakes once");
* every accepted wake in a negative stream is a false wake;
* delay = when the wake is known − end of "jarvis" (``wake_end_s``): single stage, the
  frame the detector reports on; two-stage, max(that, window end) + verifier compute;
* proposer CPU = process CPU time of the engine + detector per audio second.

``python -m bench.wake_eval [--corpus DIR] [--out DIR] [--quick] [--configs ...] [--tune]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.latency import percentiles
from core.audio import SAMPLE_RATE, load_wav

FRAME = 1280
LEAD_SILENCE_S = 2.0
MATCH_BEFORE_S = 0.2
MATCH_AFTER_S = 1.5
CONDITIONS = ("clean", "pink", "babble", "room")
# The negative streams: each set as recorded, and the room copies of ordinary speech and near misses
# (the room condition must add no false wake).
NEGATIVE_SETS = ("ordinary", "noise", "near_miss", "ordinary:room", "near_miss:room")
DEFAULT_CONFIGS = ("oww@0.5", "oww@0.1", "oww@0.1+verify", "oww@0.05+verify", "oww@0.05+verify+sure0.97",
                   "oww@0.005+onset+forced", "oww@0.05+forced", "oww@0.005+forced", "onset+forced",
                   "porcupine", "microwakeword", "pocketsphinx")
QUICK_CONFIGS = ("oww@0.5", "oww@0.005+onset+forced")
ENGINE_THRESHOLDS = {"porcupine": 0.5, "microwakeword": 0.5, "pocketsphinx": 0.5}
TRACE_ENGINES = ("openwakeword",)  # scored once, detections replayed per threshold (see _Replay)
TUNE_SCORES = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MARGIN_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)  # forced verifier's min margin (log10), --tune and sweep
HOLD_AFTER_WAKE_S = 3.0  # the pipeline hears the request after an accepted wake: proposals are ignored


def parse_config(name: str) -> dict[str, Any]:
    """"oww@0.1+verify" → engine openwakeword, threshold 0.1, verify True; "porcupine" → its default.

    "+verify": the whisper text verifier (``WakeVerifier``) judges each proposal; "+forced": the
    forced-score verifier (``engines.wake.forced``) does.  "+onset": the onset proposer's proposals
    are added to the engine's (with a verifier only); "onset+forced": the onset proposer alone.
    "+sure0.97" after the verifier: a proposal peaking at 0.97 or more is accepted unverified (the
    pipeline's `[wake] sure_threshold`)."""
    base, *flags = name.split("+")
    verifier = "forced" if "forced" in flags else ("text" if "verify" in flags else None)
    sure = next((f[len("sure"):] for f in flags if f.startswith("sure")), "")
    onset = "onset" in flags or base == "onset"
    engine, _, thr = base.partition("@")
    engine = {"oww": "openwakeword"}.get(engine, engine)
    threshold = float(thr) if thr else ENGINE_THRESHOLDS.get(engine, 0.5)
    return {"name": name, "engine": None if engine == "onset" else engine,
            "threshold": None if engine == "onset" else threshold,
            "verify": verifier is not None, "verifier": verifier, "onset": onset and verifier is not None,
            "sure": float(sure) if sure and verifier else None}


# --------------------------------------------------------------------------- streams


def build_streams(rows: list[dict]) -> dict[str, dict[str, Any]]:
    """Concatenate the corpus into one stream per set: positives per condition, and each negative set
    (its room copy apart: "near_miss:room")."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["set"] == "positive":
            key = f"positive:{r['condition']}"
        else:
            key = r["set"] if r.get("condition", "clean") == "clean" else f"{r['set']}:{r['condition']}"
        groups[key].append(r)
    streams = {}
    lead = int(LEAD_SILENCE_S * SAMPLE_RATE)
    for key, members in groups.items():
        parts = [np.zeros(lead, dtype=np.int16)]
        files = []
        pos = lead
        for r in members:
            a = load_wav(r["path"])
            files.append({**r, "start": pos / SAMPLE_RATE, "end": (pos + a.size) / SAMPLE_RATE})
            parts.append(a)
            pos += a.size
        audio = np.concatenate(parts)
        streams[key] = {"audio": audio, "files": files, "seconds": (audio.size - lead) / SAMPLE_RATE}
    return streams


class _NoReset:
    """Wraps an engine so the detector's reset() does not reach it: the score trace stays the
    engine's raw output, from which any threshold's detections can be replayed."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.name = getattr(engine, "name", "?")
        self.frame_samples = engine.frame_samples

    def score(self, frame: np.ndarray) -> float:
        return self.engine.score(frame)

    def reset(self) -> None:
        pass


class _Replay:
    """An "engine" that replays a recorded score trace (and honours reset like openWakeWord:
    the next 5 frames score 0 — inside the detector's refractory time anyway)."""

    frame_samples = FRAME

    def __init__(self, trace: np.ndarray, name: str) -> None:
        self.trace, self.name, self.i, self.mute = trace, name, 0, 0

    def score(self, frame: np.ndarray) -> float:
        v = float(self.trace[self.i])
        self.i += 1
        if self.mute > 0:
            self.mute -= 1
            return 0.0
        return v

    def reset(self) -> None:
        self.mute = 5


def _trace(engine, audio: np.ndarray) -> tuple[np.ndarray, float, float]:
    """One engine's score for every FRAME of ``audio``: (trace, CPU seconds it took, audio seconds)."""
    n = audio.size // FRAME
    trace = np.zeros(n, dtype=np.float32)
    c0 = time.process_time()
    for i in range(n):
        trace[i] = engine.score(audio[i * FRAME:(i + 1) * FRAME])
    return trace, time.process_time() - c0, n * FRAME / SAMPLE_RATE


def score_traces(engine_name: str, streams: dict, wake_config=None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one engine over every stream once; the per-frame score trace and the CPU time it took.

    Only for engines whose reset does not change later scores beyond a few frames
    (openWakeWord: reset clears its prediction buffer, the features go on).
    """
    from engines.wake import make_wake_engine
    from models.porcupine import ensure_porcupine_legacy

    engine = make_wake_engine(engine_name, wake_config, porcupine_legacy=ensure_porcupine_legacy)
    out: dict[str, Any] = {"engine": getattr(engine, "name", engine_name), "traces": {}, "cpu_s": 0.0, "audio_s": 0.0}
    for key, st in streams.items():
        engine.reset()
        trace, cpu, seconds = _trace(engine, st["audio"])
        out["cpu_s"] += cpu
        out["audio_s"] += seconds
        out["traces"][key] = trace
        if progress:
            progress(f"{engine_name}: scored {key} ({seconds / 60:.1f} min)")
    return out


def gate_check(streams: dict, ungated: dict, wake_config=None, threshold: float = 0.005,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Does the idle gate (workers/wake_gate.py) change any proposal, and what does it save?

    openWakeWord runs gated over every stream; its score trace is compared with the ungated one
    (``score_traces``): the proposals at ``threshold`` (the two-stage proposal threshold) must be the
    same, and frames where either trace reaches it must score the same.
    """
    from engines.wake import make_wake_engine
    from engines.wake.gate import GatedEngine

    engine = make_wake_engine("openwakeword", wake_config)
    gated = {"engine": ungated["engine"], "traces": {}, "cpu_s": 0.0, "audio_s": 0.0}
    by_set: dict[str, Any] = {}
    for key, st in streams.items():
        engine.reset()
        gate = GatedEngine(engine)
        trace, cpu, seconds = _trace(gate, st["audio"])
        gated["traces"][key], gated["cpu_s"], gated["audio_s"] = trace, gated["cpu_s"] + cpu, gated["audio_s"] + seconds
        ref = ungated["traces"][key][:trace.size]
        either = (ref >= threshold) | (trace >= threshold)
        by_set[key] = {"cpu_ms_per_audio_s": round(cpu * 1000.0 / max(seconds, 1e-9), 2),
                       "skipped": round(gate.skipped_frames / max(trace.size, 1), 4), "catchups": gate.catchups,
                       "max_score_diff": round(float(np.abs(ref - trace)[either].max()) if either.any() else 0.0, 5)}
        if progress:
            progress(f"gate check {key}: {by_set[key]}")
    before = propose("openwakeword", threshold, streams, traces=ungated)["proposals"]
    after = propose("openwakeword", threshold, streams, traces=gated)["proposals"]
    for key in streams:
        a = {(p["peak_end_s"], p["score"]) for p in before[key]}
        b = {(p["peak_end_s"], p["score"]) for p in after[key]}
        by_set[key].update(proposals=len(a), proposals_lost=len(a - b), proposals_added=len(b - a))
    return {"threshold": threshold, "by_stream": by_set,
            "cpu_ms_per_audio_s": {"ungated": round(ungated["cpu_s"] * 1000.0 / max(ungated["audio_s"], 1e-9), 2),
                                   "gated": round(gated["cpu_s"] * 1000.0 / max(gated["audio_s"], 1e-9), 2)},
            "proposals_changed": sum(v["proposals_lost"] + v["proposals_added"] for v in by_set.values())}


def _traces_path(out_dir, engine: str) -> Path | None:
    return None if out_dir is None else Path(out_dir) / f"traces-{engine}.npz"


def _save_traces(out_dir, engine: str, tr: dict) -> None:
    """Keep the score traces beside the results, so another threshold can be evaluated without the engine."""
    path = _traces_path(out_dir, engine)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({k: tr[k] for k in ("engine", "cpu_s", "audio_s")})
    np.savez_compressed(path, __meta__=np.array(meta), **{k.replace(":", "__"): v for k, v in tr["traces"].items()})


def _load_traces(out_dir, engine: str, streams: dict) -> dict | None:
    """Traces saved by an earlier run on the same streams (same keys, same frame counts), else None."""
    path = _traces_path(out_dir, engine)
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["__meta__"]))
            tr = {k.replace("__", ":"): z[k] for k in z.files if k != "__meta__"}
    except (OSError, ValueError, KeyError):
        return None
    if set(tr) != set(streams) or any(tr[k].size != streams[k]["audio"].size // FRAME for k in streams):
        return None
    return {**meta, "traces": tr}


def _frames_of(audio: np.ndarray) -> Callable[[int], np.ndarray]:
    """``_detect``'s feed for one stream: frame ``i`` of ``audio`` (bound here, not to a loop variable)."""
    return lambda i: audio[i * FRAME:(i + 1) * FRAME]


def _detect(det, feed, n: int) -> list[dict]:
    found = []
    for i in range(n):
        d = det.feed(feed(i))
        if d is not None:
            found.append({"peak_end_s": (d.frame_index + 1) * FRAME / SAMPLE_RATE,
                          "report_s": (i + 1) * FRAME / SAMPLE_RATE, "score": round(float(d.score), 4)})
    return found


def propose(engine_name: str, threshold: float, streams: dict, wake_config=None,
            progress: Callable[[str], None] | None = None, traces: dict | None = None) -> dict[str, Any]:
    """Every detection of ``WakeDetector`` at ``threshold`` over every stream: peak, report frame, score.

    With ``traces`` (from ``score_traces``) the engine is not run again: the detector replays
    the recorded scores (its CPU time is the trace's).
    """
    from engines.wake.detector import WakeDetector
    from engines.wake import make_wake_engine
    from models.porcupine import ensure_porcupine_legacy

    if traces is not None:
        out = {"engine": traces["engine"], "proposals": {}, "cpu_s": traces["cpu_s"], "audio_s": traces["audio_s"]}
        for key, trace in traces["traces"].items():
            det = WakeDetector(_Replay(trace, traces["engine"]), threshold=threshold, warmup_s=1.5, refractory_s=2.0)
            out["proposals"][key] = _detect(det, lambda i: None, trace.size)
        return out
    engine = make_wake_engine(engine_name, wake_config, porcupine_legacy=ensure_porcupine_legacy)
    out = {"engine": getattr(engine, "name", engine_name), "proposals": {}, "cpu_s": 0.0, "audio_s": 0.0}
    for key, st in streams.items():
        engine.reset()
        det = WakeDetector(engine, threshold=threshold, warmup_s=1.5, refractory_s=2.0)
        audio = st["audio"]
        n = audio.size // FRAME
        c0 = time.process_time()
        out["proposals"][key] = _detect(det, _frames_of(audio), n)
        out["cpu_s"] += time.process_time() - c0
        out["audio_s"] += n * FRAME / SAMPLE_RATE
        if progress:
            progress(f"{engine_name}@{threshold}: {key} {len(out['proposals'][key])} detections")
    return out


def verify_proposals(verifier, proposals: dict[str, list[dict]], streams: dict,
                     progress: Callable[[str], None] | None = None, cache: dict | None = None) -> None:
    """Decode each proposal's window once with the prompt and, after a match, once without it;
    store texts, token probabilities and compute times (judged later per mode and min score)."""
    from engines.wake.text_verify import find_wake

    eng = verifier.engine
    cache = {} if cache is None else cache
    for key, props in proposals.items():
        audio = streams[key]["audio"]
        for p in props:
            done = cache.get((key, p["peak_end_s"]))
            if done is not None:  # the same window, proposed at another threshold
                p.update(done)
                continue
            window = _window(audio, p["peak_end_s"])
            t0 = time.perf_counter()
            p["heard"], p["tokens"] = eng.transcribe_tokens(window, initial_prompt=verifier.prompt or None)
            p["verify_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
            p["plain_heard"], p["plain_tokens"], p["plain_ms"] = None, None, 0.0
            if find_wake(p["tokens"]):
                t0 = time.perf_counter()
                p["plain_heard"], p["plain_tokens"] = eng.transcribe_tokens(window, initial_prompt=None)
                p["plain_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
            cache[(key, p["peak_end_s"])] = {
                k: p[k] for k in ("heard", "tokens", "verify_ms", "plain_heard", "plain_tokens", "plain_ms")}
        if progress:
            progress(f"verified {key}: {len(props)} proposals")


def propose_onsets(streams: dict, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The onset proposer (``engines.wake.onset``) over every stream, a fresh one per stream: a proposal
    on the frame it is due (peak = report = end of that frame, score 0), and the CPU time it took."""
    from engines.wake.onset import OnsetProposer

    out: dict[str, Any] = {"engine": "onset", "proposals": {}, "cpu_s": 0.0, "audio_s": 0.0}
    for key, st in streams.items():
        audio = st["audio"]
        n = audio.size // FRAME
        onset = OnsetProposer(FRAME)
        found = []
        c0 = time.process_time()
        for i in range(n):
            if onset.feed(audio[i * FRAME:(i + 1) * FRAME]):
                t = (i + 1) * FRAME / SAMPLE_RATE
                found.append({"peak_end_s": t, "report_s": t, "score": 0.0, "source": "onset"})
        out["cpu_s"] += time.process_time() - c0
        out["audio_s"] += n * FRAME / SAMPLE_RATE
        out["proposals"][key] = found
        if progress:
            progress(f"onset: {key} {len(found)} proposals")
    return out


def _window(audio: np.ndarray, peak_end_s: float) -> np.ndarray:
    from engines.wake.text_verify import WINDOW_AFTER_S, WINDOW_BEFORE_S

    end = int(round((peak_end_s + WINDOW_AFTER_S) * SAMPLE_RATE))
    start = max(0, end - int(round((WINDOW_BEFORE_S + WINDOW_AFTER_S) * SAMPLE_RATE)))
    return audio[start:min(end, audio.size)]


def forced_proposals(scorer, proposals: dict[str, list[dict]], streams: dict,
                     progress: Callable[[str], None] | None = None, cache: dict | None = None) -> None:
    """The forced scores of each proposal's window in every view (``engines.wake.forced.VIEWS``: raw, denoised,
    dereverbed; all of them, so any margin can be judged afterwards), once per (stream, peak), under
    ``p["forced"]`` = {"raw": ..., "denoised": ..., "dereverbed": ...} (None when the window cannot hold the
    phrase: ``checkable`` rejects it without scoring)."""
    from engines.wake.forced import VIEWS
    from engines.wake.text_verify import checkable

    def reading(f) -> dict:
        return {"wake_log10p": f.wake_log10p, "rival": f.rival, "rival_log10p": f.rival_log10p,
                "margin": f.margin, "compute_ms": f.compute_ms, "phrase_end_s": f.phrase_end_s}

    cache = {} if cache is None else cache
    for key, props in proposals.items():
        audio = streams[key]["audio"]
        todo = 0
        for p in props:
            ck = (key, p["peak_end_s"])
            if ck not in cache:
                a = checkable(_window(audio, p["peak_end_s"]))
                cache[ck] = None if a is None else {v: reading(scorer.score(a, view=v)) for v in VIEWS}
                todo += 1
            p["forced"] = cache[ck]
        if progress:
            progress(f"forced scores {key}: {len(props)} proposals ({todo} new)")


def judge_forced(p: dict, min_margin: float, min_log10p: float) -> tuple[bool, float]:
    """(accepted, compute ms) of the forced verifier on stored readings, by the rule ``ForcedVerifier.check``
    follows (``engines.wake.forced.decide``): the raw view, the others only after a close call turned down."""
    from engines.wake.forced import decide

    f = p.get("forced")
    if f is None:
        return False, 0.0
    accepted, _reading, ms = decide(f.get, min_margin, min_log10p)
    return accepted, ms


def judge(verifier, p: dict):
    """The verifier's verdict on a stored proposal, in its current mode and min score."""
    from engines.wake.text_verify import Reading

    from engines.wake.text_verify import find_wake, wake_score

    second = verifier.mode == "confirm"
    if verifier.mode == "hybrid":
        span = find_wake([tuple(t) for t in p["tokens"]])
        second = span is not None and wake_score([tuple(t) for t in p["tokens"]], span) < verifier.min_score
    ms = p["verify_ms"] + (p.get("plain_ms") or 0.0 if second else 0.0)
    return verifier.judge(Reading(p["heard"], [tuple(t) for t in p["tokens"]], p.get("plain_heard"),
                                  None if p.get("plain_tokens") is None else [tuple(t) for t in p["plain_tokens"]],
                                  ms))


# --------------------------------------------------------------------------- scoring


def accepted_wakes(cfg: dict, props: list[dict], verifier=None, forced: tuple[float, float] | None = None,
                   stats: dict | None = None) -> list[tuple[float, float, dict]]:
    """The accepted wakes of one stream's proposals: (peak, when known, proposal).

    With ``cfg["onset"]`` the proposals (engine + onset) are walked in time order under the pipeline's
    coordinator rules: a proposal arriving before the previous considered one's verdict (its window end
    + compute), or within ``HOLD_AFTER_WAKE_S`` after an accepted wake's peak, is ignored.  ``forced`` =
    (min margin, min log10 p) for a "+forced" configuration.  ``stats`` collects verify_ms, rejected,
    ignored and the number verified.
    """
    from engines.wake.text_verify import WINDOW_AFTER_S

    st = {"verify_ms": [], "rejected": 0, "ignored": 0, "verified": 0} if stats is None else stats
    gate = bool(cfg.get("onset"))
    busy_until, hold_until = -1.0, -1.0
    accepted = []
    for p in (sorted(props, key=lambda q: q["peak_end_s"]) if gate else props):
        if gate and (p["peak_end_s"] < busy_until or p["peak_end_s"] < hold_until):
            st["ignored"] += 1
            continue
        t_known = p["report_s"]
        ok = True
        if cfg["verify"] and not (cfg.get("sure") is not None and p["score"] >= cfg["sure"]):
            if cfg.get("verifier") == "forced":
                ok, ms = judge_forced(p, *forced)
            else:
                v = judge(verifier, p)
                ok, ms = v.accepted, v.compute_ms
            st["verify_ms"].append(ms)
            st["verified"] += 1
            t_known = max(p["report_s"], p["peak_end_s"] + WINDOW_AFTER_S) + ms / 1000.0
        busy_until = t_known
        if not ok:
            st["rejected"] += 1
            continue
        hold_until = p["peak_end_s"] + HOLD_AFTER_WAKE_S
        accepted.append((p["peak_end_s"], t_known, p))
    return accepted


def _room_names() -> dict[str, str]:
    """Which simulated room each room file of the default wake corpus was recorded in (bench/rooms.py)."""
    from bench.rooms import room_for
    from bench.wake_corpus import plan

    return {it.file: room_for(it.seed).name for it in plan() if it.condition == "room"}


def score_config(cfg: dict, prop: dict, streams: dict, verifier=None, min_score: float | None = None,
                 split: str | None = None, forced: tuple[float, float] | None = None) -> dict[str, Any]:
    """One configuration's numbers from its proposals (and verdicts when two-stage)."""
    det = {c: {"detected": 0, "total": 0} for c in CONDITIONS}
    by_voice: dict[str, dict[str, list[int]]] = defaultdict(lambda: {c: [0, 0] for c in CONDITIONS})
    by_room: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    rooms = _room_names() if "positive:room" in streams else {}
    delays, doubles, accepted_total = [], 0, 0
    false = {s: {"count": 0, "hours": 0.0} for s in NEGATIVE_SETS}
    verified_neg = {s: 0 for s in NEGATIVE_SETS}
    near_texts: dict[str, int] = defaultdict(int)
    positive_stream_false = 0
    stats = {"verify_ms": [], "rejected": 0, "ignored": 0, "verified": 0}
    for key, st in streams.items():
        before = stats["verified"]
        accepted = accepted_wakes(cfg, prop["proposals"].get(key, []), verifier, forced, stats)
        if key in verified_neg:
            verified_neg[key] += stats["verified"] - before
        accepted_total += len(accepted)
        if key.startswith("positive:"):
            cond = key.split(":", 1)[1]
            used = set()
            for f in st["files"]:
                if split and f.get("split") != split:
                    continue
                inside = [a for a in accepted if f["start"] <= a[0] < f["end"]]
                w0 = f["start"] + f["wake_start_s"] - MATCH_BEFORE_S
                w1 = f["start"] + f["wake_end_s"] + MATCH_AFTER_S
                hits = [a for a in inside if w0 <= a[0] <= w1]
                det[cond]["total"] += 1
                by_voice[f["speaker"]][cond][1] += 1
                if cond == "room":
                    by_room[rooms.get(f["wav"], "?")][1] += 1
                if hits:
                    det[cond]["detected"] += 1
                    by_voice[f["speaker"]][cond][0] += 1
                    if cond == "room":
                        by_room[rooms.get(f["wav"], "?")][0] += 1
                    delays.append((hits[0][1] - (f["start"] + f["wake_end_s"])) * 1000.0)
                if len(inside) > 1:
                    doubles += 1
                used.update(id(a) for a in inside)
            positive_stream_false += sum(1 for a in accepted if id(a) not in used) if not split else 0
        else:
            s = key
            false[s]["count"] += len(accepted)
            false[s]["hours"] += st["seconds"] / 3600.0
            if s.startswith("near_miss"):
                for a in accepted:
                    f = next((f for f in st["files"] if f["start"] <= a[0] < f["end"]), None)
                    near_texts[(f or {}).get("text", "?")] += 1
    for c in CONDITIONS:
        d = det[c]
        d["rate"] = round(d["detected"] / d["total"], 4) if d["total"] else None
    for s in NEGATIVE_SETS:
        f = false[s]
        f["hours"] = round(f["hours"], 4)
        f["per_hour"] = round(f["count"] / f["hours"], 2) if f["hours"] else None
    out = {
        "engine": prop["engine"], "threshold": cfg["threshold"], "two_stage": cfg["verify"],
        "onset": bool(cfg.get("onset")),
        "conditions": det,
        "by_voice": {v: {c: f"{n[0]}/{n[1]}" for c, n in cs.items()} for v, cs in sorted(by_voice.items())},
        "room_by_room": {r: f"{n[0]}/{n[1]}" for r, n in sorted(by_room.items())},
        "false_wakes": false,
        "near_miss_texts": dict(sorted(near_texts.items(), key=lambda kv: -kv[1])),
        "false_in_positive_streams": positive_stream_false,
        "delay_ms": _pct(delays),
        "proposer_cpu_ms_per_audio_s": round(prop["cpu_s"] * 1000.0 / max(prop["audio_s"], 1e-9), 2),
        "double_wakes": doubles,
        "accepted": accepted_total,
    }
    if cfg["verify"]:
        out["verify_ms"] = _pct(stats["verify_ms"])
        out["proposals"] = sum(len(v) for v in prop["proposals"].values())
        out["rejected"] = stats["rejected"]
        out["verified_per_hour"] = {s: (round(verified_neg[s] / false[s]["hours"], 1) if false[s]["hours"] else None)
                                    for s in NEGATIVE_SETS}
        if cfg.get("verifier") == "forced":
            out["min_margin"], out["min_log10p"] = forced
            out["mode"] = "forced"
        else:
            out["min_score"] = verifier.min_score
            out["mode"] = verifier.mode
    if cfg.get("onset"):
        out["ignored"] = stats["ignored"]
        out["proposals_by_source"] = {src: sum(1 for v in prop["proposals"].values() for p in v
                                               if p.get("source", "oww") == src) for src in ("oww", "onset")}
    return out


def _pct(values: list[float]) -> dict[str, Any]:
    p = percentiles(values)
    return {"p50": _r(p.get("p50")), "p95": _r(p.get("p95")), "n": len(values)}


def _r(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else round(float(v), 1)


def tune_verifier(verifier, prop: dict, streams: dict, cfg: dict) -> tuple[tuple[str, float], list[dict]]:
    """Pick the verifier's mode and min score on the tune half of the voices:
    fewest (missed positives + 3 × false wakes in the tune voices' negatives and all noise)."""
    table = []
    keep = verifier.mode, verifier.min_score
    pos_streams = {k: v for k, v in streams.items() if k.startswith("positive:")}
    neg = {k: v for k, v in streams.items() if not k.startswith("positive:")}
    for mode in ("text", "score", "confirm", "hybrid"):
        for s in ((0.0,) if mode == "text" else TUNE_SCORES):
            verifier.mode, verifier.min_score = mode, s
            pos = score_config(cfg, prop, pos_streams, verifier, split="tune")
            negs = _negatives_for_split(cfg, prop, neg, verifier, "tune")
            missed = {c: v["total"] - v["detected"] for c, v in pos["conditions"].items()}
            table.append({"mode": mode, "min_score": s, "missed": missed, "false": negs,
                          "cost": sum(missed.values()) + 3 * sum(negs.values())})
    verifier.mode, verifier.min_score = keep
    # lowest cost; among ties, the mode that reached it first in MODES order, then the middle of
    # its plateau of min scores (a margin on both sides for voices it was not tuned on)
    low = min(r["cost"] for r in table)
    tied = [r for r in table if r["cost"] == low]
    mode = tied[0]["mode"]
    scores = sorted(r["min_score"] for r in tied if r["mode"] == mode)
    return (mode, scores[(len(scores) - 1) // 2]), table


def _negatives_for_split(cfg, prop, neg_streams, verifier, split) -> dict[str, int]:
    out = {}
    for key, st in neg_streams.items():
        n = 0
        for p in prop["proposals"].get(key, []):
            f = next((f for f in st["files"] if f["start"] <= p["peak_end_s"] < f["end"]), None)
            if f is None or f.get("split") not in (split, "all"):
                continue
            if judge(verifier, p).accepted:
                n += 1
        out[key] = n
    return out


def _forced_negatives_for_split(cfg, prop, neg_streams, forced, split) -> dict[str, int]:
    out = {}
    for key, st in neg_streams.items():
        n = 0
        for peak, _t, _p in accepted_wakes(cfg, prop["proposals"].get(key, []), None, forced):
            f = next((f for f in st["files"] if f["start"] <= peak < f["end"]), None)
            if f is not None and f.get("split") in (split, "all"):
                n += 1
        out[key] = n
    return out


def tune_forced(prop: dict, streams: dict, cfg: dict, min_log10p: float) -> tuple[float, list[dict]]:
    """Pick the forced verifier's min margin on the tune half of the voices from ``MARGIN_GRID``:
    fewest (missed positives + 3 × false wakes in the tune voices' negatives and all noise);
    among ties, the middle of the plateau."""
    table = []
    pos_streams = {k: v for k, v in streams.items() if k.startswith("positive:")}
    neg = {k: v for k, v in streams.items() if not k.startswith("positive:")}
    for m in MARGIN_GRID:
        pos = score_config(cfg, prop, pos_streams, split="tune", forced=(m, min_log10p))
        negs = _forced_negatives_for_split(cfg, prop, neg, (m, min_log10p), "tune")
        missed = {c: v["total"] - v["detected"] for c, v in pos["conditions"].items()}
        table.append({"min_margin": m, "missed": missed, "false": negs,
                      "cost": sum(missed.values()) + 3 * sum(negs.values())})
    low = min(r["cost"] for r in table)
    tied = [r["min_margin"] for r in table if r["cost"] == low]
    return tied[(len(tied) - 1) // 2], table


def margin_sweep(cfg: dict, prop: dict, streams: dict, min_log10p: float) -> list[dict]:
    """Detections per condition and false wakes per negative set (all voices) at each margin of the grid."""
    rows = []
    for m in MARGIN_GRID:
        r = score_config(cfg, prop, streams, forced=(m, min_log10p))
        rows.append({"min_margin": m, **{c: r["conditions"][c]["detected"] for c in CONDITIONS},
                     "totals": {c: r["conditions"][c]["total"] for c in CONDITIONS},
                     **{f"false_{s}": r["false_wakes"][s]["count"] for s in NEGATIVE_SETS},
                     "double_wakes": r["double_wakes"]})
    return rows


# --------------------------------------------------------------------------- driver


def run_wake_eval(corpus_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  configs: tuple[str, ...] | list[str] | None = None,
                  progress: Callable[[str], None] | bool | None = None, *,
                  whisper_model: str | os.PathLike | None = None,
                  min_score: float | None = None, mode: str | None = None, tune: bool = False,
                  score_min: float = 0.5, wake_config=None, forced_model: str | os.PathLike | None = None,
                  min_margin: float | None = None) -> dict[str, Any]:
    """Evaluate each configuration on the wake corpus in ``corpus_dir``; the report dict (also written
    to ``out_dir/wake_eval.json`` with every proposal in ``out_dir/wake_proposals.jsonl``).

    "+forced" configurations use ``ForcedPhraseScorer`` on ``forced_model`` (default: the provisioned
    CTranslate2 tiny.en) with ``min_margin`` (default ``MIN_MARGIN``; with ``tune`` chosen on the tune
    split per configuration)."""
    from bench.wake_corpus import load_wake_corpus
    from engines.wake import WakeEngineUnavailable
    from engines.wake.text_verify import DEFAULT_MIN_SCORE, DEFAULT_MODE, WINDOW_AFTER_S, WINDOW_BEFORE_S, WakeVerifier

    from tqdm import tqdm

    say = progress if callable(progress) else ((lambda m: tqdm.write(m, file=sys.stderr)) if progress else
                                               (lambda m: None))
    configs = list(configs or DEFAULT_CONFIGS)
    rows = load_wake_corpus(corpus_dir)
    streams = build_streams(rows)
    corpus_info = {
        "dir": str(corpus_dir), "files": len(rows),
        "minutes": {k: round(v["seconds"] / 60.0, 2) for k, v in streams.items()},
        "voices": sorted({r["speaker"] for r in rows if r["set"] == "positive"}),
        "heldout_voices": sorted({r["speaker"] for r in rows if r.get("split") == "heldout"}),
    }
    parsed = [parse_config(c) for c in configs]
    verifier = scorer = None
    if any(c["verifier"] == "forced" for c in parsed):
        from engines.wake.forced import MIN_LOG10P, MIN_MARGIN, ForcedPhraseScorer

        if forced_model is None:
            from models.provision import ensure_models

            forced_model = ensure_models(progress=False).whisper_ct2
        scorer = ForcedPhraseScorer(Path(forced_model), threads=2)
        margin_default = MIN_MARGIN if min_margin is None else float(min_margin)
    forced_cache: dict = {}
    onset_prop: dict | None = None
    forced_tuning: dict[str, Any] = {}
    if any(c["verifier"] == "text" for c in parsed):
        from engines.stt.whispercpp import WhisperEngine

        if whisper_model is None:
            from models.provision import WHISPER, default_models_dir, ensure_models

            cached = default_models_dir() / WHISPER.filename
            whisper_model = cached if cached.is_file() else ensure_models(progress=False).whisper
        verifier = WakeVerifier(WhisperEngine(Path(whisper_model), n_threads=2), mode=mode or DEFAULT_MODE,
                                min_score=DEFAULT_MIN_SCORE if min_score is None else min_score)
    proposals: dict[tuple[str, float], dict] = {}
    traces: dict[str, dict] = {}
    read_cache: dict = {}  # (stream, peak) -> whisper's readings, shared by the thresholds
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    tuning = None
    for cfg in tqdm(parsed, desc="wake eval", unit="config", disable=not progress, leave=False):
        key = (cfg["engine"], cfg["threshold"])
        if cfg["onset"] and onset_prop is None:
            say("wake eval: onset proposer")
            onset_prop = propose_onsets(streams, say)
        if cfg["engine"] is None:  # the onset proposer alone
            pass
        elif key not in proposals:
            try:
                say(f"wake eval: {cfg['engine']} @ {cfg['threshold']}")
                if cfg["engine"] in TRACE_ENGINES and cfg["engine"] not in traces:
                    traces[cfg["engine"]] = (_load_traces(out_dir, cfg["engine"], streams)
                                             or score_traces(cfg["engine"], streams, wake_config, say))
                    _save_traces(out_dir, cfg["engine"], traces[cfg["engine"]])
                proposals[key] = propose(cfg["engine"], cfg["threshold"], streams, wake_config, say,
                                         traces=traces.get(cfg["engine"]))
            except (WakeEngineUnavailable, ImportError, OSError) as exc:
                proposals[key] = {"unavailable": str(exc)}
        prop = proposals.get(key) or {"engine": "onset", "proposals": {}, "cpu_s": 0.0,
                                      "audio_s": onset_prop["audio_s"]}
        if "unavailable" in prop:
            skipped[cfg["name"]] = prop["unavailable"]
            continue
        for props in prop["proposals"].values():
            for p in props:
                p.setdefault("source", "oww" if cfg["engine"] == "openwakeword" else cfg["engine"])
        if cfg["onset"]:  # the union of the engine's and the onset proposer's proposals
            prop = {"engine": prop["engine"] if cfg["engine"] is None else f"{prop['engine']}+onset",
                    "proposals": {k: sorted(prop["proposals"].get(k, []) + onset_prop["proposals"].get(k, []),
                                            key=lambda q: q["peak_end_s"]) for k in streams},
                    "cpu_s": prop["cpu_s"] + onset_prop["cpu_s"], "audio_s": prop["audio_s"]}
        if cfg["verifier"] == "forced":
            forced_proposals(scorer, prop["proposals"], streams, say, forced_cache)
            chosen = margin_default
            if tune:
                chosen, table = tune_forced(prop, streams, cfg, MIN_LOG10P)
                forced_tuning[cfg["name"]] = {"chosen": {"min_margin": chosen}, "table": table, "split": "tune"}
            forced = (chosen, MIN_LOG10P)
            results[cfg["name"]] = score_config(cfg, prop, streams, forced=forced)
            heldout = score_config(cfg, prop, streams, split="heldout", forced=forced)
            results[cfg["name"]]["heldout"] = heldout["conditions"]
            results[cfg["name"]]["margin_sweep"] = margin_sweep(cfg, prop, streams, MIN_LOG10P)
        elif cfg["verify"]:
            if not prop.get("verified"):
                verify_proposals(verifier, prop["proposals"], streams, say, read_cache)
                prop["verified"] = True
            if tune:
                (mode, best), table = tune_verifier(verifier, prop, streams, cfg)
                tuning = {"chosen": {"mode": mode, "min_score": best}, "table": table, "split": "tune"}
                verifier.mode, verifier.min_score = mode, best
            results[cfg["name"]] = score_config(cfg, prop, streams, verifier)
            results[cfg["name"]]["heldout"] = score_config(cfg, prop, streams, verifier, split="heldout")["conditions"]
            # the same proposals judged by the other verifiers, for comparison
            keep = verifier.mode, verifier.min_score
            for mode, s in (("text", 0.0), ("score", score_min), ("confirm", 0.0), ("hybrid", score_min)):
                if (mode, s) == keep:
                    continue
                verifier.mode, verifier.min_score = mode, s
                name = f"{cfg['name']} [{mode}{'' if mode == 'text' else f' >= {s:g}'}]"
                results[name] = score_config(cfg, prop, streams, verifier)
                results[name]["heldout"] = score_config(cfg, prop, streams, verifier, split="heldout")["conditions"]
            verifier.mode, verifier.min_score = keep
        else:
            results[cfg["name"]] = score_config(cfg, prop, streams)
            results[cfg["name"]]["heldout"] = score_config(cfg, prop, streams, split="heldout")["conditions"]
        if out_dir is not None:  # partial results survive an interrupted run
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "wake_eval.partial.json").write_text(json.dumps(
                {"configs": results, "skipped": skipped, "tuning": tuning, "forced_tuning": forced_tuning}, indent=1))
    gate = None
    if "openwakeword" in traces:  # the idle gate must not change a proposal (workers/wake_gate.py)
        say("wake eval: openWakeWord behind the idle gate")
        gate = gate_check(streams, traces["openwakeword"], wake_config, progress=say)
    report = {"corpus": corpus_info, "configs": results, "skipped": skipped, "gate": gate,
              "verifier": ({"kind": "whisper tiny.en, prompt 'Hey Jarvis.', hey+jarvis match",
                            "mode": verifier.mode, "min_score": verifier.min_score, "window_before_s": WINDOW_BEFORE_S,
                            "window_after_s": WINDOW_AFTER_S} if verifier else None),
              "forced_verifier": ({"kind": f"ctranslate2 {Path(forced_model).name} forced score, wake vs rivals",
                                   "model": str(forced_model), "min_margin": margin_default, "min_log10p": MIN_LOG10P,
                                   "margin_grid": list(MARGIN_GRID), "window_before_s": WINDOW_BEFORE_S,
                                   "window_after_s": WINDOW_AFTER_S} if scorer else None),
              "tuning": tuning, "forced_tuning": forced_tuning}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "wake_eval.json").write_text(json.dumps(report, indent=1))
        with open(out / "wake_proposals.jsonl", "w") as fh:
            every = list(proposals.items()) + ([(("onset", None), onset_prop)] if onset_prop else [])
            for (eng, thr), prop in every:
                for skey, props in prop.get("proposals", {}).items():
                    for p in props:
                        f = next((f for f in streams[skey]["files"] if f["start"] <= p["peak_end_s"] < f["end"]), {})
                        fh.write(json.dumps({"engine": eng, "threshold": thr, "stream": skey, "file": f.get("wav"),
                                             "t_in_file": round(p["peak_end_s"] - f.get("start", 0.0), 3),
                                             **{k: v for k, v in p.items() if k != "tokens"},
                                             "tokens": p.get("tokens")}) + "\n")
    return report


def rescore(corpus_dir, proposals_path, out_dir=None, *, tune: bool = True, mode: str | None = None,
            min_score: float | None = None, score_min: float = 0.5) -> dict[str, Any]:
    """Score the verifier again from a run's ``wake_proposals.jsonl`` (no engine, no decoding):
    for trying verifier rules and tuning them on the stored readings."""
    from bench.wake_corpus import load_wake_corpus
    from engines.wake.text_verify import DEFAULT_MIN_SCORE, DEFAULT_MODE, WakeVerifier

    streams = build_streams(load_wake_corpus(corpus_dir))
    props: dict[tuple[str, float], dict] = {}
    for line in Path(proposals_path).read_text().splitlines():
        r = json.loads(line)
        if r.get("tokens") is None:
            continue
        key = (r["engine"], r["threshold"])
        prop = props.setdefault(key, {"engine": r["engine"], "proposals": {k: [] for k in streams},
                                      "cpu_s": 0.0, "audio_s": 1.0})
        prop["proposals"][r["stream"]].append(r)
    verifier = WakeVerifier(None, mode=mode or DEFAULT_MODE,
                            min_score=DEFAULT_MIN_SCORE if min_score is None else min_score)
    results, tuning = {}, None
    for (eng, thr), prop in props.items():
        cfg = {"name": f"{eng}@{thr:g}+verify", "engine": eng, "threshold": thr, "verify": True}
        if tune:
            (m, best), table = tune_verifier(verifier, prop, streams, cfg)
            tuning = {"chosen": {"mode": m, "min_score": best}, "table": table, "split": "tune"}
            verifier.mode, verifier.min_score = m, best
        keep = verifier.mode, verifier.min_score
        for m, sc in ((keep[0], keep[1]), ("text", 0.0), ("score", score_min), ("confirm", 0.0), ("hybrid", score_min)):
            verifier.mode, verifier.min_score = m, sc
            name = cfg["name"] + ("" if (m, sc) == keep else f" [{m}{'' if m == 'text' else f' >= {sc:g}'}]")
            if name in results:
                continue
            results[name] = score_config(cfg, prop, streams, verifier)
            results[name]["heldout"] = score_config(cfg, prop, streams, verifier, split="heldout")["conditions"]
        verifier.mode, verifier.min_score = keep
    report = {"configs": results, "skipped": {}, "tuning": tuning}
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "wake_rescore.json").write_text(json.dumps(report, indent=1))
    return report


def summary_table(report: dict) -> str:
    """A plain-text table of the report (also what report.md shows)."""
    lines = [f"{'config':30s} " + " ".join(f"{c:>9s}" for c in CONDITIONS) + f" {'ord/h':>6s} {'noise/h':>7s} "
             f"{'near':>5s} {'room ord/near':>13s} {'dbl':>4s} {'delay p50/p95':>14s} {'cpu ms/s':>8s} "
             f"{'verify p50/p95':>14s}"]
    for name, r in report["configs"].items():
        c = r["conditions"]
        fw = r["false_wakes"]
        ver = r.get("verify_ms") or {}
        lines.append(
            f"{name:30s} " + " ".join(f"{c[k]['detected']:>4d}/{c[k]['total']:<4d}" for k in CONDITIONS)
            + f" {_f(fw['ordinary']['per_hour']):>6s} {_f(fw['noise']['per_hour']):>7s} {fw['near_miss']['count']:>5d}"
            f" {fw['ordinary:room']['count']:>6d}/{fw['near_miss:room']['count']:<6d}"
            f" {r['double_wakes']:>4d} {_f(r['delay_ms']['p50'], 0):>6s}/{_f(r['delay_ms']['p95'], 0):<7s}"
            f" {r['proposer_cpu_ms_per_audio_s']:>8.1f} {_f(ver.get('p50'), 0):>6s}/{_f(ver.get('p95'), 0):<7s}")
    for name, why in report.get("skipped", {}).items():
        lines.append(f"{name:30s} skipped: {why}")
    return "\n".join(lines)


def forced_details(report: dict) -> str:
    """The forced configurations' margin sweeps, tuning, held-out numbers, near misses that woke and
    verifications per hour of each negative set (plain text)."""
    lines = []
    for name, r in report["configs"].items():
        if r.get("mode") != "forced":
            continue
        lines.append(f"== {name}: min margin {r['min_margin']:g}, min log10p {r['min_log10p']:g}"
                     + (f", ignored {r['ignored']}, proposals by source {r['proposals_by_source']}"
                        if "ignored" in r else ""))
        lines.append("  heldout: " + " ".join(f"{c} {v['detected']}/{v['total']}" for c, v in r["heldout"].items())
                     + "; room condition by room: "
                     + " ".join(f"{k} {v}" for k, v in r.get("room_by_room", {}).items()))
        lines.append(f"  verified per hour: {r['verified_per_hour']}  verify ms {r['verify_ms']}")
        if r.get("near_miss_texts"):
            lines.append(f"  near misses that woke: {r['near_miss_texts']}")
        lines.append(f"  {'margin':>6s} " + " ".join(f"{c:>7s}" for c in CONDITIONS)
                     + " " + " ".join(f"{s:>9s}" for s in NEGATIVE_SETS) + "   dbl")
        for row in r.get("margin_sweep", []):
            lines.append(f"  {row['min_margin']:>6g} "
                         + " ".join(f"{row[c]:>3d}/{row['totals'][c]:<3d}" for c in CONDITIONS)
                         + " " + " ".join(f"{row['false_' + s]:>9d}" for s in NEGATIVE_SETS)
                         + f" {row['double_wakes']:>5d}")
        t = (report.get("forced_tuning") or {}).get(name)
        if t:
            for row in t["table"]:
                lines.append("  tune: " + json.dumps(row))
            lines.append(f"  chosen on the tune split: {t['chosen']}")
    return "\n".join(lines)


def _f(v, d: int = 1) -> str:
    return "-" if v is None else f"{v:.{d}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.wake_eval", description="Offline wake-word evaluation.")
    ap.add_argument("--corpus", help="a wake corpus folder (default: build the default one in the cache)")
    ap.add_argument("--out", default="bench/out/wake", help="output folder (default bench/out/wake)")
    ap.add_argument("--quick", action="store_true", help="the small corpus and two configurations")
    ap.add_argument("--configs", nargs="*", help=f"default: {' '.join(DEFAULT_CONFIGS)}")
    ap.add_argument("--min-score", type=float, help="verifier min score (default: the module's)")
    ap.add_argument("--mode", choices=("text", "score", "confirm"), help="verifier mode (default: the module's)")
    ap.add_argument("--min-margin", type=float, help="forced verifier's min margin (default: engines.wake.forced's)")
    ap.add_argument("--forced-model", metavar="DIR",
                    help="CTranslate2 whisper folder for the forced verifier (default: the provisioned tiny.en)")
    ap.add_argument("--tune", action="store_true",
                    help="choose the verifier's min score on the tune half of the voices")
    ap.add_argument("--rescore", metavar="PROPOSALS_JSONL",
                    help="judge the stored readings of an earlier run again (no engines, no decoding)")
    args = ap.parse_args(argv)
    from bench.wake_corpus import build_wake_corpus, default_wake_corpus_dir

    if args.rescore:
        report = rescore(args.corpus, args.rescore, args.out, tune=args.tune, mode=args.mode, min_score=args.min_score)
        print(summary_table(report))
        if report.get("tuning"):
            for row in report["tuning"]["table"]:
                print("tune:", json.dumps(row))
            print("chosen on the tune split:", report["tuning"]["chosen"])
        return 0

    corpus = args.corpus
    if corpus is None:
        from core.config import load_config

        cache = Path(load_config().models.dir).expanduser().parent
        corpus = build_wake_corpus(default_wake_corpus_dir(cache, args.quick), quick=args.quick).parent
    configs = args.configs or (QUICK_CONFIGS if args.quick else DEFAULT_CONFIGS)
    t0 = time.monotonic()
    report = run_wake_eval(corpus, args.out, configs, True, min_score=args.min_score, mode=args.mode,
                           tune=args.tune, min_margin=args.min_margin, forced_model=args.forced_model)
    print(summary_table(report))
    if report.get("tuning"):
        for row in report["tuning"]["table"]:
            print("tune:", json.dumps(row))
        print("chosen on the tune split:", report["tuning"]["chosen"])
    print(forced_details(report))
    if report.get("gate"):
        print("idle gate:", json.dumps(report["gate"]))
    print(f"({time.monotonic() - t0:.0f} s) {Path(args.out) / 'wake_eval.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
