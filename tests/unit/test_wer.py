"""The bench's hearing figures: WER with Whisper's English normaliser, first word, wake-phrase leaks, loops."""

from __future__ import annotations

import math

import pytest

from bench.wer import judge, normalize, summarize, summarize_by, top_errors, wer, word_errors


def test_wer_identical_after_normalisation():
    assert wer([("Set a timer for five minutes.", "set a timer for 5 minutes")]) == 0.0
    assert normalize("What's the TIME,  now?") == ["what", "is", "the", "time", "now"]
    assert word_errors("Hello, world!", "hello world") == (0, 2)
    assert word_errors("what is the date today", "What's the date today?") == (0, 5)
    assert word_errors("who wrote Romeo and Juliet", "Who wrote Romeo & Juliet?") == (0, 5)
    assert word_errors("twenty-one", "21") == (0, 1)
    assert word_errors("um, what time is it", "what time is it") == (0, 4)  # fillers


def test_wer_counts_substitutions_insertions_deletions():
    assert word_errors("turn on lights", "turn off lights") == (1, 3)
    assert word_errors("what time is it", "what time is it now") == (1, 4)
    assert word_errors("what time is it", "what is it") == (1, 4)
    assert word_errors("a b c", "") == (3, 3)
    assert word_errors("", "a b") == (2, 0)
    assert wer([("a b c d", "a b c d"), ("e f", "e")]) == pytest.approx(1 / 6)
    assert math.isnan(wer([]))


def test_a_wake_phrase_leak_is_an_error_and_a_first_word_miss():
    heard = judge("set a timer for five minutes", "This, set a timer for 5 minutes.")
    assert (heard.errors, heard.leak, heard.first_word_ok, heard.loop) == (1, 1, False, False)
    heard = judge("what time is it", "Jarvis, what time is it?")
    assert (heard.leak, heard.first_word_ok) == (1, False)


def test_a_lost_or_misheard_first_word():
    assert not judge("how are you today", "I'll have you today.").first_word_ok
    assert judge("how are you today", "Who are you today?").leak == 0  # a substitution, not an extra word
    assert not judge("how are you today", "are you today").first_word_ok
    assert judge("how are you today", "How are you today?").first_word_ok
    assert judge("what time is it", "What's the time?").first_word_ok  # "what is the time": same first word
    assert not judge("what time is it", "").first_word_ok


def test_repetition_loops_are_counted():
    six = " ".join(["Tell me something about the moon."] * 6)
    heard = judge("tell me something about the moon", six)
    assert heard.loop and heard.errors == 30
    assert judge("what time is it", "What time is it? What time is it?").loop
    assert judge("what time is it", "Jarvis Jarvis Jarvis what time is it").loop
    assert not judge("what time is it", "What time is it?").loop
    # a request that repeats itself is not a loop when the reference says it too
    assert not judge("no no no stop", "No, no, no, stop.").loop


def test_summaries_per_group():
    rows = [("clean", "what time is it", "What time is it?"),
            ("room", "set a timer for five minutes", "This, set a timer for 5 minutes."),
            ("room", "what time is it", "What time is it? What time is it? What time is it?")]
    by = summarize_by(rows)
    assert list(by) == ["clean", "room"]
    assert by["clean"] == {"wer": 0.0, "files": 1, "ref_words": 4, "first_word_errors": 0,
                           "first_word_error_rate": 0.0, "leaks": 0, "loops": 0}
    assert by["room"]["wer"] == pytest.approx((1 + 8) / 10, abs=1e-4)
    assert (by["room"]["first_word_errors"], by["room"]["leaks"], by["room"]["loops"]) == (1, 1, 1)
    assert summarize([])["wer"] is None
    assert top_errors([(r, h) for _, r, h in rows])[0][2] == 1


def test_the_bench_reports_stt_per_voice_condition_and_pass():
    from bench.wer import stt_summary

    def rec(voice, condition, n, ref, hyp, detected=True, wake=True):
        return {"voice": voice, "condition": condition, "pass": n, "transcript_ref": ref, "transcript": hyp,
                "wake_detected": detected, "wake_expected": wake}

    records = [rec("flite:slt", "clean", 1, "what time is it", "What time is it?"),
               rec("flite:slt", "room", 2, "what time is it", "What time is it? What time is it?"),
               rec("piper:joe", "clean", 1, "set a timer for five minutes", "This, set a timer for 5 minutes."),
               rec("piper:joe", "clean", 1, "what time is it", None, detected=False),  # never heard: not counted
               rec("flite:kal", "clean", 1, "", "hello", wake=False)]
    s = stt_summary(records)
    assert s["n"] == 3 and s["wer"] == pytest.approx(5 / 14, abs=1e-4)
    assert (s["first_word_errors"], s["leaks"], s["loops"]) == (1, 1, 1)
    assert s["by_condition"]["room"]["loops"] == 1 and s["by_condition"]["clean"]["wer"] == pytest.approx(1 / 10)
    assert s["by_voice"]["piper:joe"]["leaks"] == 1 and set(s["by_pass"]) == {"1", "2"}
    assert s["top_errors"][0]["count"] == 1
