"""Speaker-ID evaluation: EER and threshold, identification accuracy, stranger rejection, cost.

    python -m bench.speaker_eval [--out bench/out/speaker] [--no-cost] [--threshold 0.75]

Corpus: offline TTS voices (flite and espeak-ng variants, bench/synth.py) speaking different
sentences.  Each *enrolled* voice is enrolled from 3 utterances (the voiceprint store's mean) and
tested on its other utterances; *stranger* voices are never enrolled.  Trials = every test
utterance against every voiceprint (target: same voice).  Reported:

* ``eer`` and ``eer_threshold`` (where false accepts = false rejects) over those trials;
* at the configured threshold and at the EER threshold: identification accuracy (enrolled test
  utterances given their own name) and stranger rejection (stranger utterances → "unknown");
* cost (``--no-cost`` skips it): ms per embedding of a 3 s clip with 1 thread, load time, RSS of
  a process that holds the engine and of the real speaker worker process after one answer
  (spawned through the supervisor over shared memory), for the numpy resemblyzer port and for
  SpeechBrain's ECAPA (random init, the size of spkrec-ecapa-voxceleb), and torch's import cost.

Synthetic voices are far more uniform than people: treat the EER as a sanity check of the
engine and the threshold logic, and re-measure the threshold on real enrollments.
The output lands in ``<out>/speaker_eval.json`` (and a timestamped copy); a table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please turn on the lights in the kitchen and close the front door.",
    "What is the weather going to be like tomorrow morning in town?",
    "Remind me to call my sister at seven o'clock this evening.",
    "How many kilometres is it from here to the nearest train station?",
    "Play some quiet music and set the volume to twenty percent.",
    "Could you tell me when the next bus leaves for the city centre?",
    "Add milk, bread and two dozen eggs to my shopping list.",
)
# Voices chosen to be distinct "people" (cross-voice cosine <= ~0.8 with this engine). espeak-ng's accent
# and pitch variants of one base voice (en-us, en-gb, en-gb-scotland, en+croak, en+m1/m3/m5) score
# 0.91-0.95 against each other, as high as a voice against itself: they are one synthetic speaker, so
# they are reported apart (VARIANTS: how often a variant of an enrolled voice is taken for it), not
# counted as strangers.
ENROLLED = ("flite:kal", "flite:slt", "flite:awb", "en-us", "en+f3")
STRANGERS = ("flite:rms", "en-us+klatt", "en+whisper", "en+f2")
VARIANTS = {"en-gb-scotland": "en-us", "en+croak": "en-us", "en+m3": "en-us"}
ENROLL_N = 3


def synth_corpus(voices, sentences=SENTENCES) -> dict[str, list[np.ndarray]]:
    from bench.speech import synth

    return {v: [synth(s, v) for s in sentences] for v in voices}


def eer(target: np.ndarray, nontarget: np.ndarray) -> tuple[float, float]:
    """(equal error rate, threshold there) from target and non-target cosine scores.

    Thresholds are swept on a 0.001 grid; where several give the same (lowest) error — e.g. the
    whole gap between the classes when they are separable — the middle one is returned.
    """
    grid = np.round(np.arange(-1.0, 1.0005, 0.001), 3)
    frr = (target[None, :] < grid[:, None]).mean(axis=1)
    far = (nontarget[None, :] >= grid[:, None]).mean(axis=1)
    rate = np.maximum(frr, far)  # the EER is where the curves cross; max() is its upper bound per threshold
    best = rate.min()
    at = grid[np.isclose(rate, best)]
    return float(best), float(np.median(at))


def evaluate(engine, corpus: dict[str, list[np.ndarray]], enrolled=ENROLLED, strangers=STRANGERS,
             threshold: float = 0.75, variants: dict[str, str] | None = None,
             test_clip_s: float | None = None) -> dict:
    """EER / threshold / accuracy / stranger rejection for ``engine`` on ``corpus``.

    Enrollment uses whole utterances; ``test_clip_s`` cuts the test utterances to their first
    seconds (the worker may judge only a short request)."""
    from engines.speaker.voiceprints import VoiceprintStore

    cut = int(test_clip_s * 16_000) if test_clip_s else None
    embs = {v: [engine.embed(c if i < ENROLL_N or cut is None else c[:cut]) for i, c in enumerate(clips)]
            for v, clips in corpus.items()}
    with tempfile.TemporaryDirectory() as tmp:
        store = VoiceprintStore(tmp, engine.name, engine.dim)
        for v in enrolled:
            store.enroll(v.replace(":", "_").replace("+", "_"), embs[v][:ENROLL_N])
        names = {v: v.replace(":", "_").replace("+", "_") for v in enrolled}
        prints = {n: store._matrix[store._names.index(n)] for n in names.values()}
        target, nontarget = [], []
        tests = [(v, e) for v in enrolled for e in embs[v][ENROLL_N:]] + \
                [(v, e) for v in strangers for e in embs[v][ENROLL_N:]]
        for v, e in tests:
            for n, p in prints.items():
                (target if names.get(v) == n else nontarget).append(float(p @ e))
        rate, at = eer(np.array(target), np.array(nontarget))

        def at_threshold(t: float) -> dict:
            ok = [store.identify(e, t)[0] == names[v] for v, e in tests if v in names]
            rejected = [store.identify(e, t)[0] == "unknown" for v, e in tests if v not in names]
            result = {"threshold": round(t, 4), "identification_accuracy": round(float(np.mean(ok)), 4),
                      "stranger_rejected": round(float(np.mean(rejected)), 4), "n_enrolled_tests": len(ok),
                      "n_stranger_tests": len(rejected)}
            if variants:
                taken = [store.identify(e, t)[0] == names[base] for v, base in variants.items()
                         for e in embs[v][ENROLL_N:]]
                result["variant_taken_for_enrolled_base"] = round(float(np.mean(taken)), 4)
            return result

        return {
            "engine": engine.name, "voices_enrolled": list(enrolled), "voices_strangers": list(strangers),
            "voices_variants": dict(variants or {}),
            "utterances_per_voice": len(next(iter(corpus.values()))), "enroll_utterances": ENROLL_N,
            "test_clip_s": test_clip_s, "trials": {"target": len(target), "nontarget": len(nontarget)},
            "scores": {"target_mean": round(float(np.mean(target)), 4), "target_min": round(float(np.min(target)), 4),
                       "nontarget_mean": round(float(np.mean(nontarget)), 4),
                       "nontarget_max": round(float(np.max(nontarget)), 4)},
            "eer": round(rate, 4), "eer_threshold": round(at, 4),
            "raw_scores": {"target": [round(x, 4) for x in target], "nontarget": [round(x, 4) for x in nontarget]},
            "at_config_threshold": at_threshold(threshold), "at_eer_threshold": at_threshold(at),
        }


# --------------------------------------------------------------------------- cost, in fresh processes

_COST = r"""
import json, os, sys, time
t0 = time.perf_counter()
import numpy as np, psutil
from threadpoolctl import threadpool_limits
threadpool_limits(1)
kind, arg = sys.argv[1], sys.argv[2]
rss0 = psutil.Process().memory_info().rss
t_import = time.perf_counter()
if kind == "resemblyzer":
    from engines.speaker.resemblyzer import ResemblyzerNumpy as E
    import workers.speaker  # the worker's own imports
    t_import = time.perf_counter() - t_import
    t = time.perf_counter(); eng = E(arg, threads=1); load = time.perf_counter() - t
