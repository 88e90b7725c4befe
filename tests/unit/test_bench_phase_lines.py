"""The lines `pipeline bench` prints as each phase ends (bench/phase_lines.py), on records shaped as the bench's."""

from __future__ import annotations

import copy

from bench import phase_lines
from bench.analysis import join_baseline, join_floor
from bench.resources import summarize

HEADS = [400.0, 500.0, 600.0, 700.0]  # speech end -> first token of the four answered requests
REFS = ["what time is it", "how many legs does a spider have", "set a timer for five minutes", "tell me a joke"]
HEARD = ["What time is it?", "How many links on the spy.com?", "Set a timer for 5 minutes.", "Tell me a joke."]


def _record(i: int, wav: str, *, wake: bool = True, detected: bool = True, pass_no: int = 0) -> dict:
    record = {"wav": wav, "kind": "question", "voice": "flite:kal", "voice_id": "flite-kal", "pass": pass_no,
              "offset_s": 2.0 + 6 * i, "duration_s": 4.3, "wake_expected": wake, "wake_detected": detected,
              "extra_wakes": 0, "transcript_ref": REFS[i] if wake else "", "transcript": None, "route": None,
              "degraded": None, "response": None, "speaker_heard": None, "condition": "clean", "vigil": {}}
    if wake and detected:
        head = HEADS[i]
        record.update(transcript=HEARD[i], route="llm", degraded=False, speaker_heard="kal" if i < 3 else "unknown")
        record["vigil"] = {"speech_end_to_first_token": head, "wake_to_first_token": head + 1500.0,
                           "speech_end_to_transcript": head - 80.0, "transcript_to_first_token": 80.0,
                           "wake_to_speech_end": 1500.0, "request_speech": 1000.0 + 100 * i,
                           "speech_end_to_endpoint": head - 400.0, "stt_compute": 300.0}
    return record


def _records() -> list[dict]:
    """Four answered requests, one missed wake, one negative with a false wake, as utterance_records makes them."""
    records = [_record(i, f"/c/req{i}.wav") for i in range(4)]
    records.append(_record(0, "/c/missed.wav", detected=False))
    records.append(_record(0, "/c/noise.wav", wake=False, detected=True))
    return records


def test_vigil_line_has_the_replays_figures():
    extra = {"unmatched": 1, "drops": {"audio": 3, "stt_out": 1}, "restarts": 0}
    first, second = phase_lines.vigil(_records(), extra, {"flite:kal": "kal"}, budget_ms=1500.0)
    assert first.startswith("vigil      5 requests, 4 answered")
    assert "speech end → first token p50 550 ms p95 685 ms" in first  # numpy's linear percentiles of HEADS
    # WER over the four heard requests (the missed wake is not heard): "how many links on the spy.com" is 5 errors
    # of its 7 words; the rest are right after normalisation ("five" = "5", punctuation, case): 5 / 21 words
    assert "WER 0.238" in first and "0 loops" in first and "0 first-word errors" in first
    # wake: 4 of 5 detected; false = 1 unmatched session + 1 negative that woke
    assert "wake 4/5, 2 false" in second
    # speaker: kal named right three times, the fourth kal request heard as "unknown" -> 3 of 4
    assert "speaker 75 % of 4" in second
    # budget: p95 of wake->first token minus request speech = HEADS + 1500 - (1000 + 100 i) -> 900, 900, 900, 900
    assert "budget p95 900 ms of 1500 ms" in second
    assert "4 drops" in second and "0 restarts" in second


def test_baseline_and_floor_lines_join_by_file_and_count_each_file_once():
    records = _records()
    passes = records + [dict(copy.deepcopy(r), **{"pass": 1}) for r in records]  # a second replay pass
    baseline = [{"wav": f"/c/req{i}.wav", "spans_ms": {"speech_end_to_first_token": 2 * h},
                 "stages_ms": {"stt": 500.0, "llm_first_token": 90.0}} for i, h in enumerate(HEADS)]
    baseline.append({"wav": "/c/missed.wav", "error": "RuntimeError: boom"})
    join_baseline(passes, baseline)
    assert passes[0]["baseline"] == {"speech_end_to_first_token": 800.0, "stt_compute": 500.0,
                                     "llm_first_token_compute": 90.0}
    line = phase_lines.baseline(passes, baseline)
    assert line == ("baseline   speech end → first token p50 1100 ms p95 1370 ms (n 4) · "
                    "baseline ÷ Vigil 2.0× at p50, 1.96× at p95 · 1 error")  # Vigil's p95 over both passes: 700

    floor = [{"wav": f"/c/req{i}.wav", "stt_ms": 250.0, "llm_first_token_ms": 50.0 + 10 * i} for i in range(4)]
    join_floor(passes, floor)
    line = phase_lines.floor(passes, floor)
    # floor 300..330 per file; overhead = HEADS - floor = 100, 190, 280, 370 (each twice: two passes)
    assert line == ("floor      STT + first token alone p50 315 ms p95 330 ms · "
                    "Vigil's overhead over it p50 235 ms p95 370 ms")


