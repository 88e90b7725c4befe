"""Intent router, tried before the LLM: which skill a transcript asks for, with parsed arguments.

`route(text)` answers only what must be instant and exact — the registered skills (the time,
the date, timers, system status, "what can you do") — and returns None for everything else, so
the LLM answers. Each reading of the transcript (skills.hearing: fillers, polite wrappers and a
leaked wake phrase peeled off, most literal first) is tried on each skill's phrasings in the
registry, with that skill's own sound-alikes. A phrasing must match the whole reading, and the
first reading that exactly one skill claims wins (claimed by two: the LLM answers). Any extra
content word makes it an ordinary question for the LLM: "what time is it in Tokyo", "what is
the date of Easter", "how much time is left until Christmas".
"""

from __future__ import annotations

from collections.abc import Iterable

from skills.hearing import readings, rehear
from skills.registry import registered
from skills.types import Skill, SkillCall, SkillSpec


def route(text: str, extra: Iterable[Skill] = ()) -> SkillCall | None:
    """The skill a transcript asks for; None → the LLM answers.

    extra: skills registered at run time with their own `match`, tried after the built-ins."""
    extra = [skill for skill in extra if skill.match is not None]
    for reading in readings(text):
        calls = [call for spec in registered() if (call := _try(spec, reading)) is not None]
        if len(calls) > 1:
            return None  # two skills claim it: ambiguous, and a wrong skill answer is worse than the LLM's
        if calls:
            return calls[0]
        for skill in extra:
            args = skill.match(reading)
            if args is not None:
                return SkillCall(skill.name, dict(args), reading)
    return None


def _try(spec: SkillSpec, reading: str) -> SkillCall | None:
    """The reading as it is, then with the skill's sound-alikes."""
    for heard in dict.fromkeys((reading, rehear(reading, spec.hears))):
        args = spec.match(heard)
        if args is not None:
            return SkillCall(spec.name, args, heard)
    return None
