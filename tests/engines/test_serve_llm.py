"""serve-llm as the clients nobody here wrote see it: the official ``ollama`` and ``openai`` Python
clients against the real server and the real model (SmolLM2-135M), plus hostile requests.

The ``serve_llm`` fixture (tests/conftest.py) runs ``tools.serve_llm.serve`` on a free loopback
port; the auth tests start their own server on 0.0.0.0 with a token. Greedy sampling
(temperature 0) keeps the answers reproducible. Measured numbers are printed (``-s``).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import ollama
import openai
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import load_config
from tools.serve_llm import DEFAULT_MODEL_NAME, MAX_BODY_BYTES, serve, vigil_version

M = DEFAULT_MODEL_NAME
GREEDY = {"temperature": 0.0, "num_predict": 48}
ROOT = Path(__file__).resolve().parents[2]


def ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


@pytest.fixture(scope="module")
def client(serve_llm) -> ollama.Client:
    return ollama.Client(host=serve_llm.url, timeout=60)


@pytest.fixture(scope="module")
def oai(serve_llm) -> openai.OpenAI:
    return openai.OpenAI(base_url=serve_llm.url + "/v1", api_key="unused-on-loopback", max_retries=0, timeout=60)


# ---- Ollama ---------------------------------------------------------------------------------------

def test_ollama_model_endpoints(client: ollama.Client, serve_llm) -> None:
    assert [m.model for m in client.list().models] == [M]
    version = httpx.get(serve_llm.url + "/api/version").json()["version"]
    assert version == vigil_version() and version != "0.0.0" and version[0].isdigit()
    running = client.ps().models
    assert [m.model for m in running] == [M] and running[0].context_length == serve_llm.n_ctx
    assert running[0].expires_at.year > 2100  # loaded for good
    shown = client.show(M)
    assert {"completion", "tools", "embedding"} <= set(shown.capabilities)
    assert "im_start" in shown.template  # the gguf's own chat template
    assert shown.details.family == "llama" and shown.details.quantization_level == "Q4_1"
    assert shown.modelinfo["general.parameter_count"] > 100_000_000
    assert "num_ctx" in shown.parameters and shown.modelfile.startswith("#")
    with pytest.raises(ollama.ResponseError) as missing:
        client.show("llama3.2")
    assert missing.value.status_code == 404


def test_pull_of_the_served_model_succeeds_at_once_and_of_another_is_a_clear_error(client: ollama.Client) -> None:
    t0 = time.perf_counter()
    assert client.pull(M).status == "success"
    steps = [p.status for p in client.pull(M, stream=True)]
    assert steps[0] == "pulling manifest" and steps[-1] == "success" and len(steps) >= 3
    assert time.perf_counter() - t0 < 5
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as other:
            result = client.pull("llama3.2:1b", stream=stream)
            if stream:
                list(result)
        assert other.value.status_code == 404
        assert "llama3.2:1b" in other.value.error and "downloads nothing" in other.value.error


def test_generate_streamed_and_not(client: ollama.Client) -> None:
    one = client.generate(M, "What is the capital of France?", options=GREEDY)
    assert one.done and one.done_reason in ("stop", "length") and one.eval_count > 0
    assert "Paris" in one.response, one.response
    parts = list(client.generate(M, "What is the capital of France?", stream=True, options=GREEDY))
    assert len(parts) > 2 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "Paris" in "".join(p.response for p in parts)
    raw = client.generate(M, "The capital of France is", raw=True, options={"temperature": 0.0, "num_predict": 4})
    assert raw.response.strip().startswith("Paris"), raw.response  # continued as written: no chat template
    system = client.generate(M, "Who are you?", system="You are a pirate named Blackbeard.", options=GREEDY)
    assert system.response
    assert client.generate(M, "").done_reason == "load"  # an empty prompt only loads the model
    assert client.generate(M, "", keep_alive=0).done_reason == "unload"
    with pytest.raises(ollama.ResponseError) as insert:
        client.generate(M, "def f(", suffix="return 1")
    assert insert.value.status_code == 400 and "suffix" in insert.value.error


def test_format_json_and_schema_are_enforced(client: ollama.Client) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"},
                                               "population": {"type": "integer"}},
              "required": ["city", "country", "population"]}
    for stream in (False, True):
        reply = client.chat(M, messages=ask("What is the capital of France?"), format=schema, stream=stream,
                            options={"temperature": 0.0, "num_predict": 120})
        text = "".join(p.message.content for p in reply) if stream else reply.message.content
        obj = json.loads(text)
        assert set(obj) == {"city", "country", "population"} and isinstance(obj["population"], int), obj
    nested = {"type": "object", "properties": {"person": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20}, "job": {"type": "string", "maxLength": 20}},
        "required": ["name", "job"]}}, "required": ["person"]}
    reply = client.chat(M, messages=ask("Describe a person."), format=nested, options={"temperature": 0.0,
                                                                                         "num_predict": 200})
    assert reply.done_reason == "stop", reply
    assert set(json.loads(reply.message.content)["person"]) == {"name", "job"}
    generated = client.generate(M, "Describe a cat as JSON with a name and a colour.", format="json",
                                options={"temperature": 0.0, "num_predict": 200})
    if generated.done_reason == "stop":  # a small model may ramble inside the object until the limit
        assert isinstance(json.loads(generated.response), dict)
    assert generated.response.lstrip().startswith("{"), generated.response
    with pytest.raises(ollama.ResponseError) as bad:
        client.chat(M, messages=ask("hi"), format={"type": "bogus"})
    assert bad.value.status_code == 400 and "bogus" in bad.value.error


def test_embed_from_the_model(client: ollama.Client, serve_llm) -> None:
    n_embd = serve_llm.engine.describe()["n_embd"]
    out = client.embed(M, ["The cat sat on the mat.", "Stock markets fell today.", "The cat sat on the mat."])
    a, b, c = out.embeddings
    assert len(a) == len(b) == n_embd and out.prompt_eval_count > 0
    assert a == c and a != b  # the model's own vectors: the same text, the same vector
    assert abs(math.sqrt(sum(x * x for x in a)) - 1.0) < 1e-3  # normalised, as Ollama's
    cut = client.embed(M, "hello", dimensions=64).embeddings[0]
    assert len(cut) == 64 and abs(math.sqrt(sum(x * x for x in cut)) - 1.0) < 1e-3
    assert len(client.embeddings(M, "hello").embedding) == n_embd  # the older endpoint
    assert client.embed(M, []).embeddings == []


def test_home_assistant_calls(client: ollama.Client) -> None:
    """What Home Assistant's Ollama integration does: list, pull if missing, then chat with tools,
    keep_alive, options={num_ctx} and format."""
    assert M in [m.model for m in client.list().models]
    assert client.pull(M).status == "success"
    tools = [{"type": "function", "function": {"name": "HassTurnOn", "description": "Turns on a device",
                                               "parameters": {"type": "object", "properties": {
                                                   "name": {"type": "string"}}, "required": ["name"]}}}]
    messages = [{"role": "system", "content": "You control a smart home."},
                {"role": "user", "content": "Turn on the kitchen light."}]
    parts = list(client.chat(M, messages=messages, tools=tools, stream=True, keep_alive=-1,
                             options={"num_ctx": 8192, "temperature": 0.0, "num_predict": 64}))
    assert parts[-1].done
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    text = "".join(p.message.content or "" for p in parts)
    assert calls or text, parts
    for call in calls:
        assert call.function.name == "HassTurnOn" and isinstance(call.function.arguments.get("name"), str)
    # tools and a format together: a call, or an answer that is the format's JSON
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    reply = client.chat(M, messages=messages, tools=tools, format=schema, keep_alive="5m",
                        options={"num_ctx": 8192, "temperature": 0.0, "num_predict": 80})
    if reply.message.tool_calls:
        assert reply.message.tool_calls[0].function.name == "HassTurnOn"
    else:
        assert "answer" in json.loads(reply.message.content)


# ---- OpenAI ---------------------------------------------------------------------------------------

def test_openai_models_and_chat(oai: openai.OpenAI) -> None:
    assert [m.id for m in oai.models.list()] == [M]
    assert oai.models.retrieve(M).id == M
    question = [{"role": "system", "content": "Answer in one short sentence."},
                {"role": "user", "content": "What is the capital of France?"}]
    one = oai.chat.completions.create(model=M, messages=question, temperature=0, max_tokens=32)
    choice = one.choices[0]
    assert choice.finish_reason in ("stop", "length") and "Paris" in choice.message.content, one
    assert one.usage.completion_tokens > 0 and one.object == "chat.completion"
    chunks = list(oai.chat.completions.create(model=M, messages=question, temperature=0, max_tokens=32, stream=True,
                                              stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text and len(chunks) > 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length") and not any(finishes[:-1])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    parts = oai.chat.completions.create(model=M, temperature=0, max_tokens=16, messages=[
        {"role": "user", "content": [{"type": "text", "text": "What is the capital of "},
                                     {"type": "text", "text": "France?"}]}])
    assert parts.choices[0].message.content


def test_openai_tools_json_and_embeddings(oai: openai.OpenAI, serve_llm) -> None:
    tools = [{"type": "function", "function": {"name": "get_time", "description": "The current local time",
                                               "parameters": {"type": "object", "properties": {}}}}]
    reply = oai.chat.completions.create(model=M, tools=tools, temperature=0, max_tokens=48,
                                        messages=[{"role": "user", "content": "What time is it?"}])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_time" and json.loads(call.function.arguments) == {} and call.id
    follow = oai.chat.completions.create(model=M, tools=tools, temperature=0, max_tokens=48, messages=[
        {"role": "user", "content": "What time is it?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "10:42"}])
    assert follow.choices[0].finish_reason in ("stop", "length") and follow.choices[0].message.content
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    structured = oai.chat.completions.create(
        model=M, temperature=0, max_tokens=64, messages=[{"role": "user", "content": "Name the capital of France."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
    assert set(json.loads(structured.choices[0].message.content)) == {"city"}
    vectors = oai.embeddings.create(model=M, input=["hello", "world"])  # the client asks for base64
    assert [len(d.embedding) for d in vectors.data] == [serve_llm.engine.describe()["n_embd"]] * 2
    floats = oai.embeddings.create(model=M, input="hello", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors.data[0].embedding, abs=1e-6)


def test_openai_errors_are_openai_shaped(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        oai.chat.completions.create(model="gpt-4o", messages=ask("hi"))
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as hot:
        oai.chat.completions.create(model=M, messages=ask("hi"), extra_body={"temperature": "hot"})
    assert "temperature" in hot.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=M, messages=ask("hi"), n=3)
    with pytest.raises(openai.BadRequestError) as image:
        oai.chat.completions.create(model=M, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    assert "text" in image.value.body["message"]


# ---- hostile requests -----------------------------------------------------------------------------

def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 10.0) -> tuple[int, bytes]:
    """Send bytes as they are; (status, body) of the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data.partition(b"\r\n\r\n")[2]


