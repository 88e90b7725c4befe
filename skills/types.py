"""The few value types the skills package hands around."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

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
