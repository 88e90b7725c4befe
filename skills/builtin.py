"""The built-in skills: time, date, timer, status, capabilities.

Each is a `Skill` whose handler takes the args the router (or an LLM tool call) produced and
returns one or two short spoken sentences. Arguments from tool calls may arrive as strings;
handlers coerce them and raise ValueError on nonsense (the runner turns that into a tool error).
"""

from __future__ import annotations

import math
import os
import time
from datetime import datetime, timedelta
from typing import Any, Callable

import psutil

from skills.text import spoken_duration
from skills.timers import Timer, TimerLimit, TimerManager
from skills.types import Skill

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def spoken_time(now: datetime) -> str:
    """'3:07 PM', '12:00 PM' (noon), '12:30 AM'."""
    hour = now.hour % 12 or 12
    return f"{hour}:{now.minute:02d} {'AM' if now.hour < 12 else 'PM'}"


def spoken_date(day: datetime) -> str:
    """'Tuesday, March 5, 2024'."""
    return f"{day.strftime('%A')}, {day.strftime('%B')} {day.day}, {day.year}"


def spoken_uptime(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    if days:
        hours = rest // 3600
        return f"{days} day{'s' if days != 1 else ''}" + (f" and {hours} hour{'s' if hours != 1 else ''}" if hours else "")
    if rest < 60:
        return spoken_duration(rest)
    return spoken_duration(rest - rest % 60)  # minutes are enough


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def time_skill(clock: Callable[[], datetime]) -> Skill:
    return Skill(
        name="time", handler=lambda args: f"It's {spoken_time(clock())}.", summary="tell you the time",
        noun="the time", description="The current local time at this kiosk.",
    )


def date_skill(clock: Callable[[], datetime]) -> Skill:
    def handler(args: dict[str, Any]) -> str:
        offset = _int(args.get("offset_days", 0), "offset_days")
        if abs(offset) > 366:
            raise ValueError("offset_days must be within a year")
        what = str(args.get("what", "date"))
        day = clock() + timedelta(days=offset)
        if what == "year":
            return f"It's {day.year}."
        if what == "month":
            return f"It's {day.strftime('%B')} {day.year}."
        if what == "is_weekday":
            asked = str(args.get("weekday", "")).lower()
            if asked not in WEEKDAYS:
                raise ValueError(f"unknown weekday {asked!r}")
            actual = day.strftime("%A")
            return f"Yes, today is {actual}." if actual.lower() == asked else f"No, today is {actual}."
        if what != "date":
            raise ValueError(f"unknown date question {what!r}")
        if offset == 0:
            return f"Today is {spoken_date(day)}."
        if offset == 1:
            return f"Tomorrow is {spoken_date(day)}."
        if offset == -1:
            return f"Yesterday was {spoken_date(day)}."
        if offset > 0:
            return f"In {offset} days it will be {spoken_date(day)}."
        return f"{-offset} days ago it was {spoken_date(day)}."

    return Skill(
        name="date", handler=handler, summary="tell you the date", noun="the date",
        description="Today's date and day of the week at this kiosk, or the date a number of days away.",
        parameters={"type": "object", "properties": {
            "offset_days": {"type": "integer", "description": "0 for today, 1 for tomorrow, -1 for yesterday"},
        }},
    )


def timer_skill(timers: TimerManager) -> Skill:
    def left(timer: Timer) -> str:
        return spoken_duration(math.ceil(timers.remaining(timer)))

    def matches(args: dict[str, Any], running: list[Timer]) -> list[Timer] | None:
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

    def handler(args: dict[str, Any]) -> str:
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
            chosen = matches(args, running)
            if args.get("all") in (True, "true", "True", 1):
                chosen = running if chosen is None else chosen
            elif chosen is None:
                if len(running) > 1:
                    return (f"You have {len(running)} timers: {_join(['a ' + t.name for t in running])}. "
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
                return f"{left(running[0])} left on your {running[0].name}."
            return "Your " + _join([f"{t.name} has {left(t)} left" for t in running]) + "."
        raise ValueError(f"unknown timer action {action!r}")

    return Skill(
        name="timer", handler=handler, summary="set timers", noun="timers",
        description="Set, cancel, or check countdown timers. When a timer ends, the kiosk announces it.",
        parameters={"type": "object", "properties": {
            "action": {"type": "string", "enum": ["set", "cancel", "remaining"]},
            "seconds": {"type": "number", "description": "duration for set; picks the timer to cancel"},
            "label": {"type": "string", "description": "optional name, e.g. eggs"},
            "all": {"type": "boolean", "description": "cancel every timer"},
        }, "required": ["action"]},
    )


def status_skill(problems: Callable[[], list[str]], started: float) -> Skill:
    def handler(args: dict[str, Any]) -> str:
        issues = list(problems())
        cores = psutil.cpu_count() or 1
        load = os.getloadavg()[0]
        memory = psutil.virtual_memory().percent
        if memory >= 90:
            issues.append("memory is running high")
        if load >= 2 * cores:
            issues.append("the processor is overloaded")
        head = "I'm working normally." if not issues else f"I'm running, but {_join(issues)}."
        return (f"{head} I've been up {spoken_uptime(time.monotonic() - started)}, the system "
                f"{spoken_uptime(time.time() - psutil.boot_time())}. Load is {load:.1f} on {cores} "
                f"cores and memory is {memory:.0f} percent used.")

    return Skill(
        name="status", handler=handler, summary="report my system status", noun="system status",
        description="The assistant's health: problems, uptime, processor load and memory use.",
    )


def capabilities_skill(describe: Callable[[], str]) -> Skill:
    return Skill(name="capabilities", handler=lambda args: describe(), noun="that", tool=False,
                 description="What this assistant can do.")