def test_hostile_bodies_get_a_clear_answer_and_cost_nothing(serve_llm) -> None:
    url, port = serve_llm.url, serve_llm.address[1]
    t0 = time.perf_counter()
    status, body = raw_request(port, b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: 100000000000\r\n\r\n", b"{")
    assert status == 413 and b"at most" in body, body
    big = json.dumps({"model": M, "messages": ask("word " * (2 * 2**20))}).encode()  # a 10 MB prompt
    reply = httpx.post(url + "/api/chat", content=big, timeout=30)
    assert reply.status_code == 413 and str(MAX_BODY_BYTES) in reply.json()["error"]
    refused_ms = (time.perf_counter() - t0) * 1000
    long_prompt = json.dumps({"model": M, "messages": ask("word " * 190_000)}).encode()  # < 1 MiB, > the context
    t1 = time.perf_counter()
    reply = httpx.post(url + "/api/chat", content=long_prompt, timeout=30)
    long_ms = (time.perf_counter() - t1) * 1000
    assert reply.status_code == 400 and "too long" in reply.json()["error"]  # ours: llama.cpp never tokenised it
    print(f"\n10 MB body and a 1e11 Content-Length refused in {refused_ms:.0f} ms; a 950 kB prompt in {long_ms:.1f} ms")
    cases = [
        (b"[" * 100_000 + b"]" * 100_000, 400, "nested"),
        (json.dumps({"model": M, "messages": ask("hi"), "options": {"temperature": "hot"}}).encode(), 400,
         "options.temperature"),
        (b'{"model": "%s", "messages": [], "options": {"temperature": NaN}}' % M.encode(), 400, "NaN"),
        (json.dumps({"model": M, "messages": ask("hi"), "options": {"repeat_penalty": -3}}).encode(), 400,
         "repeat_penalty"),
        (json.dumps({"model": M, "messages": "hi"}).encode(), 400, "messages"),
        (json.dumps({"model": M, "messages": [{"role": "wizard", "content": "hi"}]}).encode(), 400, "role"),
        (json.dumps({"model": M, "messages": ask("hi"), "stream": "yes"}).encode(), 400, "stream"),
        (json.dumps({"model": M, "messages": ask("hi"), "keep_alive": "forever"}).encode(), 400, "keep_alive"),
        (json.dumps({"model": M, "messages": ask("hi"), "format": 5}).encode(), 400, "format"),
        (json.dumps({"model": 5}).encode(), 400, "model"),
        (b"[1, 2]", 400, "object"),
        (b"\xff\xfe not json", 400, "JSON"),
    ]
    for raw, status, needle in cases:
        reply = httpx.post(url + "/api/chat", content=raw, timeout=10)
        assert reply.status_code == status and needle in reply.json()["error"], (raw[:80], reply.text)
    chunked = httpx.post(url + "/api/chat", content=iter([b'{"model": "x"}']), timeout=10)  # no Content-Length
    assert chunked.status_code == 411
    assert httpx.get(url + "/api/chat").status_code == 405
    assert httpx.post(url + "/api/nope", json={}).status_code == 404
    assert httpx.delete(url + "/api/delete", timeout=10).status_code == 501
    assert httpx.post(url + "/api/embed", json={"model": M, "input": [1, 2]}).status_code == 400
    # and the server is fine for the next request
    ok = ollama.Client(host=url, timeout=60).chat(M, messages=ask("What is the capital of France?"), options=GREEDY)
    assert "Paris" in ok.message.content


_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                       | st.text(max_size=20), lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
_option_names = st.sampled_from(["temperature", "top_p", "top_k", "min_p", "seed", "stop", "repeat_penalty",
                                 "num_ctx", "presence_penalty", "frequency_penalty", "mirostat", "use_mmap", "x"])
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", "x", 3]),
                                  "content": st.one_of(st.text(max_size=40), _values)})
