"""Skills as LLM tools, for any model: prompt, grammar-constrained reply, decoding, the tool round.

llama.cpp's own tool support (``--jinja``) parses only the formats it recognises in a
model's chat template and ignores ``tools`` for the rest (SmolLM2's among them), so Vigil
does it itself, as llama.cpp's old "generic" format did: the tools are listed at the end of
the system prompt and the reply is constrained by a grammar to
``{"tool_call":{"name":...,"arguments":{...}}}`` or ``{"response":"..."}`` -- compact JSON
without optional whitespace where the tool schemas are flat (skills' are; SmolLM2 then
needs 24 tokens for a call instead of 37), else llama.cpp's JSON-schema grammar.
:class:`ToolReply` decodes the reply as it streams, so a response's text reaches the person
token by token. After the tool results (``role: "tool"``) the reply may only be a response:
one tool round per turn, as a kiosk's latency budget allows.

Used by ``serve-llm`` (Ollama's ``tools`` / ``message.tool_calls`` over HTTP) and by
:class:`EmbeddedToolsLlm` (the embedded engine with ``[llm] tools = true``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from engines.llm import StreamResult

log = logging.getLogger("vigil.llm")

TOOL_PREFIX = "tool:"  # StreamResult.error of a turn whose tool failed
MAX_TOOL_CALLS = 3  # per turn; more are ignored

TOOL_PROMPT = (
    "\n\nTools you can call:\n{specs}\n\n"
    'Reply in JSON. To call a tool: {{"tool_call": {{"name": ..., "arguments": {{...}}}}}}. '
    'To answer: {{"response": ...}}, using the tool result when there is one.'
)


def parse_tools(raw: Any) -> list[dict[str, Any]]:
    """The ``function`` parts of Ollama/OpenAI tool specs; ValueError when malformed."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("tools must be a list")
    out: list[dict[str, Any]] = []
    for item in raw:
        fn = item.get("function") if isinstance(item, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError("each tool must be {\"type\": \"function\", \"function\": {\"name\": ...}}")
        params = fn.get("parameters")
        if not isinstance(params, dict) or params.get("type") != "object":
            params = {"type": "object", "properties": {}}
        out.append({"name": fn["name"], "description": str(fn.get("description") or ""), "parameters": params})
    return out


def tool_reply_schema(tools: list[dict[str, Any]], answer_only: bool) -> dict[str, Any]:
    response = {"type": "object", "properties": {"response": {"type": "string", "minLength": 1}},
                "required": ["response"]}
    if answer_only or not tools:
        return response
    calls = [{"type": "object", "properties": {"name": {"const": t["name"]}, "arguments": t["parameters"]},
              "required": ["name", "arguments"]} for t in tools]
    call = {"type": "object", "properties": {"tool_call": calls[0] if len(calls) == 1 else {"anyOf": calls}},
            "required": ["tool_call"]}
    return {"anyOf": [call, response]}


# A compact grammar (no optional whitespace) where the schemas are simple -- flat objects of
# strings, integers, numbers, booleans and enums, as skills have: the pretty-printing that
# llama.cpp's JSON-schema grammar allows costs a small model ~2.5x the tokens for a call.
_GBNF_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )'
_GBNF_BASE = {
    "char": _GBNF_CHAR,
    "jstring": r'"\"" char* "\""',
    "jinteger": r'"-"? ( "0" | [1-9] [0-9]{0,15} )',
    "jnumber": r'jinteger ( "." [0-9]{1,16} )?',
    "jboolean": r'"true" | "false"',
}


