"""Skills: instant, exact answers tried before the LLM, and tools for an LLM that can call them.

    runner = SkillRunner.from_config(config, announce=lambda text: ...)   # once per worker
    result = runner.answer(request.text, request.speaker)                 # SkillResult | None
    if result is None: ...the LLM answers...   (tools: runner.tool_specs(), runner.call_tool(...))
    else: stream result.text; response route=result.route, degraded=result.degraded
    runner.close()

A skill is one module in skills/builtin/ declaring `SKILL = SkillSpec(...)`: its name, summary,
LLM tool schema, phrasings (`match`), sound-alikes (`hears`) and handler. The registry
(skills.registry) finds them; `skill_names()` lists them for the `[skills] allowed` check.
`route(text)` alone is the pure router over the registered skills (no pool, no allow-list);
skills.hearing is how it tolerates fillers, polite wrappers, a leaked wake phrase and mishearings.
"""

from skills.registry import registered, skill_names
from skills.router import route
from skills.runner import SkillRunner, is_enrolled
from skills.text import normalize, parse_duration
from skills.types import (FRIENDLY_BUSY, FRIENDLY_ERROR, FRIENDLY_NOT_ALLOWED, FRIENDLY_TIMEOUT,
                          FRIENDLY_UNAVAILABLE, Skill, SkillCall, SkillContext, SkillResult, SkillSpec)

__all__ = [
    "FRIENDLY_BUSY", "FRIENDLY_ERROR", "FRIENDLY_NOT_ALLOWED", "FRIENDLY_TIMEOUT", "FRIENDLY_UNAVAILABLE",
    "Skill", "SkillCall", "SkillContext", "SkillResult", "SkillRunner", "SkillSpec", "is_enrolled", "normalize",
    "parse_duration", "registered", "route", "skill_names",
]