_body = st.fixed_dictionaries(
    {"model": st.sampled_from([M, "smollm2", "other", 7, None])},
    optional={"messages": st.one_of(st.lists(_message, max_size=3), _values),
              "prompt": st.one_of(st.text(max_size=40), _values),
              "input": st.one_of(st.lists(st.text(max_size=20), max_size=3), _values),
              "options": st.one_of(st.dictionaries(_option_names, _values, max_size=4), _values),
              "format": st.one_of(st.sampled_from(["json", "", {"type": "object"}]), _values),
              "tools": _values, "stream": _values, "keep_alive": _values, "think": _values,
              "response_format": _values, "max_tokens": _values, "dimensions": _values})
_route = st.sampled_from(["/api/chat", "/api/generate", "/api/embed", "/api/show", "/api/pull",
                          "/v1/chat/completions", "/v1/embeddings"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(route=_route, body=_body)
def test_any_body_gets_an_answer_never_a_500(serve_llm, route, body) -> None:
    if body.get("options") is None:
        body["options"] = {}
    if isinstance(body["options"], dict):
        body["options"]["num_predict"] = 2  # the ones that pass run briefly
    body["max_tokens"] = 2 if "max_tokens" not in body or body["max_tokens"] is None else body["max_tokens"]
    reply = httpx.post(serve_llm.url + route, content=json.dumps(body).encode(), timeout=30)
    assert reply.status_code in (200, 400, 404, 501), (route, body, reply.status_code, reply.text[:300])
    lines = [json.loads(line) for line in reply.text.splitlines() if line.strip() and not line.startswith("data:")]
    assert lines or reply.text.startswith("data:"), reply.text[:200]
    if reply.status_code != 200:
        error = lines[0]["error"]
        assert (error["message"] if isinstance(error, dict) else error), reply.text


# ---- auth and connections -------------------------------------------------------------------------

def test_non_loopback_needs_a_token(models) -> None:
    with pytest.raises(ValueError, match="token"):
        serve(load_config(environ={}), "0.0.0.0", 0, models.llm)
    cli = subprocess.run([sys.executable, "-m", "pipeline", "serve-llm", "--host", "0.0.0.0", "--port", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "VIGIL_HTTP__TOKEN"})
    assert cli.returncode == 2 and "token" in cli.stderr and "Traceback" not in cli.stderr, cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1


def test_token_on_all_interfaces_with_the_official_clients(models, monkeypatch) -> None:
    box: dict = {}
    ready = threading.Event()
    config = load_config(environ={"VIGIL_HTTP__TOKEN": "s3cret-t0ken"})
    thread = threading.Thread(target=serve, args=(config, "0.0.0.0", 0, models.llm),
                              kwargs={"ready": lambda s: (box.update(server=s), ready.set())}, daemon=True)
    thread.start()
    assert ready.wait(60), "serve-llm did not start"
    server = box["server"]
    url = f"http://127.0.0.1:{server.address[1]}"
    try:
        monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
        for path in ("/", "/api/tags", "/api/version", "/v1/models"):
            reply = httpx.get(url + path)
            assert reply.status_code == 401 and reply.headers["WWW-Authenticate"].startswith("Bearer"), path
        with pytest.raises(ollama.ResponseError) as denied:
            ollama.Client(host=url).list()
        assert denied.value.status_code == 401
        monkeypatch.setenv("OLLAMA_API_KEY", "s3cret-t0ken")  # how the ollama client sends a key
        assert [m.model for m in ollama.Client(host=url).list().models] == [M]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret-t0ken", max_retries=0, timeout=60)
        answer = good.chat.completions.create(model=M, messages=ask("What is the capital of France?"),
                                              temperature=0, max_tokens=24)
        assert "Paris" in answer.choices[0].message.content
        assert server.stats["unauthorized"] >= 6
    finally:
        server.stop()
        thread.join(10)


def test_slow_clients_cannot_lock_out_a_request(serve_llm, client: ollama.Client) -> None:
    port = serve_llm.address[1]
    stop, opened = threading.Event(), []

    def trickle() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\n")
                    opened.append(1)
                    while not stop.wait(1.0):
                        sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                stop.wait(0.05)

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(70)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 10
        while len(opened) < 70 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)
        latencies = []
        for _ in range(5):
            t0 = time.perf_counter()
            assert [m.model for m in client.list().models] == [M]
            latencies.append((time.perf_counter() - t0) * 1000)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    print(f"\n/api/tags with 70 slow clients: max {max(latencies):.1f} ms; {serve_llm.httpd.evicted} evicted")


# ---- the engine's own llama.cpp listener ----------------------------------------------------------

def _unix_get(path: str, sock_path: str, key: str | None) -> int:
    import http.client

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(5)
            self.sock.connect(sock_path)

    conn = Conn("localhost", timeout=5)
    try:
        conn.request("POST" if path == "/completion" else "GET", path,
                     body=json.dumps({"prompt": "hi", "n_predict": 1500}) if path == "/completion" else None,
                     headers={"Authorization": f"Bearer {key}"} if key else {})
        return conn.getresponse().status
    finally:
        conn.close()


def test_llama_cpp_listener_is_closed_to_everyone_but_the_engine(models, monkeypatch) -> None:
    from engines.llm.embedded import EmbeddedLlm

    me = psutil.Process()
    before = {c.laddr for c in me.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    engine = EmbeddedLlm(models.llm)
    after = {c.laddr for c in me.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    assert after == before, f"llama.cpp opened a TCP listener: {after - before}"
    assert not os.path.exists(engine._listener_path) and not os.path.exists(engine._listener_dir)
    assert engine.describe()["n_embd"] > 0  # read through it, with the key, before it went
    # Keep the listener (the one fault injected here) to see that without the key it refuses everything.
    monkeypatch.setattr(EmbeddedLlm, "_close_listener", lambda self: None)
    kept = EmbeddedLlm(models.llm)
    try:
        assert oct(os.stat(kept._listener_dir).st_mode & 0o777) == "0o700"
        for path in ("/completion", "/v1/chat/completions", "/props", "/slots"):
            assert _unix_get(path, kept._listener_path, None) == 401, path
            assert _unix_get(path, kept._listener_path, "guess") == 401, path
        assert _unix_get("/props", kept._listener_path, kept._api_key) == 200
    finally:
        monkeypatch.undo()
        kept._close_listener()
    with pytest.raises(OSError):
        _unix_get("/props", kept._listener_path, kept._api_key)
    result = kept.stream(ask("What is the capital of France?"), lambda t: False, max_tokens=16)
    assert result.finish_reason in ("stop", "length") and result.text  # the engine itself is unaffected
