"""The decode's loop guards (engines/stt/whispercpp.py) as plain functions: no model needed."""

from __future__ import annotations

from engines.stt.whispercpp import (
    MAX_TOKENS, Decoding, compression_ratio, cut_repetition, loop_reason, repeated_ngram, sentence_end_p, words_of,
)


def test_the_sentence_end_probability_is_the_closing_tokens():
    assert sentence_end_p([(" What", 0.9), (" is", 0.9), (" the", 0.9), (" capital", 0.87), ("?", 0.2)]) == 0.2
    assert sentence_end_p([(" Juliet", 0.98), ('."', 0.6)]) == 0.6  # a quote after the full stop
    assert sentence_end_p([(" Set", 0.9), (" timer", 0.8), (" minutes", 0.98)]) == 1.0  # no end written: no doubt
    assert sentence_end_p([(" Stop", 0.9), ("!", 0.7)]) == 0.7 and sentence_end_p([]) == 1.0


def test_repeated_ngrams():
    assert repeated_ngram(words_of("Jarvis Jarvis Jarvis")) == ("jarvis",)
    assert repeated_ngram(words_of("What time is it? What time is it?")) == ("what", "time", "is", "it")
    assert repeated_ngram(words_of("very very good")) is None  # a word twice is speech
    assert repeated_ngram(words_of("set a timer for five minutes")) is None
    assert repeated_ngram([]) is None


def test_loop_reasons():
    six = " ".join(["Tell me something about the moon."] * 6)
    assert loop_reason(six, 42, 40) == "repeat"
    assert compression_ratio(six) > 2.4
    assert loop_reason("What time is it?", 5, 40) == ""
    assert loop_reason("a b c d e f g h", 40, 40) == "budget"  # ran into its budget: never ended by itself
    assert loop_reason("", 0, 16) == ""


def test_cut_repetition_keeps_what_the_loop_meant():
    assert cut_repetition("What time is it? What time is it? What time") == "What time is it?"
    assert cut_repetition("Jarvis Jarvis Jarvis set a timer") == "Jarvis set a timer"
    assert cut_repetition("Tell me something about the moon. Tell me something about the moon.") == \
        "Tell me something about the moon."
    assert cut_repetition("set a timer for five minutes") == "set a timer for five minutes"


def test_the_token_budget_follows_the_audio():
    d = Decoding(tokens_per_s=8.0, min_tokens=16)
    assert d.token_budget(16000) == 24
    assert d.token_budget(3 * 16000) == 40
    assert d.token_budget(60 * 16000) == MAX_TOKENS
