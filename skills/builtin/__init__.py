"""The built-in skills, one module each; skills.registry finds every module here.

A module is a skill when it declares `SKILL = SkillSpec(...)` (skills.types): its name,
its spoken summary, its LLM tool schema, its phrasings (`match`), the sound-alikes it
tolerates (`hears`) and its handler. Adding a skill is adding a module here; the router, the
SkillRunner, the LLM tool list and the allow-list check read them from the registry.
"""
