"""Skill routing accuracy on a labelled set of phrasings: `python -m bench.skill_eval`.

The set (bench/data/skill_phrasings.jsonl, one JSON object a line) is what speech recognition
writes for requests a skill must answer — with fillers, leaked wake words, number words,
mishearings — and near misses: phrasings that sound like a skill's but must reach the LLM
(`"skill": null`) or a different skill. Each row: `text`, `skill` (expected, or null for the
LLM), optional `args` (a subset the routed call must carry), optional `near` (the skill a
near miss resembles; its presence makes the row a near miss), optional `note`.

Figures (tests/unit/test_skills.py asserts them on the same file):
- skill_accuracy: rows expecting a skill that reach it with the expected args, over those rows;
- false_skill_rate: rows answered by a skill they should not reach (the LLM's rows answered by
  any skill, or a row routed to another skill), over all rows — a false skill answer is the
  worse error, so this one must stay 0;
- near_miss_accuracy: near misses routed where they belong, over near misses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from skills import route

PHRASINGS = Path(__file__).resolve().parent / "data" / "skill_phrasings.jsonl"


def load_phrasings(path: Path = PHRASINGS) -> list[dict[str, Any]]:
    """The labelled rows; ValueError naming the line when one is malformed."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or "skill" not in row:
            raise ValueError(f"{path}:{number}: each line needs \"text\" and \"skill\" (null for the LLM)")
        rows.append(row)
    return rows


def judge(row: dict[str, Any]) -> dict[str, Any]:
    """Route one row: where it went, and whether that is right or a false skill answer."""
    call = route(row["text"])
    got = call.skill if call else None
    args_ok = call is not None and all(call.args.get(k) == v for k, v in (row.get("args") or {}).items())
    correct = got == row["skill"] and (got is None or args_ok)
    return {"text": row["text"], "expected": row["skill"], "routed": got, "args": call.args if call else None,
            "near_miss": "near" in row, "correct": correct, "false_skill": got is not None and got != row["skill"]}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def evaluate(path: Path = PHRASINGS) -> dict[str, Any]:
    """Skill accuracy and false-skill rate on the labelled set (the bench report's `skills` key)."""
    judged = [judge(row) for row in load_phrasings(path)]
    to_skill = [j for j in judged if j["expected"] is not None]
    near = [j for j in judged if j["near_miss"]]
    false = [j for j in judged if j["false_skill"]]
    return {
        "phrasings": len(judged),
        "to_skill": len(to_skill),
        "near_misses": len(near),
        "skill_accuracy": _rate(sum(j["correct"] for j in to_skill), len(to_skill)),
        "false_skill_rate": _rate(len(false), len(judged)),
        "near_miss_accuracy": _rate(sum(j["correct"] for j in near), len(near)),
        "false_skills": [{k: j[k] for k in ("text", "expected", "routed")} for j in false],
        "missed": [{k: j[k] for k in ("text", "expected", "routed", "args")}
                   for j in to_skill if not j["correct"] and not j["false_skill"]],
        "source": path.name,
    }


def summary_line(result: dict[str, Any]) -> str:
    def pct(value: Any) -> str:
        return "n/a" if value is None else f"{value * 100:.1f} %"

    return (f"skills: {result['phrasings']} phrasings ({result['near_misses']} near misses): skill accuracy "
            f"{pct(result['skill_accuracy'])}, false-skill rate {pct(result['false_skill_rate'])}, "
            f"near misses routed right {pct(result['near_miss_accuracy'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.skill_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--phrasings", type=Path, default=PHRASINGS, help="a JSONL file of labelled phrasings")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = parser.parse_args(argv)
    result = evaluate(args.phrasings)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(summary_line(result))
        for row in result["false_skills"]:
            print(f"  FALSE SKILL {row['text']!r}: expected {row['expected']}, routed to {row['routed']}")
        for row in result["missed"]:
            print(f"  MISSED {row['text']!r}: expected {row['expected']}, routed to {row['routed']} {row['args']}")
    return 0 if not result["false_skills"] and not result["missed"] else 1


if __name__ == "__main__":
    sys.exit(main())