def _lit(text: str) -> str:
    """A GBNF string literal for ``text``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _value_rule(schema: Any) -> str | None:
    if not isinstance(schema, dict):
        return None
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return "( " + " | ".join(_lit(json.dumps(v, ensure_ascii=False)) for v in schema["enum"]) + " )"
    kind = schema.get("type")
    return {"string": "jstring", "integer": "jinteger", "number": "jnumber", "boolean": "jboolean"}.get(kind)


def _object_rule(schema: dict[str, Any]) -> str | None:
    props = schema.get("properties") or {}
    if not isinstance(props, dict):
        return None
    required = [k for k in (schema.get("required") or []) if k in props]
    items: dict[str, str] = {}
    for key, sub in props.items():
        rule = _value_rule(sub)
        if rule is None:
            return None  # nested or unusual: the JSON-schema grammar handles it
        items[key] = _lit(json.dumps(key) + ":") + " " + rule
    optional = [k for k in props if k not in required]
    if required:
        body = " ".join([items[required[0]]] + [f'"," {items[k]}' for k in required[1:]]
                        + [f'( "," {items[k]} )?' for k in optional])
        return f'"{{" {body} "}}"'
    if not optional:
        return '"{}"'
    alts = [" ".join([items[k]] + [f'( "," {items[o]} )?' for o in optional[i + 1:]]) for i, k in enumerate(optional)]
    return '"{" ( ' + " | ".join(f"( {a} )" for a in alts) + ' )? "}"'


def tool_reply_grammar(tools: list[dict[str, Any]], answer_only: bool) -> str | None:
    """GBNF for the reply (compact JSON), or None when a tool's schema is too complex for it."""
    response = _lit('{"response":"') + " char+ " + _lit('"}')
    alts = []
    if not answer_only:
        for t in tools:
            args = _object_rule(t["parameters"])
            if args is None:
                return None
            alts.append(_lit('{"tool_call":{"name":' + json.dumps(t["name"]) + ',"arguments":') + " " + args + ' "}}"')
    alts.append(response)
    return _gbnf(" | ".join(f"( {a} )" for a in alts))


def _gbnf(root: str) -> str:
    rules = {"root": root, **_GBNF_BASE}
    return "\n".join(f"{name} ::= {rule}" for name, rule in rules.items()) + "\n"


def json_constraint(schema: dict[str, Any]) -> dict[str, Any]:
    """The llama.cpp request fields that make a reply JSON following ``schema`` (a structured
    output, e.g. Ollama's ``format``): the compact grammar above for a flat object, else
    llama.cpp's own JSON-schema grammar (which refuses a schema it cannot follow)."""
    flat = schema.get("type") == "object" and isinstance(schema.get("properties"), dict) and schema["properties"]
    rule = _object_rule(schema) if flat else None
    if rule is not None:
        return {"grammar": _gbnf(rule)}
    return {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}


def tool_reply_constraint(tools: list[dict[str, Any]], answer_only: bool) -> dict[str, Any]:
    """``{"grammar": GBNF}`` (compact) when the schemas allow, else the JSON schema."""
    grammar = tool_reply_grammar(tools, answer_only)
    return {"grammar": grammar} if grammar is not None else tool_reply_schema(tools, answer_only)


def _tool_call_json(call: Any) -> dict[str, Any] | None:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict):
        return None
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            pass
    return {"name": str(fn.get("name") or ""), "arguments": args if args is not None else {}}


def chat_messages(raw: list[dict[str, Any]], tools: list[dict[str, Any]]) -> tuple[list[dict[str, str]], bool]:
    """Ollama chat messages -> plain role/content messages for the model.

    Assistant ``tool_calls`` become the JSON the model emitted, tool results stay ``tool``
    messages (named), and with ``tools`` the tool list is appended to the system prompt.
    Returns (messages, answer_only): answer_only when the last message is a tool result.
    """
    out: list[dict[str, str]] = []
    for m in raw:
        role = str(m.get("role", "user"))
        content = str(m.get("content") or "")
        calls = m.get("tool_calls")
        if role == "assistant" and isinstance(calls, list) and calls:
            parts = [json.dumps({"tool_call": c}) for c in map(_tool_call_json, calls) if c is not None]
            content = "\n".join(([content] if content.strip() else []) + parts)
        elif role == "tool":
            name = str(m.get("tool_name") or m.get("name") or "").strip()
            content = f"{name} result: {content}" if name else content
        out.append({"role": role, "content": content})
    answer_only = bool(out) and out[-1]["role"] == "tool"
    if tools:
        specs = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        extra = TOOL_PROMPT.format(specs=specs)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + extra}
        else:
            out.insert(0, {"role": "system", "content": extra.lstrip()})
    return out, answer_only


