"""What ``serve-llm`` accepts: Ollama and OpenAI request bodies checked and turned into one request.

Every body from the network goes through here before the model sees it, so a wrong type, an
absurd number or a hostile shape is a :class:`BadRequest` (an HTTP status and a message naming
the field), never an exception deep in llama.cpp or a dropped connection:

* JSON: an object, no ``NaN``/``Infinity``, at most :data:`MAX_DEPTH` levels deep (a
  100,000-deep array is refused by the parser's own recursion limit, caught here).
* Options (Ollama's ``options``, OpenAI's top-level sampling fields): each of the type Ollama
  documents, finite and in the range llama.cpp takes. Unknown option names are ignored, as
  Ollama does; known ones that llama.cpp here has no use for (``num_gpu``, ``num_ctx``, ...) are
  checked and ignored.
* Prompt size: all text of a request together at most :func:`max_prompt_chars` characters,
  a bound far above what the model's context holds in tokens, so an oversized prompt is refused
  in microseconds instead of being tokenised for seconds.
* ``format`` (Ollama) / ``response_format`` (OpenAI): ``"json"`` or a JSON schema, enforced
  by a grammar (:func:`engines.llm.tools.json_constraint`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from engines.llm.tools import chat_messages, json_constraint, parse_tools, tool_reply_constraint, tool_reply_schema

MAX_DEPTH = 64  # nesting of any request body: tool schemas need a handful of levels
MAX_STOP = 16  # stop sequences per request
MAX_STOP_CHARS = 256
MAX_EMBED_INPUTS = 256
DEFAULT_NUM_PREDICT = 256  # when the request sets none (Ollama's own default is unbounded)
MAX_NUM_PREDICT = 2048
CHARS_PER_TOKEN_BOUND = 32  # no tokenizer packs more characters than this into one token on average
ROLES = ("system", "user", "assistant", "tool")
_DURATION = re.compile(r"-?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+|-?\d+(\.\d+)?")


class BadRequest(ValueError):
    """A request the server answers with ``status`` and ``message`` (400 unless said otherwise)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ---- JSON ---------------------------------------------------------------------------------------