def test_idle_load_and_variant_lines():
    samples = [{"t": float(t), "cpu": {"stt": 2.0, "wakeword": 4.0}, "rss_mb": {"stt": 400.0, "wakeword": 190.5}}
               for t in range(10)]
    idle = {**summarize(samples), "false_wakes": 1, "drops": {}}
    assert phase_lines.idle(idle) == ("idle       CPU 6.0 % of one core · RSS 590 MB in 2 processes · "
                                      "1 false wake · 0 drops · 9 s measured")
    load = {"requests": 9, "answered": 8, "cancelled": 1, "exit_code": 0, "worker_restarts": 2, "drops": {"audio": 1},
            "speech_end_to_first_token": {"p50": 592.2, "p95": 637.1, "p99": 648.3, "n": 8}}
    assert phase_lines.load(load) == ("load       9 requests back to back, 8 answered, 1 cancelled · speech end → "
                                      "first token p50 592 ms p95 637 ms · exit 0 · 2 restarts · 1 drop")
    variants = {"default": {"utterances": 4, "answered": 4, "p50_ratio_to_default": 1.0,
                            "speech_end_to_first_token": {"p50": 614.2, "p95": 2379.3, "n": 4}},
                "verify_off": {"utterances": 4, "answered": 3, "p50_ratio_to_default": 1.014,
                               "speech_end_to_first_token": {"p50": 622.8, "p95": 679.1, "n": 3}},
                "speaker_slow": {"env": {}, "error": "exit 1", "stderr_tail": "..."}}
    assert phase_lines.variants(variants) == ("variants   default p50 614 ms, 4/4 answered · verify_off p50 623 ms "
                                              "(1.014×), 3/4 answered · speaker_slow failed (exit 1)")


def test_wake_and_endpoint_lines():
    detail = {"default_config": "oww@0.005+onset+forced",
              "conditions": {"clean": {"detected": 5, "total": 6}, "pink": {"detected": 4, "total": 6},
                             "room": {"detected": 0, "total": 0}},
              "false_wakes_by_set": {"ordinary": {"count": 0, "hours": 0.0087},
                                     "near_miss": {"count": 1, "hours": 0.0078},
                                     "ordinary:room": {"count": 0, "hours": 0.0}},  # no room set in this corpus
              "phrase_end_to_wake_ms": {"p50": 503.2, "p95": 1045.6, "n": 9}}
    assert phase_lines.wake(detail) == ("wake       oww@0.005+onset+forced · clean 5/6 pink 4/6 · false wakes "
                                        "ordinary 0 near_miss 1 · phrase end → wake p50 503 ms p95 1046 ms")
    assert phase_lines.wake({"eval_error": "OSError: no corpus"}) == "wake       evaluation failed: OSError: no corpus"

    hesitant = [dict(_record(i, f"/c/pause{i}.wav"), pause_s=[1.0, 1.8], cut_off=i == 0) for i in range(2)]
    hesitant[1]["vigil"]["speech_end_to_first_token"] = 1250.0  # waited through the pause
    lines = phase_lines.endpoint({"turn": _records() + hesitant, "silence": []})
    # complete requests: HEADS (p50 550); hesitations: 1 of 2 cut off, the whole one answered 700 ms later
    assert lines[0] == ("endpoint   turn: speech end → first token p50 550 ms p95 685 ms (n 4) · "
                        "hesitations cut off 1/2 · extra wait on a hesitation 700 ms")
    assert lines[1] == "endpoint   silence: speech end → first token p50 n/a p95 n/a (n 0) · hesitations cut off 0/0"


def test_endpoint_sweep_line():
    curve = [{"key": "turn_min_pause_ms", "value": 50, "p50": 360.4, "p95": 512.0, "n": 9, "cut_offs": 1,
              "hesitations": 4},
             {"key": "turn_sure_ending", "value": 0.5, "p50": 455.0, "p95": 520.6, "n": 9, "cut_offs": 0,
              "hesitations": 4}]
    assert phase_lines.sweep(curve) == ("sweep      turn_min_pause_ms 50: p50 360 ms p95 512 ms, cut off 1/4 · "
                                        "turn_sure_ending 0.5: p50 455 ms p95 521 ms, cut off 0/4")
