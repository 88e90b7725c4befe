"""Skills: instant, exact answers tried before the LLM, and tools for an LLM that can call them.

    runner = SkillRunner.from_config(config, announce=lambda text: ...)   # once per worker
    result = runner.answer(request.text, request.speaker)                 # SkillResult | None
    if result is None: ...the LLM answers...   (tools: runner.tool_specs(), runner.call_tool(...))
    else: stream result.text; response route=result.route, degraded=result.degraded
    runner.close()

`route(text)` alone is the pure built-in router (no pool, no allow-list).
"""

from skills.router import route
from skills.runner import SkillRunner, is_enrolled
from skills.text import normalize, parse_duration
from skills.types import (FRIENDLY_BUSY, FRIENDLY_ERROR, FRIENDLY_NOT_ALLOWED, FRIENDLY_TIMEOUT,
                          FRIENDLY_UNAVAILABLE, Skill, SkillCall, SkillResult)

__all__ = [
    "route", "SkillRunner", "is_enrolled", "normalize", "parse_duration", "Skill", "SkillCall", "SkillResult",
    "FRIENDLY_BUSY", "FRIENDLY_ERROR", "FRIENDLY_NOT_ALLOWED", "FRIENDLY_TIMEOUT", "FRIENDLY_UNAVAILABLE",
]