def _no_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not a JSON number")


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or BadRequest."""
    try:
        body = json.loads(raw or b"{}", parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if _depth(body) > MAX_DEPTH:
        raise BadRequest(f"the JSON body is nested more than {MAX_DEPTH} levels deep")
    return body


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (iterative: never recurses itself)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


# ---- field types --------------------------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _type_error(name: str, what: str, value: Any) -> BadRequest:
    shown = json.dumps(value)[:60] if not isinstance(value, str) else json.dumps(value[:60])
    return BadRequest(f"{name} must be {what}, got {shown}")


def _optional(body: dict[str, Any], name: str, kind: type, what: str) -> Any:
    """``body[name]`` when it is a ``kind`` (str or bool), None when absent, else BadRequest."""
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise _type_error(name, what, value)
    return value


def model_name(body: dict[str, Any]) -> str:
    """``model`` (or Ollama's older ``name``): a non-empty string."""
    name = body.get("model") if body.get("model") is not None else body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("model is required (a string)")
    return name.strip()


def stream_flag(body: dict[str, Any], default: bool) -> bool:
    value = _optional(body, "stream", bool, "true or false")
    return default if value is None else value


def check_keep_alive(body: dict[str, Any]) -> Any:
    """Ollama's ``keep_alive``: a duration ("5m", "1h30m", "-1") or a number of seconds. The model
    here never unloads, so the value only has to be well-formed; 0 means "unload" in replies."""
    value = body.get("keep_alive")
    if value is None or _is_number(value):
        return value
    if isinstance(value, str) and _DURATION.fullmatch(value.strip()):
        return value
    raise _type_error("keep_alive", 'a duration such as "5m" or a number of seconds', value)


def check_think(body: dict[str, Any], model: str) -> None:
    think = body.get("think")
    if think is None or think is False:
        return
    if think is True or isinstance(think, str):
        raise BadRequest(f'"{model}" does not support thinking')
    raise _type_error("think", "true, false or a level", think)


# ---- options ------------------------------------------------------------------------------------
# name -> (kind, low, high, passed on to llama.cpp under this name or None). Ranges are what
# llama.cpp takes (it refuses repeat_penalty <= 0 for one), generous otherwise.
_OPTIONS: dict[str, tuple[str, float | None, float | None, str | None]] = {
    "temperature": ("number", 0.0, 100.0, "temperature"),
    "top_p": ("number", 0.0, 1.0, "top_p"),
    "min_p": ("number", 0.0, 1.0, "min_p"),
    "typical_p": ("number", 0.0, 1.0, None),
    "tfs_z": ("number", 0.0, 100.0, None),
    "top_k": ("int", -1, 1 << 20, "top_k"),
    "repeat_penalty": ("number", 1e-6, 100.0, "repeat_penalty"),
    "presence_penalty": ("number", -100.0, 100.0, "presence_penalty"),
    "frequency_penalty": ("number", -100.0, 100.0, "frequency_penalty"),
    "repeat_last_n": ("int", -1, 1 << 20, None),
    "mirostat": ("int", 0, 2, None),
    "mirostat_tau": ("number", 0.0, 100.0, None),
    "mirostat_eta": ("number", 0.0, 100.0, None),
    "seed": ("int", -(1 << 63), (1 << 64) - 1, "seed"),
    "num_predict": ("int", -2, 1 << 31, None),
    "num_ctx": ("int", 1, 1 << 31, None),
    "num_keep": ("int", -1, 1 << 31, None),
    "num_batch": ("int", 1, 1 << 31, None),
    "num_gpu": ("int", -1, 1 << 20, None),
    "main_gpu": ("int", 0, 1 << 20, None),
    "num_thread": ("int", 0, 1 << 20, None),
    "numa": ("bool", None, None, None),
    "low_vram": ("bool", None, None, None),
    "f16_kv": ("bool", None, None, None),
    "logits_all": ("bool", None, None, None),
    "vocab_only": ("bool", None, None, None),
    "use_mmap": ("bool", None, None, None),
    "use_mlock": ("bool", None, None, None),
    "embedding_only": ("bool", None, None, None),
    "penalize_newline": ("bool", None, None, None),
    "stop": ("stop", None, None, "stop"),
}
_KIND_WORDS = {"number": "a number", "int": "an integer", "bool": "true or false"}


def _stop_list(name: str, value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise _type_error(name, "a string or a list of strings", value)
    if len(items) > MAX_STOP or any(len(s) > MAX_STOP_CHARS for s in items):
        raise BadRequest(f"{name}: at most {MAX_STOP} stop sequences of at most {MAX_STOP_CHARS} characters")
    return [s for s in items if s]


def check_option(name: str, value: Any, where: str = "options.") -> Any:
    """One known option, checked: its value as llama.cpp should get it."""
    kind, low, high, _ = _OPTIONS[name]
    label = where + name
    if kind == "stop":
        return _stop_list(label, value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _type_error(label, "true or false", value)
        return value
    if not (_is_int(value) if kind == "int" else _is_number(value)):
        raise _type_error(label, _KIND_WORDS[kind], value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadRequest(f"{label} must be between {low:g} and {high:g}, got {value}")
    if name == "seed":  # llama.cpp takes a 32-bit seed; a negative one means "random"
        return value % (1 << 32) if value >= 0 else 0xFFFFFFFF
    if name == "top_k":
        return max(0, value)
    return value


def sampling_options(options: Any) -> tuple[dict[str, Any], int]:
    """Ollama ``options`` -> (llama.cpp sampling fields, max tokens)."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise _type_error("options", "an object", options)
    sampling: dict[str, Any] = {}
    for name, value in options.items():
        if name not in _OPTIONS or value is None:
            continue  # unknown options are ignored, as Ollama does
        checked = check_option(name, value)
        target = _OPTIONS[name][3]
        if target is not None:
            sampling[target] = checked
    return sampling, max_tokens(options.get("num_predict"))


def max_tokens(num_predict: Any) -> int:
    """Ollama's num_predict (-1 unbounded, -2 fill the context) -> the tokens to allow here."""
    if num_predict is None:
        return DEFAULT_NUM_PREDICT
    if num_predict < 0:
        return MAX_NUM_PREDICT
    return max(1, min(int(num_predict), MAX_NUM_PREDICT))


# ---- the prompt ---------------------------------------------------------------------------------

def max_prompt_chars(n_ctx: int) -> int:
    return n_ctx * CHARS_PER_TOKEN_BOUND


def check_prompt_size(texts: list[str], n_ctx: int) -> None:
    total = sum(len(t) for t in texts)
    if total > max_prompt_chars(n_ctx):
        raise BadRequest(f"the prompt is too long: {total} characters, and the model's context holds "
                         f"{n_ctx} tokens (at most {max_prompt_chars(n_ctx)} characters are accepted)")


def _text_content(index: int, content: Any, openai: bool) -> str:
    """A message's content: a string, null, or (OpenAI) a list of text parts."""
    if content is None or isinstance(content, str):
        return content or ""
    if openai and isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise BadRequest(f"messages[{index}].content: only text parts are supported, got {kind!r}", 400)
            parts.append(part["text"])
        return "".join(parts)
    raise _type_error(f"messages[{index}].content", "a string", content)


def check_messages(raw: Any, openai: bool = False) -> list[dict[str, Any]]:
    """Chat messages checked and in Ollama's shape (OpenAI tool messages get their tool's name)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _type_error("messages", "a list", raw)
    call_names: dict[str, str] = {}
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise _type_error(f"messages[{i}]", "an object", m)
        role = m.get("role")
        if role == "developer" and openai:
            role = "system"
        if role not in ROLES:
            raise BadRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {json.dumps(role)[:40]}")
        if m.get("images"):
            raise BadRequest("this model does not support images")
        message: dict[str, Any] = {"role": role, "content": _text_content(i, m.get("content"), openai)}
        calls = m.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
                raise _type_error(f"messages[{i}].tool_calls", "a list of objects", calls)
            message["tool_calls"] = calls
            for c in calls:
                fn = c.get("function") if isinstance(c.get("function"), dict) else {}
                if isinstance(c.get("id"), str) and isinstance(fn.get("name"), str):
                    call_names[c["id"]] = fn["name"]
        name = m.get("tool_name", m.get("name"))
        if name is None and isinstance(m.get("tool_call_id"), str):
            name = call_names.get(m["tool_call_id"])
        if name is not None:
            if not isinstance(name, str):
                raise _type_error(f"messages[{i}].tool_name", "a string", name)
            message["tool_name"] = name
        out.append(message)
    return out


# ---- structured output --------------------------------------------------------------------------

def format_schema(fmt: Any, name: str = "format") -> dict[str, Any] | None:
    """Ollama's ``format``: "" or null (free text), "json" (any JSON object) or a JSON schema."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "object"}
    if isinstance(fmt, dict):
        return fmt
    raise _type_error(name, '"json" or a JSON schema object', fmt)


def openai_format_schema(response_format: Any) -> dict[str, Any] | None:
    """OpenAI's ``response_format``: {"type": "text" | "json_object" | "json_schema", ...}."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise BadRequest("response_format.json_schema.schema must be a JSON schema object")
        return schema
    raise _type_error("response_format.type", '"text", "json_object" or "json_schema"', kind)


def schema_constraint(schema: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp fields for a reply following ``schema``; {"type": "object"} alone is any object."""
    if schema == {"type": "object"}:
        return {"response_format": {"type": "json_object"}}
    return json_constraint(schema)


# ---- one chat request, from either API ------------------------------------------------------------

@dataclass
class ChatRequest:
    """A chat turn for the model: Ollama's /api/chat and /api/generate and OpenAI's chat completions."""

    model: str
    messages: list[dict[str, str]]  # plain role/content, tools folded into the system prompt
    tools: list[dict[str, Any]] = field(default_factory=list)
    answer_only: bool = False  # the last message is a tool result: the reply may only be an answer
    schema: dict[str, Any] | None = None  # structured output asked for
    sampling: dict[str, Any] = field(default_factory=dict)
    max_tokens: int = DEFAULT_NUM_PREDICT
    stream: bool = True
    keep_alive: Any = None
    raw_prompt: str | None = None  # Ollama's generate with raw: no chat template

    @property
    def constraint(self) -> dict[str, Any] | None:
        """The llama.cpp grammar fields for this turn (None: free text).

        Tools: a call or an answer (``tool_reply_constraint``). Tools and a schema: a call, or
        the schema's JSON itself as the answer. A schema alone: the schema's JSON."""
        if self.tools and not self.answer_only:
            if self.schema is None:
                return tool_reply_constraint(self.tools, False)
            call = tool_reply_schema(self.tools, False)["anyOf"][0]
            return {"response_format": {"type": "json_schema",
                                        "json_schema": {"schema": {"anyOf": [call, self.schema]}}}}
        if self.schema is not None:
            return schema_constraint(self.schema)
        if self.tools:
            return tool_reply_constraint(self.tools, True)
        return None

    @property
    def reply_kind(self) -> str:
        """How the reply is read: "text" (as it comes: free text or the schema's JSON), "tools"
        (``ToolReply`` JSON: a call or {"response": ...}), "tools+json" (a call or the schema's JSON)."""
        if not self.tools:
            return "text"
        if self.schema is None:
            return "tools"
        return "text" if self.answer_only else "tools+json"


def _prompt_texts(messages: list[dict[str, Any]]) -> list[str]:
    return [str(m.get("content") or "") for m in messages]


def ollama_chat(body: dict[str, Any], n_ctx: int) -> ChatRequest:
    model = model_name(body)
    raw_messages = check_messages(body.get("messages"))
    try:
        tools = parse_tools(body.get("tools"))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    check_prompt_size(_prompt_texts(raw_messages) + [json.dumps(tools)], n_ctx)
    messages, answer_only = chat_messages(raw_messages, tools)
    sampling, limit = sampling_options(body.get("options"))
    check_think(body, model)
    return ChatRequest(model=model, messages=messages, tools=tools, answer_only=answer_only,
                       schema=format_schema(body.get("format")), sampling=sampling, max_tokens=limit,
                       stream=stream_flag(body, True), keep_alive=check_keep_alive(body))


def ollama_generate(body: dict[str, Any], n_ctx: int) -> ChatRequest:
    model = model_name(body)
    prompt = _optional(body, "prompt", str, "a string") or ""
    system = _optional(body, "system", str, "a string")
    raw = _optional(body, "raw", bool, "true or false") or False
    if _optional(body, "suffix", str, "a string"):
        raise BadRequest(f'"{model}" does not support insert (suffix)')
    if _optional(body, "template", str, "a string"):
        raise BadRequest("a custom template is not supported: the model's own chat template is used")
    if body.get("images"):
        raise BadRequest("this model does not support images")
    context = body.get("context")
    if context is not None and (not isinstance(context, list) or not all(_is_int(t) for t in context)):
        raise _type_error("context", "a list of token ids", context)
    check_prompt_size([prompt, system or ""], n_ctx)
    sampling, limit = sampling_options(body.get("options"))
    check_think(body, model)
    messages = ([{"role": "system", "content": system}] if system else []) + (
        [{"role": "user", "content": prompt}] if prompt else [])
    return ChatRequest(model=model, messages=messages, schema=format_schema(body.get("format")), sampling=sampling,
                       max_tokens=limit, stream=stream_flag(body, True), keep_alive=check_keep_alive(body),
                       raw_prompt=prompt if raw and prompt else None)


_OPENAI_SAMPLING = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "stop", "top_k",
                    "min_p", "repeat_penalty")


def openai_chat(body: dict[str, Any], n_ctx: int) -> ChatRequest:
    model = model_name(body)
    raw_messages = check_messages(body.get("messages"), openai=True)
    if not raw_messages:
        raise BadRequest("messages must hold at least one message")
    n = body.get("n")
    if n is not None and n != 1:
        raise BadRequest("n: only one choice per request is supported")
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("auto", "none", "required") and not isinstance(choice, dict):
        raise _type_error("tool_choice", '"auto", "none", "required" or an object', choice)
    try:
        tools = parse_tools(body.get("tools")) if choice != "none" else []
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    check_prompt_size(_prompt_texts(raw_messages) + [json.dumps(tools)], n_ctx)
    messages, answer_only = chat_messages(raw_messages, tools)
    sampling = {}
    for name in _OPENAI_SAMPLING:
        if body.get(name) is not None:
            sampling[name] = check_option(name, body[name], where="")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise _type_error("max_tokens", "a positive integer", limit)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _type_error("stream_options", "an object", options)
    return ChatRequest(model=model, messages=messages, tools=tools, answer_only=answer_only,
                       schema=openai_format_schema(body.get("response_format")), sampling=sampling,
                       max_tokens=max_tokens(limit), stream=stream_flag(body, False))


def embed_inputs(body: dict[str, Any], n_ctx: int, key: str = "input") -> list[str]:
    """Ollama's embed ``input`` / OpenAI's embeddings ``input`` (a string or a list of strings);
    the older /api/embeddings passes key="prompt"."""
    value = body.get(key)
    if value is None:
        value = [] if key == "input" else ""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise _type_error(key, "a string or a list of strings", value)
    if len(items) > MAX_EMBED_INPUTS:
        raise BadRequest(f"{key}: at most {MAX_EMBED_INPUTS} inputs per request")
    check_prompt_size(items, n_ctx)
    return items


def embed_dimensions(body: dict[str, Any], size: int) -> int | None:
    dims = body.get("dimensions")
    if dims is None:
        return None
    if not _is_int(dims) or not 1 <= dims <= size:
        raise BadRequest(f"dimensions must be an integer between 1 and {size}, got {json.dumps(dims)[:40]}")
    return dims
