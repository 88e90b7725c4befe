"""How the router hears a transcript: the readings of it that the skills' phrasings are tried on.

Speech recognition does not write what a person meant word for word. Like Home Assistant's
intent matching, Vigil tolerates what carries no meaning and stays exact about what does:

* spelling: `normalize` — case, punctuation, contractions, number words ("five" → "5");
* filler words anywhere ("um", "uh", "just", "please") and a stuttered word ("what what time");
* polite wrappers at either end ("hey, can you tell me ... please", "do you know ...");
* the wake phrase leaking into the request: "Jarvis" heard at the start, or a short clause of
  its sound-alikes before the first comma or full stop ("This, set a timer ...", "Hey. What ...");
* sound-alikes of a skill's own words, declared by that skill (`SkillSpec.hears`: the date
  skill hears "to date" as "today"), applied only while that skill's phrasings are tried.

What stays exact: a reading must match a skill's phrasing *as a whole*, so one extra content
word ("what time is it in Tokyo", "I have a date today") leaves the request to the LLM. A wrong
skill answer is worse than the LLM's: nothing here guesses by similarity scores.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

from skills.text import normalize

_PREFIXES = [
    "hey jarvis", "jarvis", "hey vigil", "vigil", "ok vigil", "hey", "hi", "hello", "ok", "so", "um", "uh",
    "er", "erm", "hmm", "well", "and", "please", "excuse me", "sorry", "i am sorry", "pardon", "pardon me",
    "quick question", "can you please", "could you please", "would you please", "can you", "could you",
    "would you", "will you", "would you mind", "i would like to know", "i want to know", "i wonder",
    "i was wondering", "do you know", "tell me", "let me know", "can i ask", "may i ask", "please tell me",
]
_SUFFIXES = [
    "please", "thanks", "thank you", "for me", "right now", "now", "jarvis", "vigil",
    "if you can", "if you could", "please and thank you",
]
_PREFIX_RE = re.compile(r"^(?:" + "|".join(sorted(map(re.escape, _PREFIXES), key=len, reverse=True)) + r")\b ?")
_SUFFIX_RE = re.compile(r" ?\b(?:" + "|".join(sorted(map(re.escape, _SUFFIXES), key=len, reverse=True)) + r")$")

# Words that carry no meaning for a skill wherever they stand (hesitations, softeners).
FILLERS = frozenset({"um", "umm", "uh", "uhm", "er", "erm", "hmm", "mm", "ah", "oh", "just", "actually", "please",
                     "kindly", "quickly", "maybe"})

# The wake phrase ("hey jarvis") as speech recognition writes it when its tail leaks into the
# request. The names are dropped at the start of any request; the common words only when they
# stand alone as a clause ("This, set a timer"), which is how a leak is written.
WAKE_NAMES = frozenset({"jarvis", "jervis", "javis", "travis", "jarvi", "vigil"})
WAKE_SOUNDS = WAKE_NAMES | {"hey", "hi", "hay", "a", "this", "is", "his", "yes", "service", "davis", "harvest",
                            "jars", "of", "ok", "so", "well", "um", "uh"}
_CLAUSE = re.compile(r"^\s*([^,.!?;:]+)[,.!?;:]+\s*(.+)$", re.DOTALL)
_MAX_LEAK_WORDS = 3


def strip_politeness(text: str) -> str:
    """Peel wake-word remnants, fillers and polite wrappers off both ends (repeatedly)."""
    prev = None
    while prev != text:
        prev = text
        text = _PREFIX_RE.sub("", text, count=1).strip()
        text = _SUFFIX_RE.sub("", text, count=1).strip()
    return text


def _words(text: str) -> str:
    """normalize, then drop fillers, stutters and a leading wake name, then the polite wrappers."""
    words: list[str] = []
    for word in normalize(text).split():
        if word not in FILLERS and (not words or words[-1] != word):
            words.append(word)
    while words and words[0] in WAKE_NAMES:
        words.pop(0)
    return strip_politeness(" ".join(words))


def without_leaked_wake(text: str) -> str | None:
    """The raw transcript without leading wake-phrase clauses ("This, ...", "Hey. Jarvis, ..."); None if none."""
    rest, cut = text, False
    while True:
        m = _CLAUSE.match(rest)
        if m is None:
            break
        head = normalize(m.group(1)).split()
        if not head or len(head) > _MAX_LEAK_WORDS or not set(head) <= WAKE_SOUNDS:
            break
        rest, cut = m.group(2), True
    return rest if cut else None


def readings(text: str) -> list[str]:
    """The normalised readings of a transcript to try, most literal first, without repeats or blanks."""
    out: list[str] = []
    for candidate in (text, without_leaked_wake(text or "")):
        if candidate is None:
            continue
        reading = _words(candidate)
        if reading and reading not in out:
            out.append(reading)
    return out


def rehear(reading: str, hears: Mapping[str, str]) -> str:
    """`reading` with a skill's sound-alikes replaced by what they stand for (whole words only)."""
    if not hears:
        return reading
    return _alternation(frozenset(hears)).sub(lambda m: hears[m.group(0)], reading)


@functools.lru_cache(maxsize=64)
def _alternation(words: frozenset[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, words), key=len, reverse=True)) + r")\b")


def whole(*patterns: str) -> Callable[[str], dict[str, Any] | None]:
    """A skill's `match` for phrasings without arguments: {} when a pattern matches the whole reading."""
    compiled = [re.compile(p) for p in patterns]

    def match(reading: str) -> dict[str, Any] | None:
        return {} if any(p.fullmatch(reading) for p in compiled) else None

    return match
