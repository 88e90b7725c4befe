"""The whisper wake verifier (workers/wake_verify.py) and the offline wake evaluation (bench/wake_eval.py).

Real components: whisper tiny.en through pywhispercpp, openWakeWord, espeak-ng/flite speech.
"""

from __future__ import annotations


import numpy as np
import pytest

from bench.synth import pink_noise, speech_bounds, tts_samples
from bench.speech import tiny_wake_corpus
from engines.wake.text_verify import (
    WINDOW_AFTER_S, WINDOW_BEFORE_S, WakeVerifier, find_wake, jarvis_score, window_samples,
)

RATE = 16_000


@pytest.fixture(scope="module")
def engine(models):
    from engines.stt.whispercpp import WhisperEngine

    return WhisperEngine(models.whisper, n_threads=2)


@pytest.fixture(scope="module")
def verifier(engine):
    return WakeVerifier(engine)


def proposal_window(text: str, engine_name: str, voice: str) -> np.ndarray:
    """What the wake worker would hand over: the audio up to WINDOW_AFTER_S past the end of
    "jarvis" (where openWakeWord proposes), at most WINDOW_BEFORE_S + WINDOW_AFTER_S long."""
    lead = np.zeros(RATE // 2, dtype=np.int16)
    speech = np.concatenate([lead, tts_samples(text, engine_name, voice), np.zeros(RATE, dtype=np.int16)])
    if text.lower().startswith("hey jarvis"):
        _, end = speech_bounds(np.concatenate([lead, tts_samples("Hey Jarvis", engine_name, voice)]))
    else:  # a negative: the proposal lands somewhere in the phrase; take its middle
        start, stop = speech_bounds(speech)
        end = (start + stop) / 2 + 0.4
    stop_i = int((end + WINDOW_AFTER_S) * RATE)
    return speech[max(0, stop_i - window_samples()):stop_i]


def test_window_constants():
    assert WINDOW_BEFORE_S >= 1.5 and 0.1 <= WINDOW_AFTER_S <= 0.5
    assert window_samples() == int(round((WINDOW_BEFORE_S + WINDOW_AFTER_S) * RATE))


def test_find_wake_needs_hey_directly_before_jarvis():
    assert find_wake([(" Hey", 0.9), (" Jarvis", 0.99), (".", 0.6)]) == (0, 2)
    assert find_wake([(" Hey", 0.9), (",", 0.5), (" Jar", 0.6), ("vis", 0.9)]) == (0, 4)
    assert find_wake([(" Ask", 0.5), (" Mr", 0.5), (" Jarvis", 0.9)]) is None
    assert find_wake([(" Hey", 0.9), (" Travis", 0.7)]) is None
    assert find_wake([(" Hey", 0.9), (" jars", 0.7), (" of", 0.7), (" honey", 0.7)]) is None
    assert jarvis_score([(" I", 0.2), (" hate", 0.8), (" Jarvis", 0.5)]) == pytest.approx(0.5)
    assert jarvis_score([(" I'm", 0.2), (" all", 0.8), (" stars", 0.5)]) == 0.0


@pytest.mark.parametrize("engine_name,voice", [("espeak-ng", "en-us"), ("flite", "kal")])
def test_accepts_hey_jarvis(verifier, engine_name, voice):
    v = verifier.check(proposal_window("Hey Jarvis, what time is it", engine_name, voice))
    assert v.accepted, v
    assert 0.0 < v.score <= 1.0
    assert "jarvis" in v.heard.lower()
    assert v.compute_ms > 0


@pytest.mark.parametrize("text,engine_name,voice", [
    ("I bought jars of honey", "espeak-ng", "en-us"),
    ("I bought jars of honey", "flite", "kal"),
    ("hey marvin, what is the weather", "flite", "slt"),
    ("hey marvin, what is the weather", "espeak-ng", "en-us"),
])
def test_rejects_near_misses(verifier, text, engine_name, voice):
    v = verifier.check(proposal_window(text, engine_name, voice))
    assert not v.accepted, v


def test_rejects_noise(verifier):
    v = verifier.check(pink_noise(WINDOW_BEFORE_S + WINDOW_AFTER_S, rms=2000.0, seed=3))
    assert not v.accepted and v.score == 0.0


@pytest.mark.parametrize("n", [0, 1, 800, 4000])
def test_short_or_silent_clip_is_a_clean_reject(verifier, n):
    v = verifier.check(np.zeros(n, dtype=np.int16))
    assert v.accepted is False and v.score == 0.0 and v.heard == ""
    v = verifier.check(np.full(min(n, 3000), 500, dtype=np.int16))  # too short to hold the phrase
    assert v.accepted is False


def test_request_after_verify_does_not_inherit_the_prompt(engine, verifier):
    """Decode params persist in pywhispercpp: the verifier's prompt must not leak into STT."""
    clip = np.concatenate([np.zeros(8000, np.int16), tts_samples("hey jarvis", "flite", "kal"),
                           np.zeros(4000, np.int16)])
    before = engine.transcribe(clip)
    prompted, _ = engine.transcribe_tokens(clip, initial_prompt="Hey Jarvis.")
    assert prompted != before  # the prompt changes this clip's text, so a leak would show
    verifier.check(clip)
    assert engine.transcribe(clip) == before


def test_wake_eval_on_atiny_wake_corpus(tmp_path, models):
    from bench.wake_eval import run_wake_eval, summary_table

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    tiny_wake_corpus(corpus)
    report = run_wake_eval(corpus, tmp_path / "out", ["oww@0.5", "oww@0.1+verify", "nosuchengine"],
                           whisper_model=models.whisper)
    assert set(report) >= {"corpus", "configs", "skipped", "verifier"}
    assert "nosuchengine" in report["skipped"]
    two = report["configs"]["oww@0.1+verify"]
    one = report["configs"]["oww@0.5"]
    for r in (one, two):
        assert r["conditions"]["clean"]["total"] == 2
        assert r["conditions"]["pink"]["total"] == 0
        assert set(r["false_wakes"]) == {"ordinary", "noise", "near_miss", "ordinary:room", "near_miss:room"}
        assert r["false_wakes"]["near_miss"]["hours"] > 0 and r["false_wakes"]["noise"]["hours"] > 0
        assert r["false_wakes"]["noise"]["count"] == 0
        assert r["proposer_cpu_ms_per_audio_s"] > 0
        assert r["double_wakes"] == 0
    # the two-stage default hears both voices, and costs a whisper pass per proposal
    assert two["conditions"]["clean"]["detected"] == 2
    assert two["false_wakes"]["near_miss"]["count"] == 0
    assert two["verify_ms"]["n"] == two["proposals"] >= 2
    assert two["delay_ms"]["n"] == 2 and two["delay_ms"]["p50"] > 0
    assert two["heldout"]["clean"]["total"] == 1
    assert (tmp_path / "out" / "wake_eval.json").is_file()
    assert "oww@0.1+verify" in summary_table(report)


def test_report_md_shows_the_wake_table():
    """report.md renders the wake evaluation table; the pipeline replay's wake keys stay as they were."""
    from bench.render import render_markdown

    cond = {"clean": {"detected": 59, "total": 60, "rate": 0.983}, "pink": {"detected": 50, "total": 60, "rate": 0.83},
            "babble": {"detected": 41, "total": 60, "rate": 0.68}}
    fw = {"ordinary": {"count": 0, "hours": 0.34, "per_hour": 0.0},
          "noise": {"count": 1, "hours": 0.17, "per_hour": 6.0},
          "near_miss": {"count": 7, "hours": 0.12, "per_hour": 58.3}}
    row = {"conditions": cond, "false_wakes": fw, "heldout": cond, "double_wakes": 2,
           "delay_ms": {"p50": 812.0, "p95": 1304.0, "n": 150}, "proposer_cpu_ms_per_audio_s": 41.5,
           "verify_ms": {"p50": 520.0, "p95": 900.0, "n": 200}}
    report = {"wake": {"detected": 36, "missed": 4, "false_wakes": 1, "negatives_hours": 0.25,
                       "default_config": "oww@0.1+verify", "by_engine": {"oww@0.1+verify": row},
                       "skipped": {"porcupine": "no library"},
                       "corpus": {"voices": ["a", "b"], "minutes": {"ordinary": 20.5}}}}
    md = render_markdown(report, [])
    assert "`oww@0.1+verify` | 59/60 | 50/60 | 41/60" in md
    assert "812 / 1304" in md and "520 / 900" in md
    assert "`porcupine` | skipped: no library" in md
    assert "| detected | 36 |" in md  # the pipeline replay's numbers are still there
