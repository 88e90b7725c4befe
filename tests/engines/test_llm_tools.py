"""Skills offered to the LLM as tools: serve-llm's ``tools``, the ollama engine's tool loop and
the embedded engine's (``workers/llm_tools.py``).

Real components: ``serve-llm`` (``tools.serve_llm.serve``) on a loopback port with the
embedded SmolLM2-135M, the official ``ollama`` client inside ``OllamaLlm``, the embedded
engine in process, the real ``SkillRunner`` (bounded pool, per-skill deadline) and, for the
failure cases, the LLM worker's own answer path (``workers.llm.answer``) with real rings and
heartbeat, and its real ``run()``. The only doubles are skills that inject a fault, named
``...SkillDouble``.

What the default model can and cannot do (measured): the reply is grammar-constrained, so
SmolLM2-135M emits well-formed tool calls, and with the time tool offered it calls it for
"what time is it"; but among several tools its choice is near chance, and it is too small
to *use* a tool result -- its follow-up answer does not repeat the time. No tool-capable
instruct gguf is shipped by a PyPI package (checked: only SmolLM2-135M and the *base*
Gemma 3 270M), so the test that the final answer contains the skill's time needs a model
given by path in ``VIGIL_TOOL_MODEL`` (e.g. Qwen2.5-0.5B-Instruct Q4_K_M, ~400 MB) and is
skipped otherwise. Measured numbers are printed (run with ``-s``).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import ollama
import pytest

from core.config import load_config
from tools.serve_llm import (ToolReply, chat_messages, parse_tools, tool_reply_constraint, tool_reply_grammar,
                                tool_reply_schema)
from skills import SkillRunner
from skills.types import Skill
from workers import llm as llm_worker
from engines.llm.embedded import EmbeddedLlm
from engines.llm.tools import TOOL_PREFIX, EmbeddedToolsLlm, with_tools
from engines.llm.ollama import DEFAULT_MODEL, OllamaLlm

from tests.workers.test_llm_failures import WorkerHarness, worker_config

CONFIG = load_config(environ={})
SYSTEM = CONFIG.llm.system_prompt
OPTIONS = {"temperature": 0.0, "repeat_penalty": 1.2}
CLOCK = datetime(2026, 3, 14, 3, 47)  # the time skill then says "It's 3:47 AM."
SKILL_TIME = "3:47"
SKILL_TIMEOUT_S = 0.5
FRIENDLY = llm_worker.FRIENDLY_FAILURE
REPEATS = 3
NESTED = [{"name": "lights", "description": "Switch lights.",
           "parameters": {"type": "object", "properties": {"where": {"type": "object", "properties": {
               "room": {"type": "string"}}, "required": ["room"]}}, "required": ["where"]}}]


def ask(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def runner(**kwargs) -> SkillRunner:
    return SkillRunner(timeout_s=SKILL_TIMEOUT_S, pool_size=2, clock=lambda: CLOCK, **kwargs)


@pytest.fixture()
def skills():
    r = runner()
    yield r
    r.close()


@pytest.fixture()
def tool_engine(serve_llm):
    only_time = runner(allowed="time")  # SmolLM2-135M's tool choice among several is near chance
    eng = OllamaLlm(host=serve_llm.url, model=DEFAULT_MODEL, timeout_s=20.0, options=OPTIONS)
    eng.use_tools(only_time)
    eng.warm(SYSTEM)
    assert eng.warm_error is None, eng.warm_error
    yield eng
    eng.close()
    only_time.close()


# ---------------------------------------------------------------- the protocol pieces


def test_tool_reply_decodes_a_streamed_response_piece_by_piece() -> None:
    raw = '{\n  "response": "It\'s 3:47 \\"AM\\".\\nCaf\\u00e9 \\ud83d\\ude00 ok" }'
    reply, out = ToolReply(), []
    for i in range(0, len(raw), 3):  # any split, even inside an escape
        out.append(reply.feed(raw[i:i + 3]))
    assert "".join(out) == 'It\'s 3:47 "AM".\nCafé \U0001F600 ok'
    assert reply.tool_calls() == []
    call = ToolReply()
    for piece in ['{"tool', '_call": {"name": "ti', 'me", "arguments": {}}}']:
        assert call.feed(piece) == ""  # nothing of a call is streamed as text
    assert call.tool_calls() == [{"function": {"name": "time", "arguments": {}}}]


def test_tool_messages_and_schema(skills) -> None:
    tools = parse_tools(skills.tool_specs())
    assert {t["name"] for t in tools} == {"time", "date", "timer", "status"}
    msgs, answer_only = chat_messages(ask("what time is it"), tools)
    assert not answer_only and '"name": "time"' in msgs[0]["content"] and msgs[0]["content"].startswith(SYSTEM)
    history = ask("what time is it") + [
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "time", "arguments": {}}}]},
        {"role": "tool", "content": "It's 3:47 AM.", "tool_name": "time"}]
    msgs, answer_only = chat_messages(history, tools)
    assert answer_only
    assert msgs[2] == {"role": "assistant", "content": '{"tool_call": {"name": "time", "arguments": {}}}'}
    assert msgs[3] == {"role": "tool", "content": "time result: It's 3:47 AM."}
    assert list(tool_reply_schema(tools, True)["properties"]) == ["response"]  # after a result: answer only
    assert len(tool_reply_schema(tools, False)["anyOf"]) == 2
    with pytest.raises(ValueError):
        parse_tools([{"type": "function"}])
    # flat skill schemas get the compact grammar; a nested one falls back to the JSON schema
    grammar = tool_reply_constraint(tools, False)["grammar"]
    assert '\\"remaining\\"' in grammar and "jinteger" in grammar and grammar.startswith("root ::= ")
    assert list(tool_reply_constraint(tools, True)) == ["grammar"]
    assert tool_reply_grammar(NESTED, False) is None
    assert "anyOf" in tool_reply_constraint(NESTED, False)


# ---------------------------------------------------------------- serve-llm with a real model


def test_serve_llm_answers_what_time_with_an_ollama_tool_call(serve_llm, skills) -> None:
    before = dict(serve_llm.stats)
    # All the skills offered: the grammar guarantees a well-formed call of an offered tool (which
    # one is the model's judgement -- SmolLM2-135M often picks "date" for the time).
    body = {"model": DEFAULT_MODEL, "messages": ask("what time is it"), "tools": skills.tool_specs(),
            "stream": False, "options": {**OPTIONS, "num_predict": 48}}
    r = httpx.post(serve_llm.url + "/api/chat", json=body, timeout=60)
    assert r.status_code == 200, r.text
    message = r.json()["message"]
    assert len(message["tool_calls"]) == 1, message
    fn = message["tool_calls"][0]["function"]
    assert fn["name"] in {"time", "date", "timer", "status"} and isinstance(fn["arguments"], dict), message
    if fn["name"] == "timer":  # its schema requires "action"
        assert fn["arguments"].get("action") in ("set", "cancel", "remaining"), fn
    # A kiosk offering only the time tool, through the official client, streamed: the call
    # arrives as message.tool_calls.
    only_time = runner(allowed="time")
    client = ollama.Client(host=serve_llm.url, timeout=60)
    calls, content = [], []
    for chunk in client.chat(model=DEFAULT_MODEL, messages=ask("What time is it?"), tools=only_time.tool_specs(),
                             stream=True, options={**OPTIONS, "num_predict": 48}):
        calls.extend(chunk.message.tool_calls or [])
        content.append(chunk.message.content or "")
    only_time.close()
    assert [c.function.name for c in calls] == ["time"], (calls, content)
    # A nested schema goes through llama.cpp's JSON-schema grammar: still a well-formed reply.
    nested = [{"type": "function", "function": NESTED[0]}]
    r = httpx.post(serve_llm.url + "/api/chat", json={**body, "messages": ask("turn on the kitchen lights"),
                                                      "tools": nested}, timeout=60)
    assert r.status_code == 200, r.text
    message = r.json()["message"]
    if message.get("tool_calls"):
        assert message["tool_calls"][0]["function"]["name"] == "lights"
        assert isinstance(message["tool_calls"][0]["function"]["arguments"]["where"]["room"], str), message
    else:
        assert message["content"].strip(), message
    assert "".join(content) == ""  # the JSON of the call is not leaked as text
    assert serve_llm.stats["tool_requests"] - before["tool_requests"] == 3
    assert serve_llm.stats["tool_calls"] - before["tool_calls"] in (2, 3)
    bad = httpx.post(serve_llm.url + "/api/chat", json={**body, "tools": [{"type": "function"}]}, timeout=10)
    assert bad.status_code == 400 and "tool" in bad.json()["error"]


def test_with_tools_disabled_no_tools_are_sent(serve_llm) -> None:
    assert CONFIG.llm.tools is False  # off by default
    assert load_config(environ={"VIGIL_LLM__TOOLS": "true"}).llm.tools is True
    eng = OllamaLlm(host=serve_llm.url, model=DEFAULT_MODEL, timeout_s=20.0, options=OPTIONS)
    try:
        before = dict(serve_llm.stats)
        r = eng.stream(ask("What is the capital of France?"), lambda _t: False, max_tokens=32)
        assert r.finish_reason in ("stop", "length") and "Paris" in r.text, r
        assert serve_llm.stats["requests"] - before["requests"] == 1
        assert serve_llm.stats["tool_requests"] == before["tool_requests"]
        assert eng.tool_log == []
    finally:
        eng.close()


def test_ollama_tool_loop_runs_the_time_skill_and_streams_the_second_answer(tool_engine, serve_llm) -> None:
    before = dict(serve_llm.stats)
    tokens: list[str] = []
    t0 = time.perf_counter()
    r = tool_engine.stream(ask("what time is it"), lambda t: tokens.append(t) or False, max_tokens=48)
    tool_ms = (time.perf_counter() - t0) * 1000
    assert tool_engine.tool_log, "no tool was called"
    call = tool_engine.tool_log[-1]
    assert call["name"] == "time" and call["result"] == f"It's {SKILL_TIME} AM.", call
    assert call["ms"] < SKILL_TIMEOUT_S * 1000
    # two requests: the one that asked for the tool, the one with its result (both offered tools)
    assert serve_llm.stats["tool_requests"] - before["tool_requests"] == 2
    assert serve_llm.stats["tool_calls"] - before["tool_calls"] == 1
    assert r.finish_reason in ("stop", "length"), r
    assert "".join(tokens) == r.text  # whatever the second answer is, it streamed through on_token
    # Plain answer for comparison (same engine, tools off for this call).
    tool_engine.use_tools(None)
    t0 = time.perf_counter()
    plain = tool_engine.stream(ask("What is the capital of France?"), lambda _t: False, max_tokens=48)
    plain_ms = (time.perf_counter() - t0) * 1000
    print(f"\n[tools] tool-call answer {tool_ms:.0f} ms total (first token "
          f"{r.first_token_ms if r.first_token_ms is None else round(r.first_token_ms)} ms), "
          f"plain answer {plain_ms:.0f} ms (first token {plain.first_token_ms:.0f} ms); "
          f"second answer from SmolLM2-135M: {r.text!r}")


def test_embedded_engine_tool_loop_runs_the_time_skill(models) -> None:
    only_time = runner(allowed="time")
    base = EmbeddedLlm(models.llm, n_threads=1, repeat_penalty=1.2, temperature=0.0)
    eng = with_tools(base, only_time)
    assert isinstance(eng, EmbeddedToolsLlm) and eng.name == "embedded"
    try:
        eng.warm(SYSTEM)
        tokens: list[str] = []
        r = eng.stream(ask("what time is it"), lambda t: tokens.append(t) or False, max_tokens=48)
        print(f"\n[tools] embedded tool-call answer {r.total_ms:.0f} ms total (first token "
              f"{r.first_token_ms if r.first_token_ms is None else round(r.first_token_ms)} ms): {r.text!r}")
        call = eng.tool_log[-1]
        assert call["name"] == "time" and call["result"] == f"It's {SKILL_TIME} AM.", eng.tool_log
        assert r.finish_reason in ("stop", "length"), r
        assert "".join(tokens) == r.text and "{" not in r.text[:1]  # decoded text, not the JSON
        assert r.first_token_ms is None or 0 < r.first_token_ms <= r.total_ms
        # cancellation reaches the engine: a token callback returning True stops the answer
        eng.tool_log.clear()
        stopped = eng.stream(ask("what time is it"), lambda _t: True, max_tokens=48)
        assert stopped.finish_reason in ("cancelled", "stop"), stopped
        # a failing tool: finish "error" with the tool: prefix (the worker answers friendly)
        only_time.register(RaisingTimeSkillDouble().skill())
        failed = eng.stream(ask("what time is it"), lambda _t: False, max_tokens=48)
        assert failed.finish_reason == "error" and failed.error.startswith(TOOL_PREFIX), failed
        # tools off: the plain engine answers
        eng.toolbox = None
        plain = eng.stream(ask("What is the capital of France?"), lambda _t: False, max_tokens=48)
        assert "Paris" in plain.text, plain
        print(f"[tools] embedded plain answer {plain.total_ms:.0f} ms total "
              f"(first token {plain.first_token_ms:.0f} ms)")
    finally:
        only_time.close()


# ---------------------------------------------------------------- faulty skills through the worker


class RaisingTimeSkillDouble:
    """Fault injector: a "time" skill whose handler raises."""

    def __init__(self) -> None:
        self.calls = 0

    def skill(self) -> Skill:
        def handler(_args):
            self.calls += 1
            raise RuntimeError("clock exploded")
        return Skill("time", handler, summary="tell you the time", description="The current local time at this kiosk.")


class HangingTimeSkillDouble(RaisingTimeSkillDouble):
    """Fault injector: a "time" skill whose handler never returns (until released at teardown)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def skill(self) -> Skill:
        def handler(_args):
            self.calls += 1
            self.release.wait(60)
            return "too late"
        return Skill("time", handler, summary="tell you the time", description="The current local time at this kiosk.")


