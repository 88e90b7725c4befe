"""Every wake engine over synthesized wake phrases and negatives: detection, CPU, RSS, delay.

``python -m bench.wake_measure [ENGINE...]`` runs each engine in a fresh process (a fair RSS delta)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from core.audio import FRAME_SAMPLES, SAMPLE_RATE
from engines.wake import ENGINES, WakeEngineUnavailable, make_wake_engine
from engines.wake.detector import WakeDetector
from models.porcupine import ensure_porcupine_legacy

_VOICES = ("flite:kal", "flite:slt", "flite:awb", "en-us", "en+m3")
_NEGATIVES = ("the weather is nice today in the city", "please ask mister travis about the jars of honey",
              "hey marvin, turn on the radio")


def _measure_one(name: str, threshold: float) -> dict[str, Any]:
    """Run one engine (in this process) over synthesized clips; detection, CPU, RSS, delay."""
    import resource
    import time

    from bench.speech import pad, synth

    def rss_mb() -> float:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    clips = []
    for v in _VOICES:  # synthesize first: the TTS is not the engine's cost
        # The phrase alone gives an exact phrase end for the delay; the phrase + request is what people say.
        phrase = synth("hey jarvis", v)
        clips.append((v, True, pad(phrase, 2.0, 1.5), 2.0 + phrase.size / SAMPLE_RATE))
        clips.append((v + "+request", True, pad(synth("hey jarvis, what time is it", v), 2.0, 1.5), None))
        for text in _NEGATIVES:
            clips.append((v, False, pad(synth(text, v), 2.0, 1.5), None))
    rss0 = rss_mb()
    t_load = time.perf_counter()
    engine = make_wake_engine(name, porcupine_legacy=ensure_porcupine_legacy)
    load_s = time.perf_counter() - t_load
    out: dict[str, Any] = {"engine": engine.name, "threshold": threshold, "load_s": round(load_s, 3), "hits": {},
                           "false": 0, "delays_ms": [], "peaks": {}}
    cpu = 0.0
    audio_s = 0.0
    for voice, wake, audio, end_s in clips:
        engine.reset()
        det = WakeDetector(engine, threshold=threshold, warmup_s=1.0, settle_score=0.5)  # as the worker does
        c0 = time.process_time()
        dets = []
        for i in range(0, audio.size - FRAME_SAMPLES + 1, FRAME_SAMPLES):
            d = det.feed(audio[i:i + FRAME_SAMPLES])
            if d is not None:
                dets.append(d)
        cpu += time.process_time() - c0
        audio_s += audio.size / SAMPLE_RATE
        if wake:
            out["hits"][voice] = len(dets)
            if dets:
                out["peaks"][voice] = round(dets[0].score, 3)
                if end_s is not None:  # phrase end -> end of the frame at which the detection is reported
                    reported_s = (dets[0].frame_index + dets[0].frames_ago + 1) * FRAME_SAMPLES / SAMPLE_RATE
                    out["delays_ms"].append(round((reported_s - end_s) * 1000))
        else:
            out["false"] += len(dets)
    out["detected"] = sum(1 for n in out["hits"].values() if n)
    out["score_ge_0.5"] = sum(1 for p in out["peaks"].values() if p >= 0.5)  # accepted with the verifier down
    out["positives"] = len(out["hits"])
    out["negatives"] = len(clips) - len(out["hits"])
    out["cpu_ms_per_audio_s"] = round(cpu * 1000 / audio_s, 1)
    out["rss_delta_mb"] = round(rss_mb() - rss0, 1)
    out["maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.wake_measure", description=__doc__.split("\n\n")[0])
    parser.add_argument("engines", nargs="*", metavar="ENGINE",
                        help=f"engines to measure (default all: {' '.join(ENGINES)})")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process of one engine
    args = parser.parse_args(argv)
    if args.one:
        try:
            print(json.dumps(_measure_one(args.one, args.threshold)))
        except WakeEngineUnavailable as exc:
            print(json.dumps({"engine": args.one, "unavailable": str(exc)}))
        return 0
    for name in args.engines or ENGINES:  # one fresh process each: a fair RSS delta
        proc = subprocess.run([sys.executable, "-m", "bench.wake_measure", "--one", name,
                               "--threshold", str(args.threshold)], capture_output=True, text=True)
        print(proc.stdout.strip() or f'{{"engine": "{name}", "error": {json.dumps(proc.stderr[-500:])}}}', flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
