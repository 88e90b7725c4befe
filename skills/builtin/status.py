"""The status skill: "are you OK", "system status" → health, uptime, load and memory, spoken."""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

from skills.hearing import whole
from skills.text import spoken_duration, spoken_list
from skills.types import SkillContext, SkillSpec


def spoken_uptime(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    if days:
        hours = rest // 3600
        and_hours = f" and {hours} hour{'s' if hours != 1 else ''}" if hours else ""
        return f"{days} day{'s' if days != 1 else ''}{and_hours}"
    if rest < 60:
        return spoken_duration(rest)
    return spoken_duration(rest - rest % 60)  # minutes are enough


def answer(ctx: SkillContext, args: dict[str, Any]) -> str:
    issues = list(ctx.problems())
    cores = psutil.cpu_count() or 1
    load = os.getloadavg()[0]
    memory = psutil.virtual_memory().percent
    if memory >= 90:
        issues.append("memory is running high")
    if load >= 2 * cores:
        issues.append("the processor is overloaded")
    head = "I'm working normally." if not issues else f"I'm running, but {spoken_list(issues)}."
    return (f"{head} I've been up {spoken_uptime(time.monotonic() - ctx.started)}, the system "
            f"{spoken_uptime(time.time() - psutil.boot_time())}. Load is {load:.1f} on {cores} "
            f"cores and memory is {memory:.0f} percent used.")


match = whole(
    r"are you (?:doing )?(?:ok|all right|working|running|alive|online|up|functioning|healthy|fine)"
    r"(?: properly| correctly| ok)?",
    r"is everything (?:ok|all right|working|fine)(?: with you)?",
    r"(?:(?:what is|check|show|give me|run|report|do) )?(?:the |your |a )?(?:system |systems |health |current )?"
    r"(?:status|status report|health|health check|diagnostic|diagnostics|system check|self test|self check)",
    r"how (?:is|are) (?:the |your )?(?:system|systems|memory|cpu|load|uptime|health)(?: doing)?",
    r"what is (?:the |your )?(?:uptime|memory usage|memory use|cpu load|cpu usage|load|system load|load average)",
    r"how long have you been (?:up|running|on|online|awake)",
)

SKILL = SkillSpec(
    name="status", order=40, handler=answer, match=match, summary="report my system status", noun="system status",
    description="The assistant's health: problems, uptime, processor load and memory use.",
)