def set_tools(engine, toolbox) -> None:
    if isinstance(engine, EmbeddedToolsLlm):
        engine.toolbox = toolbox
    else:
        engine.use_tools(toolbox)


@pytest.mark.parametrize("kind", ["ollama", "embedded"])
@pytest.mark.parametrize("double_cls", [RaisingTimeSkillDouble, HangingTimeSkillDouble])
def test_failing_tool_gives_friendly_answer_within_deadline_then_next_request_works(double_cls, kind, serve_llm,
                                                                                   models):
    first_s, total_s = 6.0, 12.0  # room for a tool round of the 135M model on a busy 2-core box
    engine_cfg = {"host": serve_llm.url} if kind == "ollama" else {"engine": "embedded", "model": str(models.llm)}
    harness = WorkerHarness(worker_config(first_token_timeout_s=first_s, total_timeout_s=total_s, tools=True,
                                          **engine_cfg))
    double = double_cls()
    faulty = runner(allowed="time")
    faulty.register(double.skill())
    try:
        engine = with_tools(llm_worker.make_engine(harness.ctx.config), faulty)  # what run() does with [llm] tools
        assert isinstance(engine, EmbeddedToolsLlm if kind == "embedded" else OllamaLlm)
        engine.warm(SYSTEM)
        for i in range(REPEATS):
            t0 = time.monotonic()
            tokens, done, _ = harness.request(engine, "what time is it")  # skills=None: the LLM path
            elapsed = time.monotonic() - t0
            assert done.degraded and done.text == FRIENDLY, done
            assert "".join(t.text for t in tokens).strip() == FRIENDLY
            assert elapsed < first_s, elapsed
            call = engine.tool_log[-1]
            assert call["name"] == "time" and call["result"].startswith("error:"), call
            assert call["ms"] < (SKILL_TIMEOUT_S + 0.3) * 1000, call  # the skill deadline holds
            print(f"\n[tools] {kind} {double_cls.__name__} #{i + 1}: friendly answer in {elapsed * 1000:.0f} ms "
                  f"(tool {call['ms']:.0f} ms: {call['result']})")
        assert double.calls >= 1
        # The next request works: the real time skill is called and answers, no error.
        good = runner(allowed="time")
        set_tools(engine, good)
        _tokens, done, _ = harness.request(engine, "what time is it")
        assert done.finish_reason != "timeout", done
        assert engine.tool_log[-1]["result"] == f"It's {SKILL_TIME} AM.", engine.tool_log[-1]
        good.close()
        # And with tools off the worker answers a question normally.
        set_tools(engine, None)
        _tokens, done, _ = harness.request(engine, "What is the capital of France?")
        assert not done.degraded and "Paris" in done.text, done
    finally:
        if isinstance(double, HangingTimeSkillDouble):
            double.release.set()
        faulty.close()
        harness.close()


