"""A/B runs of the real pipeline in one bench: what verification and speaker ID cost the headline.

Each variant replays the same wake utterances through `pipeline run` with a few config keys
changed by environment, so the numbers differ only by that change (same machine, same minutes):

* `default`: two-stage wake (verifier on) and speaker ID beside STT;
* `verify_off`: single-stage wake — does the verifier cost speech end → first token anything?
* `speaker_slow`: speaker ID delayed by an injected fault (`[speaker] fault_delay_ms`) — the answer
  must not wait for it beyond its deadline, so the headline must not grow.

Also reported per variant: how often the speaker interval overlapped STT's (the proof that they
run side by side) and how many wakes were accepted, rejected or missed.
"""

from __future__ import annotations

from pathlib import Path

from bench.analysis import input_t0_ns, match_sessions, utterance_records
from bench.replay import build_replay, progress_bar, run_pipeline
from core.events import SpeakerEvent, WakeEvent, WakeRejectedEvent
from pipeline.latency import percentiles

VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "verify_off": {"VIGIL_WAKE__VERIFY": "off"},
    "speaker_slow": {"VIGIL_SPEAKER__FAULT_DELAY_MS": "1500"},
}


def overlap(marks: dict) -> bool | None:
    """Did speaker ID work while STT was hearing the request? None when either is missing."""
    start, done = marks.get("speaker_start"), marks.get("speaker")
    heard_from, heard_to = marks.get("wake"), marks.get("transcript")
    if None in (start, done, heard_from, heard_to):
        return None
    return start < heard_to and done > heard_from


def measure_variant(utterances, run_dir: Path, name: str, env: dict[str, str], gap_s: float = 1.5,
                    progress: bool = False) -> dict:
    wav = run_dir / f"variant-{name}.wav"
    placements = build_replay(utterances, wav, passes=1, gap_s=gap_s)
    audio_s = placements[-1].offset_s + placements[-1].duration_s + gap_s
    bar, tick = progress_bar(audio_s + 10, f"variant {name}: replaying {len(placements)} utterances", progress)
    result = run_pipeline(wav, run_dir / f"variant-{name}", extra_args=("--exit-when-done",), env=env,
                          on_tick=tick, timeout_s=audio_s * 2 + 300)
    bar.close()
    wav.unlink()
    if result.returncode != 0:
        return {"env": env, "error": f"exit {result.returncode}", "stderr_tail": result.stderr_tail[-800:]}
    t0 = input_t0_ns(result.events)
    matched, _ = match_sessions(placements, result.sessions, t0)
    records = utterance_records(utterances, matched, t0)
    answered = [r for r in records if "speech_end_to_first_token" in r["vigil"]]
    overlaps = [overlap((m.session or {}).get("marks", {})) for m in matched if m.session is not None]
    speakers = [e for e in result.events if isinstance(e, SpeakerEvent)]
    return {
        "env": env,
        "utterances": len(utterances),
        "answered": len(answered),
        "wakes": sum(1 for e in result.events if isinstance(e, WakeEvent)),
        "wake_rejected": sum(1 for e in result.events if isinstance(e, WakeRejectedEvent)),
        "speaker_results": len(speakers),
        "speaker_overlapped_stt": sum(1 for o in overlaps if o),
        "speaker_compared": sum(1 for o in overlaps if o is not None),
        "speech_end_to_first_token": percentiles([r["vigil"]["speech_end_to_first_token"] for r in answered]),
        "wake_to_first_token": percentiles([r["vigil"]["wake_to_first_token"] for r in answered
                                            if "wake_to_first_token" in r["vigil"]]),
    }


def measure_variants(utterances, run_dir: Path, count: int = 24, progress: bool = True) -> dict:
    """The same `count` wake utterances under each variant; ratios against `default`."""
    chosen = [u for u in utterances if u.wake][:count]
    if not chosen:
        return {}
    out: dict = {}
    for name, env in VARIANTS.items():
        out[name] = measure_variant(chosen, run_dir, name, env, progress=progress)
    base = out["default"].get("speech_end_to_first_token", {}).get("p50")
    for result in out.values():
        p50 = result.get("speech_end_to_first_token", {}).get("p50")
        result["p50_ratio_to_default"] = round(p50 / base, 3) if base and p50 else None
    return out
