"""The timer skill: set, cancel and check countdown timers; the kiosk announces one when it ends.

A request to set a timer whose duration cannot be parsed ("set a timer for the pasta") still
routes here (seconds=None) and the skill asks "For how long?" — better than letting the LLM
pretend it set one. Other words after "timer" that are not a duration ("set a timer on my phone",
"the timer on my phone is broken") leave the request to the LLM. "Set a time for five
minutes" (the "-r" lost) is a timer only because a duration follows.
"""

from __future__ import annotations

import math
import re
from typing import Any

from skills.text import parse_duration, spoken_duration, spoken_list
from skills.timers import Timer, TimerLimit, TimerManager
from skills.types import SkillContext, SkillSpec

_TIMER = r"(?:timer|countdown)"
_SET_VERB = (r"(?:set up|set|start up|start|create|make|put on|run|begin|add|i need|i want|give me|"
             r"i would like|let us set|let us start|go ahead and set)")
_ART = r"(?:me a new|me a|me an|a new|up a|up an|a|an|the|another|1|new)"
_LABEL = r"(?: (?:for|called|named) (?:the |my )?(?P<label>[a-z][a-z ]{0,40}))?"

_SET = [re.compile(p) for p in (
    # "set a timer for 5 minutes (for the eggs)", "timer for 5 minutes", "start a countdown of 10 seconds"
    rf"(?:(?P<verb>{_SET_VERB}) )?(?:{_ART} )?{_TIMER}(?: (?P<prep>for|of|to|at|on|in))?(?: (?P<d>.+?))??{_LABEL}",
    # "set a 5 minute timer (for the eggs)", "5 minute timer", "a 10 second countdown"
    rf"(?:(?P<verb>{_SET_VERB}) )?(?:{_ART} )?(?P<d>.+?) {_TIMER}{_LABEL}",
)]
_SET_TIME = re.compile(r"(?:set|start) (?:a |the )?time (?:for|of) (?P<d>.+)")
_CANCEL = re.compile(
    r"(?:cancel|stop|delete|remove|clear|end|kill|turn off|switch off|dismiss|abort|reset|never mind|forget)"
    r"(?P<all>(?: (?:the|my|that|this|all|of|both|every))*)(?: (?P<d>.+?))? (?P<noun>timers?|countdowns?)"
    r"(?: (?:for|of) (?P<d2>.+))?")
_REMAINING = [re.compile(p) for p in (
    (r"how (?:much|long)(?: more)?(?: time)?(?: is| do i have| have i got| do we have)? (?:left|remaining|to go)"
     rf"(?: on (?:the|my|that|this) (?:.+ )?{_TIMER})?"),
    rf"how much longer(?: on (?:the|my|that) {_TIMER})?",
    (rf"how long (?:until|till|before|is left on) (?:the|my|that) {_TIMER}"
     r"(?: (?:is done|goes off|rings|finishes|ends|is up|is finished))?"),
    rf"(?:what is )?(?:the )?(?:time left|time remaining|remaining time)(?: on (?:the|my) {_TIMER})?",
    rf"what is left on (?:the|my) {_TIMER}",
    rf"(?:check|show|list)(?: the| my| all| all my| all the)? {_TIMER}s?",
    rf"{_TIMER}s? (?:status|check)",
    rf"(?:is|are) (?:the|my) {_TIMER}s? (?:still )?(?:running|going|on|set|active)",
    rf"(?:do i|do we) have (?:any|a) {_TIMER}s?(?: (?:running|set|going|on))?",
    rf"are there any {_TIMER}s?(?: (?:running|set|going|on))?",
    rf"what {_TIMER}s? (?:do i|do we) have(?: (?:running|set|going|on))?",
)]


def _cancel(m: re.Match[str]) -> dict[str, Any]:
    spec = m.group("d") or m.group("d2")
    seconds = parse_duration(spec) if spec else None
    everything = bool(re.search(r"\b(?:all|both|every)\b", m.group("all") or "")) or m.group("noun").endswith("s")
    args: dict[str, Any] = {"action": "cancel", "all": everything}
    if seconds is not None:
        args["seconds"] = seconds
    elif spec:
        args["label"] = spec  # "cancel the egg timer": matched against labels, else the only timer
    return args