# ---------------------------------------------------------------- with a tool-capable model


@pytest.mark.skipif(not os.environ.get("VIGIL_TOOL_MODEL"),
                    reason="needs a tool-capable instruct gguf in VIGIL_TOOL_MODEL (none is shipped on PyPI; "
                           "SmolLM2-135M calls the tool but cannot phrase its result)")
def test_answer_contains_the_skill_time_with_a_tool_capable_model(skills) -> None:
    from tools.serve_llm import serve

    model = Path(os.environ["VIGIL_TOOL_MODEL"])
    box: dict = {}
    ready = threading.Event()
    thread = threading.Thread(target=serve, args=(CONFIG, "127.0.0.1", 0, model),
                              kwargs={"ready": lambda s: (box.update(server=s), ready.set())}, daemon=True)
    thread.start()
    assert ready.wait(120), "serve-llm did not start"
    eng = OllamaLlm(host=box["server"].url, model=DEFAULT_MODEL, timeout_s=60.0, options=OPTIONS)
    try:
        eng.use_tools(skills)
        eng.warm(SYSTEM)
        tokens: list[str] = []
        r = eng.stream(ask("what time is it"), lambda t: tokens.append(t) or False, max_tokens=48)
        assert eng.tool_log and eng.tool_log[-1]["name"] == "time", eng.tool_log
        assert SKILL_TIME in r.text and len(tokens) >= 1, r
    finally:
        eng.close()
        box["server"].stop()
        thread.join(10)


def _wait_for(pred, timeout_s: float = 60.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("tools_on", [True, False])
def test_worker_offers_tools_only_when_configured(tools_on, serve_llm) -> None:
    """The real worker loop (stopped at once): its warm-up request carries tools iff ``[llm] tools``."""
    harness = WorkerHarness(worker_config(host=serve_llm.url, tools=tools_on))
    try:
        before = dict(serve_llm.stats)
        harness.ctx.request_stop()  # setup() builds the engine, wires tools, starts warm-up; the loop returns
        llm_worker.LlmWorker(harness.ctx).run()
        assert _wait_for(lambda: serve_llm.stats["requests"] > before["requests"]), "no warm-up request"
        assert _wait_for(lambda: serve_llm.stats["active"] == 0)
        assert (serve_llm.stats["tool_requests"] - before["tool_requests"]) == (1 if tools_on else 0)
    finally:
        harness.close()
