"""Deterministic intent router, tried before the LLM.

`route(text)` answers only what must be instant and exact — the current time, the date, timers,
system status, "what can you do" — and returns None for everything else, so the LLM answers.

How it avoids misfires: the transcript is normalised (skills.text.normalize), polite wrappers
are peeled off the ends ("hey, can you tell me ... please"), and what is left must match one of
the patterns below *as a whole* (re.fullmatch). Any extra content word makes it an ordinary
question for the LLM: "what time is it in Tokyo", "what is the date of Easter", "how much time
is left until Christmas", "help me find the toilets".

Decision — "what time does the museum close": NOT a time skill. The time skill answers only
"what time is it now"; questions about when something happens (opening hours, schedules,
events) go to the LLM, whose system prompt is where a kiosk operator puts venue facts. The
router would otherwise answer "It's 3:07 PM." to a question it did not understand.

A timer request whose duration cannot be parsed ("set a timer for the pasta") still routes to
the timer skill (args seconds=None), which asks "For how long?" — better than letting the LLM
pretend it set a timer.
"""

from __future__ import annotations

import re
from typing import Any

from skills.text import normalize, parse_duration
from skills.types import SkillCall

_PREFIXES = [
    "hey jarvis", "jarvis", "hey vigil", "vigil", "ok vigil", "hey", "hi", "hello", "ok", "so", "um", "uh",
    "er", "erm", "hmm", "well", "and", "please", "excuse me", "sorry", "quick question", "can you please",
    "could you please", "would you please", "can you", "could you", "would you", "will you",
    "would you mind", "i would like to know", "i want to know", "i wonder", "i was wondering",
    "do you know", "tell me", "let me know", "can i ask", "may i ask", "please tell me",
]
_SUFFIXES = [
    "please", "thanks", "thank you", "for me", "right now", "now", "jarvis", "vigil",
    "if you can", "if you could", "please and thank you",
]
_PREFIX_RE = re.compile(r"^(?:" + "|".join(sorted(map(re.escape, _PREFIXES), key=len, reverse=True)) + r")\b ?")
_SUFFIX_RE = re.compile(r" ?\b(?:" + "|".join(sorted(map(re.escape, _SUFFIXES), key=len, reverse=True)) + r")$")


def strip_politeness(text: str) -> str:
    """Peel wake-word remnants, fillers and polite wrappers off both ends (repeatedly)."""
    prev = None
    while prev != text:
        prev = text
        text = _PREFIX_RE.sub("", text, count=1).strip()
        text = _SUFFIX_RE.sub("", text, count=1).strip()
    return text


