"""Text helpers for the skill router: normalise whisper transcripts, parse and speak durations.

Whisper writes "Set a timer for 5 minutes.", "set a five-minute timer", "What's the time?",
"1 minute, 30 seconds" or "5min". `normalize` turns all of those into lower-case words and
digits separated by single spaces ("set a timer for 5 minutes", "set a 5 minute timer",
"what is the time"), so the router's patterns stay few and exact.
"""

from __future__ import annotations

import re
import unicodedata

_ONES = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}

# Whole-word rewrites after punctuation is gone (apostrophes already expanded where possible).
_WORDS = {
    "whats": "what is", "thats": "that is", "hows": "how is", "wheres": "where is", "whens": "when is",
    "okay": "ok", "alright": "all right", "todays": "today", "tomorrows": "tomorrow",
    "yesterdays": "yesterday", "im": "i am", "id": "i would", "youre": "you are", "cant": "cannot",
    "dont": "do not", "doesnt": "does not", "isnt": "is not", "arent": "are not", "ur": "your",
    "u": "you", "r": "are", "pls": "please", "plz": "please", "timmer": "timer",
}

_CONTRACTIONS = [
    (re.compile(r"\b(what|that|it|how|there|here|who|where|when|everything|everythings|time)'s\b"), r"\1 is"),
    (re.compile(r"\blet's\b"), "let us"),
    (re.compile(r"\bcan't\b"), "cannot"),
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'m\b"), " am"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"'d\b"), " would"),
    (re.compile(r"'s\b"), ""),  # possessive: "today's date" → "today date"
]

_TOKEN = re.compile(r"\d+(?:\.\d+)?|[a-z]+")


def _small_number(words: list[str], i: int) -> tuple[int, int] | None:
    """0..99 from words[i:]: 'seven', 'fifteen', 'forty', 'forty two'."""
    if i >= len(words):
        return None
    w = words[i]
    if w in _TENS:
        if i + 1 < len(words) and 1 <= _ONES.get(words[i + 1], 0) <= 9:
            return _TENS[w] + _ONES[words[i + 1]], i + 2
        return _TENS[w], i + 1
    if w in _ONES:
        return _ONES[w], i + 1
    return None


def _number_at(words: list[str], i: int) -> tuple[int, int] | None:
    """A spelled-out number starting at words[i] (up to 999), with the index after it."""
    nxt = words[i + 1] if i + 1 < len(words) else ""
    if nxt == "hundred" and (words[i] == "a" or 1 <= _ONES.get(words[i], 0) <= 9):
        value, j = (1 if words[i] == "a" else _ONES[words[i]]) * 100, i + 2
        k = j + 1 if j < len(words) and words[j] == "and" else j
        rest = _small_number(words, k)
        if rest is not None:
            value, j = value + rest[0], rest[1]
        return value, j
    return _small_number(words, i)


def _numbers_to_digits(words: list[str]) -> list[str]:
    """'twenty five' → '25', 'one hundred and five' → '105', 'a hundred' → '100'; other words kept."""
    out: list[str] = []
    i = 0
    while i < len(words):
        found = _number_at(words, i)
        if found is None:
            out.append(words[i])
            i += 1
        else:
            out.append(str(found[0]))
            i = found[1]
    return out


def normalize(text: str) -> str:
    """Lower-case words and digits, single-spaced, without punctuation or hyphens."""
    t = unicodedata.normalize("NFKC", text or "").lower()
    t = t.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    for pattern, repl in _CONTRACTIONS:
        t = pattern.sub(repl, t)
    t = t.replace("'", "")
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # 1,000 → 1000
    words: list[str] = []
    for token in _TOKEN.findall(t):
        words.extend(_WORDS.get(token, token).split())
    return " ".join(_numbers_to_digits(words))


_UNITS = {
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
}


def _number(word: str) -> float | None:
    try:
        return float(word)
    except ValueError:
        return None


def parse_duration(text: str | list[str]) -> float | None:
    """Seconds for a whole normalised duration phrase, or None if any word does not fit.

    Accepts "5 minutes", "1 minute 30 seconds", "1 minute and 30 seconds", "1.5 hours",
    "an hour and a half", "1 and a half minutes", "half an hour", "a quarter of an hour", "90 s".
    """
    words = text.split() if isinstance(text, str) else list(text)
    total, got, i, n = 0.0, False, 0, len(words)
    while i < n:
        w = words[i]
        if w == "and" and got:
            i += 1
            continue
        j = i
        if w == "half":  # half an hour, half a minute, half hour
            j += 1
            if j < n and words[j] in ("a", "an"):
                j += 1
            if j < n and words[j] in _UNITS:
                total += 0.5 * _UNITS[words[j]]
                got, i = True, j + 1
                continue
            return None
        if words[j] == "a" and j + 1 < n and words[j + 1] == "quarter":
            j += 1
        if words[j] == "quarter":  # (a) quarter (of) (an) hour
            j += 1
            if j < n and words[j] == "of":
                j += 1
            if j < n and words[j] in ("a", "an"):
                j += 1
            if j < n and words[j] in _UNITS:
                total += 0.25 * _UNITS[words[j]]
                got, i = True, j + 1
                continue
            return None
        if w in ("a", "an"):
            qty = 1.0
        else:
            qty = _number(w)
            if qty is None:
                return None
        j = i + 1
        if words[j:j + 3] == ["and", "a", "half"]:
            qty, j = qty + 0.5, j + 3
        if j >= n or words[j] not in _UNITS:
            return None
        unit = _UNITS[words[j]]
        j += 1
        if words[j:j + 3] == ["and", "a", "half"]:
            qty, j = qty + 0.5, j + 3
        total += qty * unit
        got, i = True, j
    return total if got else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def spoken_duration(seconds: float) -> str:
    """'5 minutes', '1 minute and 30 seconds', '2 hours and 5 minutes' (seconds dropped past an hour)."""
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        parts = [_plural(h, "hour")] + ([_plural(m, "minute")] if m else [])
    else:
        parts = ([_plural(m, "minute")] if m else []) + ([_plural(sec, "second")] if sec or not m else [])
    return " and ".join(parts)


def spoken_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def duration_label(seconds: float) -> str:
    """Adjective form for a timer's name: '5 minute', '1 minute 30 second', '1 hour 15 minute'."""
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    parts = []
    if h:
        parts.append(f"{h} hour")
    if m:
        parts.append(f"{m} minute")
    if sec or not parts:
        parts.append(f"{sec} second")
    return " ".join(parts)
