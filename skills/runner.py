"""SkillRunner: allow-list, speaker check, bounded pool, deadline, friendly answers.

Its skills are the registry's (skills/builtin/, one module each), bound to this runner's clock,
timers and health, plus any registered at run time. Policy decisions (see also skills.router):

* A routed skill that is not in `allowed` gets a polite refusal ("Sorry, I can't help with that
  here."), not the LLM: with "timer" disabled, an LLM would happily say "Timer set!" and nothing
  would ring, and with "time" disabled it would invent a time. Refusals are not degraded.
* A skill in `enrolled_only` asked by an unidentified speaker ("unknown", "") is refused
  politely ("Sorry, only enrolled users can use timers.").
* Every call runs in the BoundedPool with a deadline of `timeout_s`, measured from the call.
  Raised → FRIENDLY_ERROR, past the deadline → FRIENDLY_TIMEOUT (the thread is abandoned and
  counted), no free thread → FRIENDLY_BUSY at once, a skill that already has a call stuck →
  FRIENDLY_UNAVAILABLE at once. All of these are degraded. run() never raises.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from skills.pool import BoundedPool
from skills.registry import registered, skill_names
from skills.router import route
from skills.timers import TimerManager
from skills.types import (FRIENDLY_BUSY, FRIENDLY_ERROR, FRIENDLY_NOT_ALLOWED, FRIENDLY_TIMEOUT,
                          FRIENDLY_UNAVAILABLE, Skill, SkillCall, SkillContext, SkillResult)

log = logging.getLogger("vigil.skills")

UNIDENTIFIED = frozenset({"", "unknown", "none", "nobody"})


def _names(value: str | Iterable[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    seen: list[str] = []
    for item in items:
        name = item.strip().lower()
        if name and name not in seen:
            seen.append(name)
    return seen


def is_enrolled(speaker: str | None) -> bool:
    return (speaker or "").strip().lower() not in UNIDENTIFIED


class SkillRunner:
    def __init__(self, allowed: str | Iterable[str] | None = None,
                 enrolled_only: str | Iterable[str] = "", timeout_s: float = 1.0, pool_size: int = 4,
                 announce: Callable[[str], None] | None = None, *, max_abandoned: int | None = None,
                 max_stuck_per_skill: int = 1, max_timers: int = 5,
                 clock: Callable[[], datetime] = datetime.now,
                 health: Callable[[], Iterable[str]] | None = None) -> None:
        """allowed/enrolled_only: comma lists (as in SkillsConfig) or iterables of skill names;
        allowed=None allows every registered skill.
        announce(text): called from the timer thread when a timer ends; must not block.
        max_abandoned: hung threads given up on at once (default 2 × pool_size); threads in all
        never exceed pool_size + max_abandoned. health(): extra problems (short phrases) for the
        status skill, e.g. ["the speech worker restarted twice"]."""
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.allowed = _names(skill_names() if allowed is None else allowed)
        self.enrolled_only = set(_names(enrolled_only))
        self.timeout_s = float(timeout_s)
        self._pool = BoundedPool(pool_size, max_abandoned=2 * pool_size if max_abandoned is None else max_abandoned,
                                 max_stuck_per_skill=max_stuck_per_skill)
        self.timers = TimerManager(announce, max_timers=max_timers)
        self._health = health
        self._started = time.monotonic()
        self._skills: dict[str, Skill] = {}
        self._lock = threading.Lock()
        self._counts = {k: 0 for k in ("calls", "ok", "error", "timeout", "busy", "unavailable", "refused", "closed")}
        context = SkillContext(clock=clock, timers=self.timers, problems=self._problems, started=self._started,
                               describe=self.describe)
        for spec in registered():
            self.register(spec.bind(context))

    @classmethod
    def from_config(cls, config: Any, announce: Callable[[str], None] | None = None, **kwargs: Any) -> SkillRunner:
        """From a pipeline Config (uses config.skills) or a SkillsConfig."""
        cfg = getattr(config, "skills", config)
        return cls(cfg.allowed, cfg.enrolled_only, cfg.timeout_s, cfg.pool_size, announce, **kwargs)

    def register(self, skill: Skill) -> None:
        """Add (or replace) a skill. It still runs only if its name is in `allowed`."""
        self._skills[skill.name.lower()] = skill

    # -- routing -------------------------------------------------------------------------
    def route(self, text: str) -> SkillCall | None:
        """The registered skills' phrasings, then the `match` of extra skills; None → the LLM."""
        return route(text, self._skills.values())

    def answer(self, text: str, speaker: str = "unknown") -> SkillResult | None:
        """route() then run(): the spoken answer, or None if the LLM should answer."""
        call = self.route(text)
        return None if call is None else self.run(call, speaker)

    # -- running -------------------------------------------------------------------------
    def run(self, call: SkillCall, speaker: str = "unknown") -> SkillResult:
        """Run one call within timeout_s; never raises, never waits past the deadline."""
        start = time.monotonic()
        name = call.skill.lower()
        skill = self._skills.get(name)

        def done(text: str, status: str, error: str = "") -> SkillResult:
            with self._lock:
                self._counts["calls"] += 1
                self._counts[status] += 1
            elapsed = round((time.monotonic() - start) * 1000, 1)
            if status not in ("ok", "refused"):
                log.warning("skill %s %s after %.0f ms: %s", name, status, elapsed, error)
            return SkillResult(name, text, status, status not in ("ok", "refused"), error, elapsed)

        if skill is None or name not in self.allowed:
            return done(FRIENDLY_NOT_ALLOWED, "refused", "unknown skill" if skill is None else "not allowed")
        if name in self.enrolled_only and not is_enrolled(speaker):
            return done(f"Sorry, only enrolled users can use {skill.noun or name}.", "refused", "enrolled only")
        job, why = self._pool.submit(name, skill.handler, dict(call.args))
        if job is None:
            text = {"busy": FRIENDLY_BUSY, "unavailable": FRIENDLY_UNAVAILABLE}.get(why, FRIENDLY_UNAVAILABLE)
            return done(text, why, {"busy": "all skill threads are busy",
                                    "unavailable": f"the {name} skill is not responding",
                                    "closed": "skills are shut down"}[why])
        if not job.done.wait(max(0.0, self.timeout_s - (time.monotonic() - start))) and self._pool.give_up(job):
            return done(FRIENDLY_TIMEOUT, "timeout", f"the {name} skill did not answer within {self.timeout_s:g} s")
        if job.error is not None:
            log.debug("skill %s raised", name, exc_info=job.error)
            return done(FRIENDLY_ERROR, "error", f"{type(job.error).__name__}: {job.error}")
        if not isinstance(job.result, str) or not job.result.strip():
            return done(FRIENDLY_ERROR, "error", f"the {name} skill returned {job.result!r}")
        return done(job.result.strip(), "ok")

    # -- tools for an LLM engine that supports tool calling --------------------------------
    def tool_specs(self) -> list[dict[str, Any]]:
        """OpenAI/Ollama `tools` entries for the allowed skills (not "capabilities")."""
        skills = [self._skills.get(name) for name in self.allowed]
        return [skill.tool_spec() for skill in skills if skill is not None and skill.tool]

    def call_tool(self, name: str, arguments: dict[str, Any] | str | None, speaker: str = "unknown") -> str:
        """Run a tool call under the same deadline; the text is the tool message's content.

        Failures come back as "error: ..." for the LLM to phrase; refusals as the refusal."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                return "error: the arguments are not valid JSON"
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return "error: the arguments must be an object"
        key = (name or "").lower()
        skill = self._skills.get(key)
        if skill is None or not skill.tool or key not in self.allowed:
            return f"error: there is no tool named {name!r}"
        result = self.run(SkillCall(key, arguments), speaker)
        return result.text if result.status in ("ok", "refused") else f"error: {result.error}"

    def for_speaker(self, speaker: str) -> SpeakerTools:
        """The tools as one request's speaker may use them (enrolled-only skills stay checked)."""
        return SpeakerTools(self, speaker)

    # -- description, health, shutdown ---------------------------------------------------
    def describe(self) -> str:
        """One sentence for "what can you do", from the allowed skills."""
        summaries = [self._skills[n].summary for n in self.allowed if n in self._skills and self._skills[n].summary]
        if "tell you the time" in summaries and "tell you the date" in summaries:
            summaries[summaries.index("tell you the time")] = "tell you the time and the date"
            summaries.remove("tell you the date")
        summaries.append("answer general questions")
        head = ", ".join(summaries[:-1])
        return f"I can {head}, and {summaries[-1]}." if len(summaries) > 2 else f"I can {' and '.join(summaries)}."

    def _problems(self) -> list[str]:
        problems = [f"the {n} skill is not responding" for n in self._pool.stuck_skills()]
        if self._health is not None:
            try:
                extra = self._health()
                problems.extend([extra] if isinstance(extra, str) else list(extra))
            except Exception:
                log.exception("health callback failed")
        return [p for p in problems if p]

    def stats(self) -> dict[str, Any]:
        """Counters and pool state, for /metrics and health."""
        with self._lock:
            counts = dict(self._counts)
        return {**counts, "pool": self._pool.stats(), "timers": len(self.timers.active()),
                "timers_fired": self.timers.fired}

    def close(self) -> None:
        """Cancel timers and stop the pool; returns at once even with hung skill threads."""
        self.timers.close()
        self._pool.close()

    def __enter__(self) -> SkillRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SpeakerTools:
    """A SkillRunner's tools bound to the speaker of one request: an engine's `toolbox`."""

    def __init__(self, runner: SkillRunner, speaker: str) -> None:
        self.runner = runner
        self.speaker = speaker

    def tool_specs(self) -> list[dict[str, Any]]:
        return self.runner.tool_specs()

    def call_tool(self, name: str, arguments: dict[str, Any] | str | None) -> str:
        return self.runner.call_tool(name, arguments, self.speaker)