class ToolReply:
    """Decodes the constrained JSON reply as it streams.

    ``feed(piece)`` returns the text of a ``{"response": "..."}`` decoded so far (to stream
    at once); ``tool_calls()`` gives Ollama ``tool_calls`` once the reply is complete.
    """

    _HEAD = re.compile(r'\s*\{\s*"(response|tool_calls?)"\s*:\s*', re.S)
    _ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}

    def __init__(self) -> None:
        self.buf = ""
        self.mode: str | None = None
        self.pos = 0
        self.opened = False
        self.closed = False
        self.text = ""

    def feed(self, piece: str) -> str:
        self.buf += piece
        if self.mode is None:
            m = self._HEAD.match(self.buf)
            if m is None:
                return ""
            self.mode, self.pos = m.group(1), m.end()
        if self.mode != "response" or self.closed:
            return ""
        buf, i, out = self.buf, self.pos, []
        if not self.opened:
            while i < len(buf) and buf[i].isspace():
                i += 1
            if i >= len(buf):
                self.pos = i
                return ""
            if buf[i] != '"':
                self.closed = True
                return ""
            self.opened, i = True, i + 1
        while i < len(buf):
            c = buf[i]
            if c == "\\":
                if i + 1 >= len(buf):
                    break
                e = buf[i + 1]
                if e == "u":
                    if i + 6 > len(buf):
                        break
                    code = int(buf[i + 2:i + 6], 16)
                    if 0xD800 <= code < 0xDC00:  # a surrogate pair: wait for its second half
                        if i + 12 > len(buf):
                            break
                        low = int(buf[i + 8:i + 12], 16) if buf[i + 6:i + 8] == "\\u" else 0xDC00
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                    out.append(chr(code))
                    i += 6
                else:
                    out.append(self._ESCAPES.get(e, e))
                    i += 2
            elif c == '"':
                self.closed = True
                i += 1
                break
            else:
                out.append(c)
                i += 1
        self.pos = i
        text = "".join(out)
        self.text += text
        return text

    def _parsed(self) -> Any:
        try:
            return json.loads(self.buf)
        except json.JSONDecodeError:
            return None

    def tool_calls(self) -> list[dict[str, Any]]:
        obj = self._parsed()
        if not isinstance(obj, dict):
            return []
        raw = obj.get("tool_calls") if isinstance(obj.get("tool_calls"), list) else [obj.get("tool_call")]
        calls = []
        for c in raw:
            if isinstance(c, dict) and isinstance(c.get("name"), str) and c["name"]:
                args = c.get("arguments")
                calls.append({"function": {"name": c["name"], "arguments": args if isinstance(args, dict) else {}}})
        return calls

    def leftover_text(self) -> str:
        """Content to send at the end when nothing streamed (a reply that was not the expected JSON)."""
        if self.mode is not None:
            return ""
        obj = self._parsed()
        if isinstance(obj, dict) and isinstance(obj.get("response"), str):
            return obj["response"]
        return "" if isinstance(obj, dict) else self.buf.strip()


def constraint_sampling(constraint: dict[str, Any]) -> dict[str, Any]:
    """The llama.cpp request fields for :func:`tool_reply_constraint`'s result."""
    if "grammar" in constraint:
        return {"grammar": constraint["grammar"]}
    return {"response_format": {"type": "json_schema", "json_schema": {"schema": constraint}}}


def run_tool_calls(toolbox: Any, calls: list[dict[str, Any]], tool_log: list[dict[str, Any]]
                   ) -> tuple[list[dict[str, Any]], list[str]]:
    """Run ``calls`` ({"name", "arguments"}) with ``toolbox.call_tool`` (the skill's deadline).

    Returns the messages to append (the assistant's calls, then one ``tool`` message each)
    and the failures ("name: why"). Appends to ``tool_log`` (kept short). Never raises.
    """
    calls = calls[:MAX_TOOL_CALLS]
    messages: list[dict[str, Any]] = [{"role": "assistant", "content": "",
                                       "tool_calls": [{"function": c} for c in calls]}]
    failures: list[str] = []
    for call in calls:
        t0 = time.perf_counter()
        try:  # SkillRunner.call_tool never raises; another toolbox might
            output = str(toolbox.call_tool(call["name"], call["arguments"]))
        except Exception as exc:
            output = f"error: {type(exc).__name__}: {exc}"
        tool_log.append({"name": call["name"], "arguments": call["arguments"], "result": output,
                         "ms": round((time.perf_counter() - t0) * 1000.0, 1)})
        del tool_log[:-32]
        if output.startswith("error:"):
            failures.append(f"{call['name']}: {output[len('error:'):].strip()}")
        messages.append({"role": "tool", "content": output, "tool_name": call["name"]})
    if failures:
        log.warning("tool call failed: %s", "; ".join(failures))
    return messages, failures


