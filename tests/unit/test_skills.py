"""Skills: the registry, the router and how it hears, the bounded runner with deadlines, timers, tools.

Real code throughout; the only doubles are the named fault skills RaisingSkill and HangingSkill.
The labelled phrasings the bench scores (bench/data/skill_phrasings.jsonl) are asserted here too.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from datetime import datetime, timedelta

import pytest

import skills.builtin
from bench.skill_eval import PHRASINGS, evaluate, judge, load_phrasings
from core.config import Config, SkillsConfig
from skills import (FRIENDLY_BUSY, FRIENDLY_ERROR, FRIENDLY_NOT_ALLOWED, FRIENDLY_TIMEOUT, FRIENDLY_UNAVAILABLE,
                    Skill, SkillCall, SkillRunner, normalize, parse_duration, registered, route, skill_names)
from skills.hearing import readings, rehear, without_leaked_wake

ALL = "time,date,timer,status,capabilities"


# -- fault skills ----------------------------------------------------------------------------
def RaisingSkill(name: str = "raising") -> Skill:
    def handler(args):
        raise RuntimeError("boom")
    return Skill(name=name, handler=handler, summary="", description="always raises")


class HangingSkill:
    """A skill whose calls block until release() (or 30 s), like a dead network call."""

    def __init__(self, name: str = "hanging") -> None:
        self.release_event = threading.Event()
        self.entered = 0
        self.skill = Skill(name=name, handler=self._handler, description="never answers")

    def _handler(self, args):
        self.entered += 1
        self.release_event.wait(30)
        return "finally"

    def release(self) -> None:
        self.release_event.set()


def skill_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vigil-skill-") and t.name != "vigil-skill-timers"]


@pytest.fixture
def runner():
    r = SkillRunner(ALL, "", 1.0, 4)
    yield r
    r.close()


# -- routing ---------------------------------------------------------------------------------
ROUTES = [
    ("What time is it?", "time", {}),
    ("what time is it now", "time", {}),
    ("What's the time?", "time", {}),
    ("Hey Jarvis, what's the time?", "time", {}),
    ("Can you tell me the time, please?", "time", {}),
    ("Do you know what time it is?", "time", {}),
    ("Do you have the time?", "time", {}),
    ("What is the current time?", "time", {}),
    ("Time, please.", "time", {}),
    ("What's the date?", "date", {"what": "date", "offset_days": 0}),
    ("What's today's date?", "date", {"what": "date", "offset_days": 0}),
    ("What date is it today?", "date", {"what": "date", "offset_days": 0}),
    ("What day is it?", "date", {"what": "date", "offset_days": 0}),
    ("What day of the week is it?", "date", {"what": "date", "offset_days": 0}),
    ("What day is tomorrow?", "date", {"what": "date", "offset_days": 1}),
    ("What's the date tomorrow?", "date", {"what": "date", "offset_days": 1}),
    ("What day was it yesterday?", "date", {"what": "date", "offset_days": -1}),
    ("What year is it?", "date", {"what": "year"}),
    ("What month is it?", "date", {"what": "month"}),
    ("Is it Friday?", "date", {"what": "is_weekday", "weekday": "friday"}),
    ("Set a timer for five minutes.", "timer", {"action": "set", "seconds": 300}),
    ("Set a timer for 5 minutes.", "timer", {"action": "set", "seconds": 300}),
    ("set a timer for ten seconds", "timer", {"action": "set", "seconds": 10}),
    ("Set a timer for 1 minute 30 seconds.", "timer", {"action": "set", "seconds": 90}),
    ("Set a timer for one minute and thirty seconds.", "timer", {"action": "set", "seconds": 90}),
    ("Set a 5-minute timer.", "timer", {"action": "set", "seconds": 300}),
    ("Start a five minute timer", "timer", {"action": "set", "seconds": 300}),
    ("5 minute timer", "timer", {"action": "set", "seconds": 300}),
    ("Timer for 20 minutes, please.", "timer", {"action": "set", "seconds": 1200}),
    ("Could you set a timer for twenty-five seconds?", "timer", {"action": "set", "seconds": 25}),
    ("Set a timer for half an hour.", "timer", {"action": "set", "seconds": 1800}),
    ("Set a timer for an hour and a half.", "timer", {"action": "set", "seconds": 5400}),
    ("Set a timer for 2.5 minutes", "timer", {"action": "set", "seconds": 150}),
    ("Set a 10 min timer", "timer", {"action": "set", "seconds": 600}),
    ("Start a countdown of 30 seconds.", "timer", {"action": "set", "seconds": 30}),
    ("I need a timer for 3 minutes", "timer", {"action": "set", "seconds": 180}),
    ("Set a timer for 5 minutes for the eggs.", "timer", {"action": "set", "seconds": 300, "label": "eggs"}),
    ("Set a timer.", "timer", {"action": "set", "seconds": None}),
    ("Cancel the timer.", "timer", {"action": "cancel", "all": False}),
    ("Stop the timer", "timer", {"action": "cancel", "all": False}),
    ("Cancel all timers.", "timer", {"action": "cancel", "all": True}),
    ("Cancel my 5 minute timer.", "timer", {"action": "cancel", "seconds": 300}),
    ("How much time is left?", "timer", {"action": "remaining"}),
    ("How much time is left on the timer?", "timer", {"action": "remaining"}),
    ("How long is left?", "timer", {"action": "remaining"}),
    ("How long until my timer goes off?", "timer", {"action": "remaining"}),
    ("Are you OK?", "status", {}),
    ("Are you working?", "status", {}),
    ("System status.", "status", {}),
    ("What's your status?", "status", {}),
    ("Run a diagnostic.", "status", {}),
    ("How long have you been running?", "status", {}),
    ("What can you do?", "capabilities", {}),
    ("What else can you do?", "capabilities", {}),
    ("Tell me what you can do.", "capabilities", {}),
    ("What can I ask you?", "capabilities", {}),
    ("Help!", "capabilities", {}),
    ("What are your skills?", "capabilities", {}),
]

NOT_SKILLS = [
    "What is the capital of France?",
    "What time does the museum close?",  # decided: event/opening times go to the LLM
    "What time is the next bus?",
    "What time is it in Tokyo?",
    "What is the date of Easter?",
    "What day is Christmas?",
    "How much time is left until Christmas?",
    "Help me find the toilets.",
    "What's the status of my order?",
    "Tell me a joke.",
    "What is a timer?",
    "Set a kitchen timer",  # no duration in front of "timer"
    "Who are you?",
    "How are you?",
    "Where is the exit?",
    "Stop.",
    "Cancel my booking.",
    "Set an alarm for 7 AM.",  # alarms and reminders are not skills
    "Remind me in 5 minutes.",
    "What time is lunch?",
    "How long is the tour?",
    "How much time do I need to see the museum?",
    "What is the time in London?",
    "What's the date of the next event?",
    "",
    "  ...  ",
]


@pytest.mark.parametrize("text,skill,args", ROUTES)
def test_route_table(text, skill, args):
    call = route(text)
    assert call is not None, f"{text!r} did not route"
    assert call.skill == skill, (text, call)
    for key, value in args.items():
        assert call.args.get(key) == value, (text, call.args)


@pytest.mark.parametrize("text", NOT_SKILLS)
def test_not_a_skill(text):
    assert route(text) is None, (text, route(text))


def test_normalize_and_durations():
    assert normalize("Set a five-minute timer!") == "set a 5 minute timer"
    assert normalize("What\u2019s today's date?") == "what is today date"
    assert normalize("one hundred and twenty seconds") == "120 seconds"
    assert normalize("5min") == "5 min"
    assert parse_duration("1 minute and 30 seconds") == 90
    assert parse_duration("a quarter of an hour") == 900
    assert parse_duration("a minute and a half") == 90
    assert parse_duration("5") is None
    assert parse_duration("the eggs") is None


# -- hearing: readings of a transcript ------------------------------------------------------
def test_readings_peel_fillers_stutters_and_a_leaked_wake_phrase():
    assert readings("Set a timer for, uh, five minutes.") == ["set a timer for 5 minutes"]
    assert readings("What, what time is it?") == ["what time is it"]
    assert readings("This, set a timer for 5 minutes.") == ["this set a timer for 5 minutes",
                                                            "set a timer for 5 minutes"]
    assert without_leaked_wake("Hey. Jarvis, what's the time?") == "what's the time?"
    # a leak is a short clause of wake-phrase sounds; anything else stays
    assert without_leaked_wake("This time, please.") is None
    assert without_leaked_wake("Travis said, what time is it?") is None
    assert without_leaked_wake("This, is it raining?") == "is it raining?"
    assert readings("Yes, please.") == ["yes"]
    assert rehear("what is the date to date", {"to date": "today"}) == "what is the date today"
    assert rehear("is my ticket up to dated", {"to date": "today"}) == "is my ticket up to dated"  # whole words


# -- the labelled phrasings (shared with the bench) -------------------------------------------
PHRASING_ROWS = load_phrasings()


def test_phrasing_set_is_big_and_mostly_near_misses():
    near = [row for row in PHRASING_ROWS if "near" in row]
    assert len(PHRASING_ROWS) >= 60 and len(near) * 2 >= len(PHRASING_ROWS), (len(PHRASING_ROWS), len(near))
    assert {row["skill"] for row in PHRASING_ROWS} - {None} <= set(skill_names())
    assert {row["near"] for row in near} <= set(skill_names())
    assert len({row["text"] for row in PHRASING_ROWS}) == len(PHRASING_ROWS), "a phrasing is listed twice"


@pytest.mark.parametrize("row", PHRASING_ROWS, ids=[row["text"] for row in PHRASING_ROWS])
def test_phrasing_routes_where_labelled(row):
    result = judge(row)
    assert not result["false_skill"], f"false skill answer: {result}"
    assert result["correct"], f"missed: {result}"


def test_skill_eval_figures():
    result = evaluate(PHRASINGS)
    assert result["phrasings"] == len(PHRASING_ROWS)
    assert result["false_skill_rate"] == 0.0 and result["false_skills"] == []
    assert result["skill_accuracy"] == 1.0 and result["near_miss_accuracy"] == 1.0, result["missed"]


def test_skill_eval_counts_a_false_skill_and_a_miss(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "what time is it", "skill": null, "near": "time"}\n'
                    '{"text": "what time is it in Tokyo", "skill": "time"}\n'
                    '{"text": "set a timer for 5 minutes", "skill": "timer", "args": {"seconds": 60}}\n\n')
    result = evaluate(rows)
    assert (result["phrasings"], result["to_skill"], result["near_misses"]) == (3, 2, 1)
    assert result["false_skill_rate"] == round(1 / 3, 4) and result["skill_accuracy"] == 0.0
    assert [m["text"] for m in result["missed"]] == ["what time is it in Tokyo", "set a timer for 5 minutes"]
    rows.write_text('{"text": "no label"}\n')
    with pytest.raises(ValueError, match="rows.jsonl:1"):
        evaluate(rows)


def test_bench_report_shows_the_skill_routing_figures():
    from bench.render import render_markdown

    result = evaluate(PHRASINGS)
    false_skills = [{"text": "Timer.", "expected": None, "routed": "timer"}]
    md = render_markdown({"skills": {**result, "false_skills": false_skills}}, [])
    assert f"| skill accuracy (phrasings that must reach a skill) | 100.0 % of {result['to_skill']} |" in md
    assert f"| false-skill rate (answered by a skill they should not reach) | 0.0 % of {len(PHRASING_ROWS)} |" in md
    assert '- false skill: "Timer." → timer (expected the LLM)' in md
    assert "## Skill routing" not in render_markdown({}, [])


# -- the registry ----------------------------------------------------------------------------
def test_registry_names_are_the_default_allow_list():
    assert ",".join(skill_names()) == SkillsConfig().allowed  # core may not import skills: kept equal here
    with SkillRunner() as r:
        assert r.allowed == list(skill_names())
        assert [s["function"]["name"] for s in r.tool_specs()] == [s.name for s in registered() if s.tool]


def test_a_skill_is_one_file(tmp_path, monkeypatch):
    """A module dropped into skills/builtin/ is routed, run, offered as a tool and listed."""
    (tmp_path / "opening_hours.py").write_text(
        "from skills.hearing import whole\n"
        "from skills.types import SkillSpec\n"
        "SKILL = SkillSpec(name='hours', order=60, summary='tell you our opening hours',\n"
        "    description='When the venue is open.', match=whole(r'when (?:are you|is it) open(?: today)?'),\n"
        "    handler=lambda ctx, args: 'We are open from 9 AM to 5 PM.')\n")
    monkeypatch.setattr(skills.builtin, "__path__", [*skills.builtin.__path__, str(tmp_path)])
    registered.cache_clear()
    try:
        assert skill_names() == ("time", "date", "timer", "status", "capabilities", "hours")
        assert route("Hey, um, when are you open today?").skill == "hours"
        with SkillRunner() as r:
            assert r.answer("When are you open?").text == "We are open from 9 AM to 5 PM."
            assert "hours" in [s["function"]["name"] for s in r.tool_specs()]
            assert r.describe().endswith("set timers, report my system status, tell you our opening hours, "
                                         "and answer general questions.")
    finally:
        monkeypatch.undo()
        sys.modules.pop("skills.builtin.opening_hours", None)
        registered.cache_clear()
    assert "hours" not in skill_names()


def test_registry_rejects_a_module_without_a_skill(tmp_path, monkeypatch):
    (tmp_path / "notes.py").write_text("SKILL = 'time'\n")
    monkeypatch.setattr(skills.builtin, "__path__", [*skills.builtin.__path__, str(tmp_path)])
    registered.cache_clear()
    try:
        with pytest.raises(TypeError, match="notes.py must declare SKILL"):
            registered()
    finally:
        monkeypatch.undo()
        sys.modules.pop("skills.builtin.notes", None)
        registered.cache_clear()


# -- answers against the clock ---------------------------------------------------------------
def test_time_answer_matches_clock(runner):
    before = datetime.now().replace(second=0, microsecond=0)
    result = runner.answer("What time is it?", "unknown")
    after = datetime.now()
    assert result is not None and result.status == "ok" and not result.degraded
    assert result.route == "skill:time"
    m = re.fullmatch(r"It's (\d{1,2}):(\d{2}) (AM|PM)\.", result.text)
    assert m, result.text
    hour = int(m.group(1)) % 12 + (12 if m.group(3) == "PM" else 0)
    candidates = [day.replace(hour=hour, minute=int(m.group(2)), second=0, microsecond=0) for day in (before, after)]
    assert any(before <= said <= after for said in candidates), (result.text, before, after)  # midnight-safe


def test_date_answers_match_clock(runner):
    today = datetime.now().date()
    text = runner.answer("What's today's date?").text
    m = re.fullmatch(r"Today is (.+)\.", text)
    assert m, text
    said = datetime.strptime(m.group(1), "%A, %B %d, %Y").date()
    assert said in (today, datetime.now().date())  # midnight-safe
    text = runner.answer("What day is tomorrow?").text
    said = datetime.strptime(re.fullmatch(r"Tomorrow is (.+)\.", text).group(1), "%A, %B %d, %Y").date()
    assert said - timedelta(days=1) in (today, datetime.now().date())
    assert runner.answer("What year is it?").text == f"It's {today.year}."
    weekday = today.strftime("%A")
    assert runner.answer(f"Is it {weekday}?").text == f"Yes, today is {weekday}."


def test_status_and_capabilities(runner):
    status = runner.answer("Are you OK?")
    assert status.status == "ok"
    # No skill problem to report; the processor may be busy with other tests on a 2-core machine.
    assert re.match(r"I'm (working normally|running, but the processor is overloaded)\. ", status.text), status.text
    assert re.search(r"Load is \d+\.\d on \d+ cores and memory is \d+ percent used\.", status.text)
    assert runner.answer("What can you do?").text == (
        "I can tell you the time and the date, set timers, report my system status, and answer general questions.")
    small = SkillRunner("time,capabilities")
    try:
        assert small.describe() == "I can tell you the time and answer general questions."
    finally:
        small.close()


# -- timers ----------------------------------------------------------------------------------
def test_timer_announces_and_cancel_prevents():
    heard: list[tuple[float, str]] = []
    fired = threading.Event()

    def announce(text):
        heard.append((time.monotonic(), text))
        fired.set()

    r = SkillRunner(ALL, "", 1.0, 2, announce)
    try:
        start = time.monotonic()
        assert r.answer("Set a timer for one second.").text == "OK, 1 second timer started."
        assert r.answer("How much time is left?").text == "1 second left on your 1 second timer."
        assert fired.wait(1.5), "the timer did not announce within 1.5 s"
        assert heard[0][1] == "Your 1 second timer is done."
        assert 0.9 <= heard[0][0] - start <= 1.5
        assert r.answer("How much time is left?").text == "You have no timers running."

        heard.clear()
        fired.clear()
        assert r.answer("Set a timer for 1 second").status == "ok"
        assert r.answer("Cancel the timer").text == "Cancelled your 1 second timer."
        assert not fired.wait(1.5), heard
        assert r.answer("cancel the timer").text == "You have no timers running."
    finally:
        r.close()


def test_timers_are_bounded_and_close_cancels_them():
    heard = []
    r = SkillRunner(ALL, "", 1.0, 2, heard.append, max_timers=3)
    for n in range(3):
        assert r.answer(f"set a timer for {n + 1} seconds").text.startswith("OK")
    assert r.answer("set a timer for 10 seconds").text == "You already have 3 timers running. Cancel one first."
    assert r.answer("set a timer for 48 hours").text.startswith("I can set timers from 1 second up to 24 hours")
    assert r.answer("how much time is left").text.startswith("Your 1 second timer has")
    r.close()
    time.sleep(1.3)
    assert heard == []


def test_announce_that_raises_does_not_stop_later_timers():
    heard = []

    def announce(text):
        heard.append(text)
        if len(heard) == 1:
            raise RuntimeError("output gone")

    r = SkillRunner(ALL, "", 1.0, 2, announce)
    try:
        r.answer("set a timer for 1 second")
        r.answer("set a timer for 2 seconds")
        deadline = time.monotonic() + 3
        while len(heard) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert heard == ["Your 1 second timer is done.", "Your 2 second timer is done."]
    finally:
        r.close()


# -- faults: raise, hang, exhaustion ---------------------------------------------------------
def test_raising_skill_gives_friendly_degraded_answer():
    r = SkillRunner(ALL + ",raising", "", 1.0, 2)
    r.register(RaisingSkill())
    try:
        for _ in range(20):
            result = r.run(SkillCall("raising"))
            assert (result.text, result.status, result.degraded) == (FRIENDLY_ERROR, "error", True)
            assert "RuntimeError: boom" in result.error
        assert r.answer("what time is it").status == "ok"
        assert r.call_tool("raising", {}) == "error: RuntimeError: boom"
    finally:
        r.close()


def test_hanging_skill_never_blocks_later_requests():
    hang = HangingSkill()
    r = SkillRunner(ALL + ",hanging", "", 0.2, 2)
    r.register(hang.skill)
    try:
        for i in range(5):
            t0 = time.monotonic()
            result = r.run(SkillCall("hanging"))
            took = time.monotonic() - t0
            assert took < 0.3, f"hang #{i + 1} took {took:.3f} s"
            assert result.degraded and result.text in (FRIENDLY_TIMEOUT, FRIENDLY_UNAVAILABLE), result
        assert hang.entered == 1  # after the first hang the skill is refused at once, not run again
        t0 = time.monotonic()
        result = r.answer("What time is it?")
        assert time.monotonic() - t0 < 0.2
        assert result.status == "ok" and re.fullmatch(r"It's \d{1,2}:\d{2} (AM|PM)\.", result.text), result
        assert r.stats()["pool"]["abandoned"] == 1
        assert "the hanging skill is not responding" in r.answer("system status").text
        hang.release()
        deadline = time.monotonic() + 2
        while r.stats()["pool"]["stuck"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r.run(SkillCall("hanging")).text == "finally"  # recovered once the stuck call returned
    finally:
        hang.release()
        r.close()


def test_twenty_hangs_in_a_row_then_a_normal_question():
    hang = HangingSkill()
    r = SkillRunner(ALL + ",hanging", "", 0.2, 4)
    r.register(hang.skill)
    try:
        for _ in range(20):
            t0 = time.monotonic()
            assert r.run(SkillCall("hanging")).degraded
            assert time.monotonic() - t0 < 0.3
        assert r.answer("what day is it").status == "ok"
        assert r.stats()["pool"]["threads"] <= 4 + 8
    finally:
        hang.release()
        r.close()


def test_many_distinct_hung_skills_fail_fast_with_bounded_threads():
    hangs = [HangingSkill(f"hang{i}") for i in range(8)]
    r = SkillRunner(ALL + "," + ",".join(h.skill.name for h in hangs), "", 0.2, 2)  # max_abandoned = 4
    for h in hangs:
        r.register(h.skill)
    threads_before = len(skill_threads())
    try:
        statuses = []
        for h in hangs:
            t0 = time.monotonic()
            result = r.run(SkillCall(h.skill.name))
            assert time.monotonic() - t0 < 0.3
            assert result.degraded
            statuses.append(result.status)
        # 4 abandoned + 2 stuck in their slots; the last two never got a thread
        assert statuses == ["timeout"] * 6 + ["busy"] * 2, statuses
        assert len(skill_threads()) - threads_before <= 2 + 4
        assert r.stats()["pool"]["threads"] == 6
        t0 = time.monotonic()
        busy = r.answer("what time is it")
        assert time.monotonic() - t0 < 0.05 and busy.text == FRIENDLY_BUSY and busy.degraded
        for h in hangs:
            h.release()
        deadline = time.monotonic() + 2
        while r.stats()["pool"]["stuck"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r.answer("what time is it").status == "ok"
    finally:
        for h in hangs:
            h.release()
        r.close()


def test_concurrent_calls_of_a_healthy_skill_all_answer():
    def slow(args):
        time.sleep(0.05)
        return f"done {args['n']}"

    r = SkillRunner(ALL + ",slow", "", 1.0, 4)
    r.register(Skill("slow", slow))
    results = []
    try:
        threads = [threading.Thread(target=lambda n=n: results.append(r.run(SkillCall("slow", {"n": n}))))
                   for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(2)
        assert sorted(x.text for x in results) == [f"done {n}" for n in range(4)]
        assert r.stats()["pool"]["threads"] <= 4
    finally:
        r.close()


def test_close_returns_at_once_with_hung_threads():
    hang = HangingSkill()
    r = SkillRunner(ALL + ",hanging", "", 0.1, 2, lambda text: None)
    r.register(hang.skill)
    try:
        r.answer("set a timer for 1 hour")
        assert r.run(SkillCall("hanging")).status == "timeout"
        t0 = time.monotonic()
        r.close()
        assert time.monotonic() - t0 < 0.2
        assert r.timers.active() == []
        after = r.answer("what time is it")
        assert after.degraded and after.status == "closed"
    finally:
        hang.release()


# -- policy: allow-list and enrolled speakers ------------------------------------------------
def test_enrolled_only_refuses_unknown_and_accepts_alice():
    r = SkillRunner(ALL, "timer, status", 1.0, 2)
    try:
        refused = r.answer("Set a timer for 5 minutes", "unknown")
        assert refused.text == "Sorry, only enrolled users can use timers."
        assert refused.status == "refused" and not refused.degraded
        assert r.answer("system status", "").status == "refused"
        assert r.answer("Set a timer for 5 minutes", "alice").text == "OK, 5 minute timer started."
        assert r.answer("what time is it", "unknown").status == "ok"
        assert r.call_tool("timer", {"action": "remaining"}, "unknown") == "Sorry, only enrolled users can use timers."
        # Tools offered to an LLM are bound to the request's speaker: the same rule holds.
        assert r.for_speaker("unknown").call_tool("timer", {"action": "remaining"}).startswith("Sorry, only enrolled")
        assert not r.for_speaker("alice").call_tool("timer", {"action": "remaining"}).startswith("Sorry")
        assert r.for_speaker("alice").tool_specs() == r.tool_specs()
    finally:
        r.close()


def test_skill_not_allowed_is_refused_politely():
    r = SkillRunner("time", "", 1.0, 2)
    try:
        result = r.answer("Set a timer for five minutes")
        assert (result.text, result.status, result.degraded) == (FRIENDLY_NOT_ALLOWED, "refused", False)
        assert r.answer("What is the capital of France?") is None
        assert [s["function"]["name"] for s in r.tool_specs()] == ["time"]
        assert r.call_tool("timer", {"action": "set", "seconds": 5}).startswith("error: there is no tool")
    finally:
        r.close()


# -- construction, tools, extra skills -------------------------------------------------------
def test_from_config_and_tools():
    cfg = Config().replace("skills", timeout_s=0.2, pool_size=2)
    hang = HangingSkill()
    with SkillRunner.from_config(cfg) as r:
        assert r.allowed == ["time", "date", "timer", "status", "capabilities"] and r.timeout_s == 0.2
        specs = r.tool_specs()
        assert [s["function"]["name"] for s in specs] == ["time", "date", "timer", "status"]
        for spec in specs:
            assert spec["type"] == "function" and spec["function"]["parameters"]["type"] == "object"
        assert re.fullmatch(r"It's \d{1,2}:\d{2} (AM|PM)\.", r.call_tool("time", {}))
        assert r.call_tool("date", '{"offset_days": 1}').startswith("Tomorrow is ")
        assert r.call_tool("timer", {"action": "set", "seconds": "90"}) == "OK, 1 minute 30 second timer started."
        assert r.call_tool("date", "{not json") == "error: the arguments are not valid JSON"
        assert r.call_tool("date", {"offset_days": "soon"}).startswith("error: ValueError")
        r.allowed.append("hanging")
        r.register(hang.skill)
        t0 = time.monotonic()
        assert r.call_tool("hanging", {}) == "error: the hanging skill did not answer within 0.2 s"
        assert time.monotonic() - t0 < 0.3
        hang.release()
    assert SkillRunner.from_config(SkillsConfig(allowed="date")).allowed == ["date"]


def test_extra_skill_with_its_own_matcher():
    def opening_hours(args):
        return "We are open from 9 AM to 5 PM."

    r = SkillRunner(ALL + ",hours")
    r.register(Skill("hours", opening_hours, summary="tell you our opening hours",
                     match=lambda text: {} if text in ("when are you open", "what are your opening hours") else None))
    try:
        assert r.answer("When are you open?").text == "We are open from 9 AM to 5 PM."
        assert r.answer("What time is it?").skill == "time"
        assert "tell you our opening hours" in r.describe()
        assert route("When are you open?") is None  # the pure router knows only the built-ins
    finally:
        r.close()
