"""Word error rate for the bench: text normalisation and word-level Levenshtein distance.

Both the reference and the hypothesis go through the same `normalize()`, so "Set a timer
for 5 minutes." and "set a timer for five minutes" count as identical: lowercase, digits as
spoken words ("5" -> "five", "42" -> "forty two", "7:30" -> "seven thirty", "3.5" -> "three
point five", "50%" -> "fifty percent", "1st" -> "first"), hyphens as spaces, other punctuation
removed (apostrophes join: "what's" -> "whats"), whitespace collapsed.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
         " sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}


def number_words(n: int) -> list[str]:
    """Spoken English words for a non-negative integer (no "and"): 105 -> one hundred five."""
    if n < 0:
        return ["minus", *number_words(-n)]
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        tens, ones = divmod(n, 10)
        return [_TENS[tens]] + ([_ONES[ones]] if ones else [])
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return number_words(head) + [name] + (number_words(rest) if rest else [])
    raise AssertionError("unreachable")


def _ordinal(words: list[str]) -> list[str]:
    last = words[-1]
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last = last + "th"
    return words[:-1] + [last]


def _digits_to_words(n_text: str) -> list[str]:
    if len(n_text) > 12:  # a long digit string (a phone number, a code): read digit by digit
        return [_ONES[int(d)] for d in n_text]
    return number_words(int(n_text))


_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_DECIMAL = re.compile(r"\b(\d+)\.(\d+)\b")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_THOUSANDS = re.compile(r"\b(\d{1,3}(?:,\d{3})+)\b")
_NUMBER = re.compile(r"\d+")


def _time_words(m: re.Match) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes == 0:
        return " ".join(number_words(hours)) + " o'clock"
    tail = ["oh", *number_words(minutes)] if minutes < 10 else number_words(minutes)
    return " ".join(number_words(hours) + tail)


def normalize(text: str | None) -> list[str]:
    """Words of `text`, lowercased, numbers spoken, punctuation removed."""
    if not text:
        return []
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'").replace("%", " percent ").replace("&", " and ")
    text = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _TIME.sub(_time_words, text)
    text = _DECIMAL.sub(lambda m: " ".join(_digits_to_words(m.group(1)) + ["point"]
                                           + [_ONES[int(d)] for d in m.group(2)]), text)
    text = _ORDINAL.sub(lambda m: " " + " ".join(_ordinal(_digits_to_words(m.group(1)))) + " ", text)
    text = _NUMBER.sub(lambda m: " " + " ".join(_digits_to_words(m.group(0))) + " ", text)
    text = text.replace("'", "")
    text = re.sub(r"[^\w\s]|_", " ", text)
    return text.split()


def _distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over words (substitution, insertion, deletion all cost 1)."""
    if not ref:
        return len(hyp)
    if not hyp:
        return len(ref)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(substitutions + insertions + deletions, number of reference words) after normalisation."""
    ref_words, hyp_words = normalize(ref), normalize(hyp)
    return _distance(ref_words, hyp_words), len(ref_words)


def wer(pairs: Iterable[tuple[str, str]]) -> float:
    """Corpus WER: total errors / total reference words over (reference, hypothesis) pairs.

    NaN when there are no reference words at all (nothing to measure)."""
    errors = words = 0
    for ref, hyp in pairs:
        e, n = word_errors(ref, hyp)
        errors += e
        words += n
    return errors / words if words else float("nan")