class EmbeddedToolsLlm:
    """The embedded engine with skills offered as tools (``[llm] tools = true``).

    Same contract as the engine it wraps (``stream()`` never raises, ``on_token`` returning
    True cancels); the tool round happens inside ``stream()``, so the worker's deadlines and
    cancellation cover it. A failed tool ends the turn with ``finish_reason="error"``
    (``tool:``): the worker then streams its friendly answer.
    """

    name = "embedded"

    def __init__(self, engine: Any, toolbox: Any) -> None:
        self.engine = engine
        self.toolbox = toolbox
        self.tool_log: list[dict[str, Any]] = []

    def __getattr__(self, item: str) -> Any:  # model_path, load_ms, ... of the wrapped engine
        return getattr(self.engine, item)

    def _tools(self) -> list[dict[str, Any]]:
        return parse_tools(self.toolbox.tool_specs()) if self.toolbox is not None else []

    def warm(self, system_prompt: str) -> None:
        """Cache the system prompt with the tool list (the stable prefix of every request)."""
        self.stream([{"role": "system", "content": system_prompt}, {"role": "user", "content": "hi"}],
                    lambda _t: False, max_tokens=1)

    def _once(self, messages: list[dict], tools: list[dict[str, Any]], answer_only: bool,
              on_token: Callable[[str], bool], max_tokens: int, t0: float,
              state: dict) -> tuple[StreamResult, ToolReply]:
        msgs, _ = chat_messages(messages, tools)
        reply = ToolReply()

        def tok(piece: str) -> bool:
            text = reply.feed(piece)
            if not text:
                return False
            if state["first"] is None:
                state["first"] = (time.perf_counter() - t0) * 1000.0
            return on_token(text)

        sampling = constraint_sampling(tool_reply_constraint(tools, answer_only))
        return self.engine.stream(msgs, tok, max_tokens=max_tokens, sampling=sampling), reply

    def stream(self, messages: list[dict], on_token: Callable[[str], bool], max_tokens: int = 96) -> StreamResult:
        tools = self._tools()
        if not tools:
            return self.engine.stream(messages, on_token, max_tokens=max_tokens)
        t0 = time.perf_counter()
        state: dict[str, Any] = {"first": None}

        def result(r: StreamResult, text: str, n: int, **kw: Any) -> StreamResult:
            return StreamResult(text=text, n_tokens=n, finish_reason=kw.get("finish", r.finish_reason),
                                first_token_ms=state["first"], total_ms=(time.perf_counter() - t0) * 1000.0,
                                error=kw.get("error", r.error), prompt_tokens=r.prompt_tokens)

        r1, reply = self._once(messages, tools, False, on_token, max_tokens, t0, state)
        calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in reply.tool_calls()]
        if r1.finish_reason != "stop" or not calls:
            return result(r1, reply.text, r1.n_tokens)
        added, failures = run_tool_calls(self.toolbox, calls, self.tool_log)
        if failures:
            return result(r1, "", r1.n_tokens, finish="error", error=f"{TOOL_PREFIX} {'; '.join(failures)}")
        r2, reply2 = self._once(list(messages) + added, tools, True, on_token, max_tokens, t0, state)
        return result(r2, reply2.text, r1.n_tokens + r2.n_tokens)


def with_tools(engine: Any, toolbox: Any) -> Any:
    """``engine`` offering ``toolbox``'s skills as tools: ollama natively, embedded wrapped."""
    if hasattr(engine, "use_tools"):
        engine.use_tools(toolbox)
        return engine
    if getattr(engine, "name", "") == "embedded":
        return EmbeddedToolsLlm(engine, toolbox)
    return engine