else:
    import torch
    from engines.speaker.speechbrain import SpeechbrainEcapa as E
    import workers.speaker
    t_import = time.perf_counter() - t_import
    t = time.perf_counter(); eng = E(arg, threads=1); load = time.perf_counter() - t
from bench.speech import synth
clip = synth("Please turn on the lights in the kitchen and close the front door.", "en-us")[: 3 * 16000]
times = []
for i in range(7):
    t = time.perf_counter(); eng.embed(clip); times.append((time.perf_counter() - t) * 1000)
print(json.dumps({"engine": kind, "dim": eng.dim, "import_s": round(t_import, 3), "load_s": round(load, 3),
                  "embed_ms_p50": round(float(np.median(times[2:])), 1), "embed_ms_min": round(min(times[2:]), 1),
                  "first_embed_ms": round(times[0], 1), "clip_s": len(clip) / 16000,
                  "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1)}))
"""


def _run_cost(kind: str, arg: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _COST, kind, arg], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0:
        return {"engine": kind, "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_import_cost() -> dict:
    code = ("import time, psutil; r=psutil.Process().memory_info().rss; t=time.perf_counter(); import torch;"
            "a=time.perf_counter()-t; r2=psutil.Process().memory_info().rss; t=time.perf_counter();"
            "import speechbrain.inference.speaker; b=time.perf_counter()-t; r3=psutil.Process().memory_info().rss;"
            "print(round(a,3), round((r2-r)/2**20,1), round(b,3), round((r3-r2)/2**20,1))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    a, ra, b, rb = out.stdout.split()
    return {"import_torch_s": float(a), "import_torch_rss_mb": float(ra), "import_speechbrain_s": float(b),
            "import_speechbrain_rss_mb": float(rb)}


def worker_rss(**speaker) -> dict:
    """RSS of the real speaker worker process (spawned by the supervisor) after it answered once."""
    import psutil

    from core.messages import SpeakerResult, StartListening
    from bench.speech import pad, synth
    from bench.worker_rig import WAKE_AT, WorkerRig

    with tempfile.TemporaryDirectory() as state:
        rig = WorkerRig(Path(state), **speaker)
        try:
            rig.wait_running(120)
            seq = rig.speak(pad(synth("Please turn on the lights in the kitchen.", "en-us"), 0.4, 0.0))
            rig.send(StartListening(session=1, wake_seq=seq + WAKE_AT, wake_ns=time.monotonic_ns()))
            result = rig.result(60)
            pid = rig.sup.workers["speaker"].pid
            rss = psutil.Process(pid).memory_info().rss / 2**20
        finally:
            rig.close()
    ok = isinstance(result, SpeakerResult)
    return {"worker_rss_mb": round(rss, 1), "answered": ok,
            "worker_compute_ms": result.compute_ms if ok else None}


def cost(weights: Path) -> dict:
    result = {"resemblyzer": _run_cost("resemblyzer", str(weights))}
    result["resemblyzer"].update(worker_rss())
    try:
        import speechbrain  # noqa: F401
    except ImportError:
        result["speechbrain"] = {"error": "speechbrain not installed"}
        return result
    from bench.ecapa import build_ecapa_folder

    with tempfile.TemporaryDirectory() as tmp:
        # the size of speechbrain/spkrec-ecapa-voxceleb: channels 1024 (x4) + 3072, 192-d embeddings
        folder = build_ecapa_folder(Path(tmp) / "ecapa", channels=1024, lin_neurons=192)
        result["speechbrain"] = _run_cost("speechbrain", str(folder))
        result["speechbrain"].update(worker_rss(engine="speechbrain", model_dir=str(folder)))
        result["speechbrain"]["note"] = "random-init ECAPA of spkrec-ecapa-voxceleb's size (timing only)"
    result["torch_import"] = torch_import_cost()
    return result


def print_table(report: dict) -> None:
    for key in ("quality", "quality_short_1_5s"):
        _print_quality(report[key])
    _print_cost(report)


def _print_quality(q: dict) -> None:
    clip = f"test clips cut to {q['test_clip_s']} s" if q.get("test_clip_s") else "whole test utterances"
    print(f"speaker ID ({q['engine']}, {clip}): {len(q['voices_enrolled'])} enrolled voices, "
          f"{len(q['voices_strangers'])} strangers, {q['trials']['target']} target / "
          f"{q['trials']['nontarget']} non-target trials")
    print(f"  EER {q['eer'] * 100:.1f} % at threshold {q['eer_threshold']:.3f}   "
          f"(target mean {q['scores']['target_mean']:.3f} min {q['scores']['target_min']:.3f}; "
          f"non-target mean {q['scores']['nontarget_mean']:.3f} max {q['scores']['nontarget_max']:.3f})")
    print(f"  {'threshold':>10s} {'id accuracy':>12s} {'strangers rejected':>19s} {'variant taken for base':>23s}")
    for key in ("at_config_threshold", "at_eer_threshold"):
        r = q[key]
        print(f"  {r['threshold']:10.3f} {r['identification_accuracy'] * 100:11.1f}% "
              f"{r['stranger_rejected'] * 100:18.1f}% "
              f"{r.get('variant_taken_for_enrolled_base', float('nan')) * 100:22.1f}%")


def _print_cost(report: dict) -> None:
    if "cost" in report:
        print(f"  {'engine':12s} {'dim':>4s} {'import s':>9s} {'load s':>7s} {'embed ms (3 s clip, 1 thr)':>27s} "
              f"{'RSS MB':>7s} {'worker RSS MB':>14s}")
        for name in ("resemblyzer", "speechbrain"):
            c = report["cost"].get(name, {})
            if "error" in c:
                print(f"  {name:12s} error: {c['error']}")
                continue
            print(f"  {name:12s} {c['dim']:4d} {c['import_s']:9.2f} {c['load_s']:7.2f} {c['embed_ms_p50']:27.1f} "
                  f"{c['rss_mb']:7.0f} {c.get('worker_rss_mb', float('nan')):14.0f}")
        t = report["cost"].get("torch_import", {})
        if "import_torch_s" in t:
            print(f"  import torch: {t['import_torch_s']:.2f} s, +{t['import_torch_rss_mb']:.0f} MB; "
                  f"import speechbrain: {t['import_speechbrain_s']:.2f} s, +{t['import_speechbrain_rss_mb']:.0f} MB")


def run(out: Path, threshold: float = 0.75, with_cost: bool = True) -> dict:
    from threadpoolctl import threadpool_limits

    from models.provision import ensure_speaker_model
    from engines.speaker.resemblyzer import ResemblyzerNumpy

    threadpool_limits(1)
    weights = ensure_speaker_model(progress=False)
    engine = ResemblyzerNumpy(weights, threads=1)
    started = time.time()
    corpus = synth_corpus(ENROLLED + STRANGERS + tuple(VARIANTS))
    t = time.perf_counter()
    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "quality": evaluate(engine, corpus, threshold=threshold, variants=VARIANTS)}
    n_clips = sum(len(c) for c in corpus.values())
    report["quality"]["embed_ms_mean_in_eval"] = round((time.perf_counter() - t) * 1000 / n_clips, 1)
    report["quality_short_1_5s"] = evaluate(engine, corpus, threshold=threshold, variants=VARIANTS, test_clip_s=1.5)
    if with_cost:
        report["cost"] = cost(weights)
    report["seconds"] = round(time.time() - started, 1)
    # One threshold for both whole utterances and short requests: the EER point of the pooled trials.
    pooled = [report[k]["raw_scores"] for k in ("quality", "quality_short_1_5s")]
    rate, at = eer(np.array(pooled[0]["target"] + pooled[1]["target"]),
                   np.array(pooled[0]["nontarget"] + pooled[1]["nontarget"]))
    report["recommended_threshold"] = {"threshold": round(at, 3), "pooled_eer": round(rate, 4),
                                       "note": "EER point over whole and 1.5 s test clips (synthetic voices)"}
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    (out / "speaker_eval.json").write_text(text)
    (out / f"speaker_eval-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(text)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speaker_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "speaker")
    parser.add_argument("--threshold", type=float, default=0.75, help="the configured threshold to report at")
    parser.add_argument("--no-cost", action="store_true", help="skip the timing/RSS measurements")
    args = parser.parse_args(argv)
    report = run(args.out, args.threshold, with_cost=not args.no_cost)
    print_table(report)
    r = report["recommended_threshold"]
    print(f"recommended [speaker] threshold: {r['threshold']:.3f} (pooled EER {r['pooled_eer'] * 100:.1f} %)")
    print(f"written to {args.out / 'speaker_eval.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