def _set(pattern: re.Pattern[str], m: re.Match[str]) -> dict[str, Any] | None:
    groups = m.groupdict()
    spec = (groups.get("d") or "").strip()
    label = (groups.get("label") or "").strip()
    seconds = parse_duration(spec) if spec else None
    if seconds is None and label:  # "for 5 minutes" swallowed as a label: try it as the duration
        seconds = parse_duration(label)
        if seconds is not None:
            label = ""
    if spec and seconds is None:
        if pattern is _SET[1]:
            return None  # "set a kitchen timer": not a duration in front of "timer"
        if groups.get("prep") != "for":
            return None  # "set a timer on my phone", "the timer on my phone is broken": not a timer to set here
        # "set a timer for my presentation": the timer skill asks for how long
    args: dict[str, Any] = {"action": "set", "seconds": seconds}
    if label:
        args["label"] = label
    return args


def match(reading: str) -> dict[str, Any] | None:
    m = _CANCEL.fullmatch(reading)
    if m:
        return _cancel(m)
    if any(p.fullmatch(reading) for p in _REMAINING):
        return {"action": "remaining"}
    for pattern in _SET:
        m = pattern.fullmatch(reading)
        if m:
            args = _set(pattern, m)
            if args is not None:
                return args
    m = _SET_TIME.fullmatch(reading)
    seconds = parse_duration(m.group("d")) if m else None
    return {"action": "set", "seconds": seconds} if seconds is not None else None


def _left(timers: TimerManager, timer: Timer) -> str:
    return spoken_duration(math.ceil(timers.remaining(timer)))


def _named(args: dict[str, Any], running: list[Timer]) -> list[Timer] | None:
    """Timers the request names; None if it names none in particular."""
    if args.get("seconds") not in (None, ""):
        seconds = float(args["seconds"])
        return [t for t in running if abs(t.seconds - seconds) < 0.5]
    label = str(args.get("label") or "").strip().lower()
    if label:
        named = [t for t in running if t.label and (t.label.lower().startswith(label.rstrip("s"))
                                                   or label.startswith(t.label.lower().rstrip("s")))]
        return named or None
    return None


def answer(ctx: SkillContext, args: dict[str, Any]) -> str:
    """Arguments from an LLM tool call may arrive as strings; nonsense raises ValueError."""
    timers = ctx.timers
    action = str(args.get("action", "set")).lower()
    running = timers.active()
    if action == "set":
        if args.get("seconds") in (None, ""):
            return "For how long? For example, say: set a timer for five minutes."
        seconds = float(args["seconds"])
        label = str(args.get("label") or "").strip()
        try:
            timer = timers.set(seconds, label)
        except TimerLimit as exc:
            return str(exc)
        return f"OK, {timer.name} started."
    if action == "cancel":
        if not running:
            return "You have no timers running."
        chosen = _named(args, running)
        if args.get("all") in (True, "true", "True", 1):
            chosen = running if chosen is None else chosen
        elif chosen is None:
            if len(running) > 1:
                return (f"You have {len(running)} timers: {spoken_list(['a ' + t.name for t in running])}. "
                        "Say cancel all timers, or which one.")
            chosen = running
        elif not chosen:
            return f"You don't have a {spoken_duration(float(args['seconds']))} timer running."
        for t in chosen:
            timers.cancel(t.id)
        return f"Cancelled your {chosen[0].name}." if len(chosen) == 1 else f"Cancelled {len(chosen)} timers."
    if action == "remaining":
        if not running:
            return "You have no timers running."
        if len(running) == 1:
            return f"{_left(timers, running[0])} left on your {running[0].name}."
        return "Your " + spoken_list([f"{t.name} has {_left(timers, t)} left" for t in running]) + "."
    raise ValueError(f"unknown timer action {action!r}")


SKILL = SkillSpec(
    name="timer", order=30, handler=answer, match=match, summary="set timers", noun="timers",
    description="Set, cancel, or check countdown timers. When a timer ends, the kiosk announces it.",
    parameters={"type": "object", "properties": {
        "action": {"type": "string", "enum": ["set", "cancel", "remaining"]},
        "seconds": {"type": "number", "description": "duration for set; picks the timer to cancel"},
        "label": {"type": "string", "description": "optional name, e.g. eggs"},
        "all": {"type": "boolean", "description": "cancel every timer"},
    }, "required": ["action"]},
    hears={"timor": "timer", "tymer": "timer", "minuets": "minutes"},
)
