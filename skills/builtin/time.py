"""The time skill: "what time is it" → "It's 3:07 PM."

Decision — "what time does the museum close" is NOT the time skill. It answers only "what time
is it now"; questions about when something happens (opening hours, schedules, events, the time
in another city) go to the LLM, whose system prompt is where a kiosk operator puts venue facts.
Otherwise it would answer "It's 3:07 PM." to a question it did not understand.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from skills.hearing import whole
from skills.types import SkillContext, SkillSpec


def spoken_time(now: datetime) -> str:
    """'3:07 PM', '12:00 PM' (noon), '12:30 AM'."""
    hour = now.hour % 12 or 12
    return f"{hour}:{now.minute:02d} {'AM' if now.hour < 12 else 'PM'}"


def answer(ctx: SkillContext, args: dict[str, Any]) -> str:
    return f"It's {spoken_time(ctx.clock())}."


match = whole(
    r"what time is it(?: here| currently| at the moment)?",
    r"what time it is(?: here)?",
    r"time is it",
    r"what is the (?:current |local |exact )?time(?: here| currently| at the moment| of day)?",
    r"(?:the )?(?:current |local |exact )?time",
    r"time check",
    r"what hour is it",
    r"(?:do you|have you) (?:have|got|know) the (?:current )?time",
    r"got the time",
)

SKILL = SkillSpec(
    name="time", order=10, handler=answer, match=match, summary="tell you the time", noun="the time",
    description="The current local time at this kiosk.",
)
