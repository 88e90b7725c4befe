"""The capabilities skill: "what can you do" → one sentence built from the allowed skills.

Not offered to an LLM as a tool (the LLM already has the tool list).
"""

from __future__ import annotations

from typing import Any

from skills.hearing import whole
from skills.types import SkillContext, SkillSpec


def answer(ctx: SkillContext, args: dict[str, Any]) -> str:
    return ctx.describe()


match = whole(
    r"what (?:else )?(?:can|could) you (?:do|help(?: me)? with|help with)",
    r"what (?:else )?can i (?:ask|ask you|say|say to you)",
    r"what (?:else )?(?:do you do|are you able to do|you can do|can you do)",
    r"what are (?:your|the) (?:skills|capabilities|features|abilities|commands|functions|options)",
    r"(?:list|show) (?:your |the )?(?:skills|commands|capabilities|features)",
    r"help|help me|how (?:can|do) you help(?: me)?|how do i use (?:this|you)|what should i say",
)

SKILL = SkillSpec(
    name="capabilities", order=50, handler=answer, match=match, noun="that", tool=False,
    description="What this assistant can do.",
)