def _c(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


_DAYREF = r"(?:today|tomorrow|yesterday)"
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

# --- timers -------------------------------------------------------------------------------
_TIMER = r"(?:timer|countdown)"
_SET_VERB = (r"(?:set up|set|start up|start|create|make|put on|run|begin|add|i need|i want|give me|"
             r"i would like|let us set|let us start|go ahead and set)")
_ART = r"(?:me a new|me a|me an|a new|up a|up an|a|an|the|another|1|new)"
_LABEL = r"(?: (?:for|called|named) (?:the |my )?(?P<label>[a-z][a-z ]{0,40}))?"

_TIMER_SET = [
    # "set a timer for 5 minutes (for the eggs)", "timer for 5 minutes", "start a countdown of 10 seconds"
    _c(rf"(?:{_SET_VERB} )?(?:{_ART} )?{_TIMER}(?: (?:for|of|to|at|on))?(?: (?P<d>.+?))??{_LABEL}"),
    # "set a 5 minute timer (for the eggs)", "5 minute timer", "a 10 second countdown"
    _c(rf"(?:{_SET_VERB} )?(?:{_ART} )?(?P<d>.+?) {_TIMER}{_LABEL}"),
]
_TIMER_CANCEL = _c(
    r"(?:cancel|stop|delete|remove|clear|end|kill|turn off|switch off|dismiss|abort|reset|never mind|forget)"
    r"(?P<all>(?: (?:the|my|that|this|all|of|both|every))*)(?: (?P<d>.+?))? (?P<noun>timers?|countdowns?)"
    r"(?: (?:for|of) (?P<d2>.+))?")
_TIMER_REMAINING = [
    _c(r"how (?:much|long)(?: more)?(?: time)?(?: is| do i have| have i got| do we have)? (?:left|remaining|to go)"
       rf"(?: on (?:the|my|that|this) (?:.+ )?{_TIMER})?"),
    _c(rf"how much longer(?: on (?:the|my|that) {_TIMER})?"),
    _c(rf"how long (?:until|till|before|is left on) (?:the|my|that) {_TIMER}"
       r"(?: (?:is done|goes off|rings|finishes|ends|is up|is finished))?"),
    _c(rf"(?:what is )?(?:the )?(?:time left|time remaining|remaining time)(?: on (?:the|my) {_TIMER})?"),
    _c(rf"what is left on (?:the|my) {_TIMER}"),
    _c(rf"(?:check|show|list)(?: the| my| all| all my| all the)? {_TIMER}s?"),
    _c(rf"{_TIMER}s? (?:status|check)"),
    _c(rf"(?:is|are) (?:the|my) {_TIMER}s? (?:still )?(?:running|going|on|set|active)"),
    _c(rf"(?:do i|do we) have (?:any|a) {_TIMER}s?(?: (?:running|set|going|on))?"),
    _c(rf"are there any {_TIMER}s?(?: (?:running|set|going|on))?"),
    _c(rf"what {_TIMER}s? (?:do i|do we) have(?: (?:running|set|going|on))?"),
]

# --- time ---------------------------------------------------------------------------------
_TIME = [
    _c(r"what time is it(?: here| currently| at the moment)?"),
    _c(r"what time it is(?: here)?"),
    _c(r"time is it"),
    _c(r"what is the (?:current |local |exact )?time(?: here| currently| at the moment)?"),
    _c(r"what is the time(?: here)?"),
    _c(r"(?:the )?(?:current |local |exact )?time"),
    _c(r"time check"),
    _c(r"what hour is it"),
    _c(r"(?:do you|have you) (?:have|got|know) the (?:current )?time"),
    _c(r"got the time"),
]

# --- date ---------------------------------------------------------------------------------
_DATE = [
    _c(rf"what(?: is)?(?: the)?(?: (?P<r1>{_DAYREF}))? (?P<what>date|day)(?: is it| was it| is| was)?"
       rf"(?: (?P<r2>{_DAYREF}))?"),
    _c(rf"what(?: is| was)? (?P<r1>{_DAYREF})"),
    _c(rf"(?:what|which) (?P<what>day) of the week is it(?: (?P<r2>{_DAYREF}))?"),
    _c(rf"what is (?P<r1>{_DAYREF}) (?P<what>date|day)"),
    _c(r"(?:the |current |today )?(?P<what>date)(?: today)?"),
    _c(r"what (?P<what>month|year) is it"),
    _c(r"what is the (?:current )?(?P<what>month|year)"),
    _c(r"(?:what is |the )?(?P<what>day) today"),
]
_IS_WEEKDAY = _c(rf"is (?:it|today)(?: (?P<r0>today))? (?P<wd>{'|'.join(_WEEKDAYS)})(?: today)?")

# --- status -------------------------------------------------------------------------------
_STATUS = [
    _c(r"are you (?:doing )?(?:ok|all right|working|running|alive|online|up|functioning|healthy|fine)"
       r"(?: properly| correctly| ok)?"),
    _c(r"is everything (?:ok|all right|working|fine)(?: with you)?"),
    _c(r"(?:(?:what is|check|show|give me|run|report|do) )?(?:the |your |a )?(?:system |systems |health |current )?"
       r"(?:status|status report|health|health check|diagnostic|diagnostics|system check|self test|self check)"),
    _c(r"how (?:is|are) (?:the |your )?(?:system|systems|memory|cpu|load|uptime|health)(?: doing)?"),
    _c(r"what is (?:the |your )?(?:uptime|memory usage|memory use|cpu load|cpu usage|load|system load|load average)"),
    _c(r"how long have you been (?:up|running|on|online|awake)"),
]

# --- capabilities -------------------------------------------------------------------------
_CAPABILITIES = [
    _c(r"what (?:else )?(?:can|could) you (?:do|help(?: me)? with|help with)"),
    _c(r"what (?:else )?can i (?:ask|ask you|say|say to you)"),
    _c(r"what (?:else )?(?:do you do|are you able to do|you can do|can you do)"),
    _c(r"what are (?:your|the) (?:skills|capabilities|features|abilities|commands|functions|options)"),
    _c(r"(?:list|show) (?:your |the )?(?:skills|commands|capabilities|features)"),
    _c(r"help|help me|how (?:can|do) you help(?: me)?|how do i use (?:this|you)|what should i say"),
]


def _timer_call(text: str) -> SkillCall | None:
    m = _TIMER_CANCEL.fullmatch(text)
    if m:
        spec = m.group("d") or m.group("d2")
        seconds = parse_duration(spec) if spec else None
        everything = bool(re.search(r"\b(?:all|both|every)\b", m.group("all") or "")) or m.group("noun").endswith("s")
        args: dict[str, Any] = {"action": "cancel", "all": everything}
        if seconds is not None:
            args["seconds"] = seconds
        elif spec:
            args["label"] = spec  # "cancel the egg timer": matched against labels, else the only timer
        return SkillCall("timer", args, text)
    for pattern in _TIMER_REMAINING:
        if pattern.fullmatch(text):
            return SkillCall("timer", {"action": "remaining"}, text)
    for pattern in _TIMER_SET:
        m = pattern.fullmatch(text)
        if not m:
            continue
        spec = (m.group("d") or "").strip()
        label = (m.group("label") or "").strip()
        seconds = parse_duration(spec) if spec else None
        if seconds is None and label:  # "for 5 minutes" swallowed as a label: try it as the duration
            seconds = parse_duration(label)
            if seconds is not None:
                label = ""
        if spec and seconds is None:
            if pattern is _TIMER_SET[1]:
                continue  # "set a kitchen timer": not a duration in front of "timer"
            # "set a timer for my presentation": the timer skill asks for how long
        args = {"action": "set", "seconds": seconds}
        if label:
            args["label"] = label
        return SkillCall("timer", args, text)
    return None


def _date_call(text: str) -> SkillCall | None:
    m = _IS_WEEKDAY.fullmatch(text)
    if m:
        return SkillCall("date", {"what": "is_weekday", "weekday": m.group("wd"), "offset_days": 0}, text)
    for pattern in _DATE:
        m = pattern.fullmatch(text)
        if m:
            groups = m.groupdict()
            ref = groups.get("r1") or groups.get("r2") or "today"
            if groups.get("r1") and groups.get("r2") and groups["r1"] != groups["r2"]:
                return None
            what = groups.get("what") or "date"
            if what == "day":
                what = "date"
            return SkillCall("date", {"what": what, "offset_days": {"today": 0, "tomorrow": 1, "yesterday": -1}[ref]},
                             text)
    return None


def route(text: str) -> SkillCall | None:
    """The built-in skill a transcript asks for, with parsed arguments; None → the LLM answers."""
    norm = strip_politeness(normalize(text))
    if not norm:
        return None
    call = _timer_call(norm)
    if call:
        return call
    for pattern in _TIME:
        if pattern.fullmatch(norm):
            return SkillCall("time", {}, norm)
    call = _date_call(norm)
    if call:
        return call
    for pattern in _STATUS:
        if pattern.fullmatch(norm):
            return SkillCall("status", {}, norm)
    for pattern in _CAPABILITIES:
        if pattern.fullmatch(norm):
            return SkillCall("capabilities", {}, norm)
    return None
