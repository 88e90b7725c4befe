"""The few value types the skills package hands around."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skills.timers import TimerManager

# What the person hears when a skill cannot answer (spoken style, short).
FRIENDLY_ERROR = "Sorry, that didn't work."
FRIENDLY_TIMEOUT = "Sorry, that's taking too long. Please try again."
FRIENDLY_BUSY = "Sorry, I'm busy right now. Please try again in a moment."
FRIENDLY_UNAVAILABLE = "Sorry, that isn't working right now."
FRIENDLY_NOT_ALLOWED = "Sorry, I can't help with that here."


@dataclass(frozen=True)
class SkillCall:
    """A routed request: which skill, with which parsed arguments (JSON-compatible)."""

    skill: str
    args: dict[str, Any] = field(default_factory=dict)
    text: str = ""  # the normalised transcript that matched ("" for tool calls)


@dataclass(frozen=True)
class SkillResult:
    """A skill's spoken answer.

    status: "ok" | "error" (raised or returned nothing) | "timeout" (past the deadline; the thread
    is abandoned) | "busy" (no free pool thread) | "unavailable" (this skill already has a call
    stuck past its deadline) | "refused" (not allow-listed, or enrolled speakers only) | "closed".
    degraded is True for every status except "ok" and "refused" (a policy answer is a correct one).
    """

    skill: str
    text: str
    status: str = "ok"
    degraded: bool = False
    error: str = ""  # for logs and for tool results: what went wrong
    elapsed_ms: float = 0.0

    @property
    def route(self) -> str:
        """The contract's `route` field of the response event."""
        return f"skill:{self.skill}"


@dataclass
class Skill:
    """One skill. `handler(args) -> str` returns the short spoken answer; it may raise.

    summary: phrase for "what can you do" ("tell you the time"); "" leaves it out.
    noun: what a refusal names ("timers" → "Sorry, only enrolled users can use timers.").
    description/parameters: the tool schema offered to an LLM that supports tool calling
    (parameters is a JSON schema object); tool=False keeps it out of tool_specs().
    match: optional router for extra skills: normalised text → args dict, or None.
    """

    name: str
    handler: Callable[[dict[str, Any]], str]
    summary: str = ""
    noun: str = ""
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    tool: bool = True
    match: Callable[[str], dict[str, Any] | None] | None = None

    def tool_spec(self) -> dict[str, Any]:
        """The OpenAI/Ollama `tools` entry an LLM engine offers (engines/llm/tools.py parses it)."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description or self.summary or self.name,
            "parameters": self.parameters}}


@dataclass(frozen=True)
class SkillContext:
    """What a registered skill's handler may use; the SkillRunner makes one and owns its parts."""

    clock: Callable[[], datetime]
    timers: TimerManager
    problems: Callable[[], list[str]]  # known problems, for the status skill
    started: float  # monotonic time the runner started (the assistant's uptime)
    describe: Callable[[], str]  # "I can ..." from the allowed skills


def _no_parameters() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


@dataclass(frozen=True)
class SkillSpec:
    """One skill as its module in skills/builtin/ declares it: `SKILL = SkillSpec(...)`.

    Everything about a skill lives beside it, so adding one is adding one file:
    name: what the allow-list, the route ("skill:NAME") and the LLM tool call it;
    match(reading) -> args | None: its phrasings, tried on a normalised reading of the request
    (skills.hearing) that must be the *whole* request, so any extra content word leaves it to the LLM;
    handler(ctx, args) -> str: the spoken answer (may raise; the runner turns that into a friendly error);
    hears: sound-alikes of its own words that speech recognition writes ("to date" for "today"),
    applied only when this skill's phrasings are tried, so they cannot make another skill match;
    order: the listing order (allow-list default, "what can you do") and the routing order;
    summary/noun/description/parameters/tool: as in Skill.
    """

    name: str
    handler: Callable[[SkillContext, dict[str, Any]], str]
    match: Callable[[str], dict[str, Any] | None]
    order: int
    summary: str = ""
    noun: str = ""
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=_no_parameters)
    tool: bool = True
    hears: dict[str, str] = field(default_factory=dict)

    def bind(self, ctx: SkillContext) -> Skill:
        """The runnable Skill, its handler given the runner's context."""
        return Skill(name=self.name, handler=functools.partial(self.handler, ctx), summary=self.summary,
                     noun=self.noun, description=self.description, parameters=self.parameters, tool=self.tool)
