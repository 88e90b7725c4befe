"""The skill registry: every module in skills/builtin/ is one skill, declared by its `SKILL`.

The router tries their phrasings, the SkillRunner runs their handlers and offers their tool
schemas to the LLM, and the config check validates `[skills] allowed` against `skill_names()`.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

import skills.builtin
from skills.types import SkillSpec


@functools.cache
def registered() -> tuple[SkillSpec, ...]:
    """Every built-in skill, in its declared order (imported once per process)."""
    specs: list[SkillSpec] = []
    for module_info in pkgutil.iter_modules(skills.builtin.__path__):
        module = importlib.import_module(f"skills.builtin.{module_info.name}")
        spec = getattr(module, "SKILL", None)
        if not isinstance(spec, SkillSpec):
            raise TypeError(f"skills/builtin/{module_info.name}.py must declare SKILL = SkillSpec(...)")
        if spec.name != spec.name.strip().lower() or not spec.name or "," in spec.name:
            raise ValueError(f"skills/builtin/{module_info.name}.py: skill name {spec.name!r} must be lower case, "
                             "without commas or spaces around it")
        clash = [s for s in specs if s.name == spec.name]
        if clash:
            raise ValueError(f"two skills are named {spec.name!r} (skills/builtin/{module_info.name}.py and another)")
        specs.append(spec)
    return tuple(sorted(specs, key=lambda s: (s.order, s.name)))


def skill_names() -> tuple[str, ...]:
    """The names `[skills] allowed` may list: "time", "date", "timer", "status", "capabilities"."""
    return tuple(spec.name for spec in registered())
