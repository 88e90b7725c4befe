"""The date skill: "what's the date" → "Today is Tuesday, March 5, 2024."; tomorrow, yesterday,
the year, the month, "is it Friday".

Questions about the date *of* something ("what is the date of Easter", "what day is Christmas")
go to the LLM. Speech recognition often writes "today" as "to date", "to day" or "of day" at the
end of a date question: the skill hears those as "today" (`hears`), nowhere else.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from skills.types import SkillContext, SkillSpec

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
OFFSETS = {"today": 0, "tomorrow": 1, "yesterday": -1}
_DAYREF = r"(?:today|tomorrow|yesterday)"

_DATE = [re.compile(p) for p in (
    (rf"what(?: is)?(?: the)?(?: (?P<r1>{_DAYREF}))? (?P<what>date|day)(?: is it| was it| is| was)?"
     rf"(?: (?P<r2>{_DAYREF}))?"),
    rf"what(?: is| was)? (?P<r1>{_DAYREF})",
    rf"(?:what|which) (?P<what>day) of the week is it(?: (?P<r2>{_DAYREF}))?",
    rf"what is (?P<r1>{_DAYREF}) (?P<what>date|day)",
    r"(?:the |current |today )?(?P<what>date)(?: today)?",
    r"what (?P<what>month|year) is it",
    r"what is the (?:current )?(?P<what>month|year)",
    r"(?:what is |the )?(?P<what>day) today",
)]
_IS_WEEKDAY = re.compile(rf"is (?:it|today)(?: (?P<r0>today))? (?P<wd>{'|'.join(WEEKDAYS)})(?: today)?")


def spoken_date(day: datetime) -> str:
    """'Tuesday, March 5, 2024'."""
    return f"{day.strftime('%A')}, {day.strftime('%B')} {day.day}, {day.year}"


def match(reading: str) -> dict[str, Any] | None:
    m = _IS_WEEKDAY.fullmatch(reading)
    if m:
        return {"what": "is_weekday", "weekday": m.group("wd"), "offset_days": 0}
    for pattern in _DATE:
        m = pattern.fullmatch(reading)
        if m:
            groups = m.groupdict()
            if groups.get("r1") and groups.get("r2") and groups["r1"] != groups["r2"]:
                return None  # "what is today's date tomorrow": not a question this skill answers
            ref = groups.get("r1") or groups.get("r2") or "today"
            what = groups.get("what") or "date"
            return {"what": "date" if what == "day" else what, "offset_days": OFFSETS[ref]}
    return None


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def answer(ctx: SkillContext, args: dict[str, Any]) -> str:
    """Arguments from an LLM tool call may arrive as strings; nonsense raises ValueError."""
    offset = _int(args.get("offset_days", 0), "offset_days")
    if abs(offset) > 366:
        raise ValueError("offset_days must be within a year")
    what = str(args.get("what", "date"))
    day = ctx.clock() + timedelta(days=offset)
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


SKILL = SkillSpec(
    name="date", order=20, handler=answer, match=match, summary="tell you the date", noun="the date",
    description="Today's date and day of the week at this kiosk, or the date a number of days away.",
    parameters={"type": "object", "properties": {
        "offset_days": {"type": "integer", "description": "0 for today, 1 for tomorrow, -1 for yesterday"},
    }},
    hears={"to date": "today", "to day": "today", "2 day": "today", "2 date": "today", "of day": "today",
           "to morrow": "tomorrow", "2 morrow": "tomorrow", "yester day": "yesterday"},
)
