"""The ollama engine end to end against a real model: serve-llm on loopback + the official client.

No doubles here: ``tools.serve_llm.serve`` runs the embedded SmolLM2-135M behind the
Ollama API on 127.0.0.1 and a free port, and ``engines.llm.ollama.OllamaLlm`` talks to
it with ``ollama.Client``. Measured numbers are printed (run with ``-s``).
"""

from __future__ import annotations

import statistics
import threading
import time

import httpx
import ollama
import psutil
import pytest

from core.config import load_config
from engines.llm.embedded import EmbeddedLlm
from engines.llm.ollama import DEFAULT_MODEL, OllamaLlm, resolve_host

CONFIG = load_config(environ={})
SYSTEM = CONFIG.llm.system_prompt
OPTIONS = {"temperature": 0.0, "repeat_penalty": 1.2}  # greedy: reproducible answers


@pytest.fixture(scope="module")
def engine(serve_llm) -> OllamaLlm:
    eng = OllamaLlm(host=serve_llm.url, model=DEFAULT_MODEL, timeout_s=10.0, keep_alive="30m", options=OPTIONS)
    eng.warm(SYSTEM)
    assert eng.warm_error is None, eng.warm_error
    yield eng
    eng.close()


def ask(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def test_capital_of_france_streams_paris(engine: OllamaLlm) -> None:
    tokens: list[str] = []
    r = engine.stream(ask("What is the capital of France?"), lambda t: tokens.append(t) or False, max_tokens=64)
    assert r.finish_reason in ("stop", "length"), r
    assert "Paris" in r.text, r.text
    assert len(tokens) > 1 and "".join(tokens) == r.text  # streamed, not one blob
    assert r.n_tokens >= len(tokens)
    assert r.first_token_ms is not None and 0 < r.first_token_ms < r.total_ms


def test_ollama_api_surface(serve_llm) -> None:
    with httpx.Client(base_url=serve_llm.url, timeout=10) as http:
        assert http.get("/").text == "Ollama is running"
        head = http.head("/")
        assert head.status_code == 200 and head.content == b""
        assert "version" in http.get("/api/version").json()
        bad = http.post("/api/chat", content=b"{not json")
        assert bad.status_code == 400 and "error" in bad.json()
    client = ollama.Client(host=serve_llm.url, timeout=10)
    names = [m.model for m in client.list().models]
    assert names == [DEFAULT_MODEL]
    one = client.chat(model=DEFAULT_MODEL, messages=ask("What is the capital of France?"), stream=False,
                      options={**OPTIONS, "num_predict": 48})
    assert one.done and one.done_reason in ("stop", "length") and one.eval_count > 0
    assert one.message.role == "assistant" and one.message.content
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="llama3.2", messages=ask("hi"))
    assert missing.value.status_code == 404 and "not found" in missing.value.error
    capped = client.chat(model=DEFAULT_MODEL, messages=ask("Tell me a long story."), stream=False,
                         options={"num_predict": 5})
    assert capped.done_reason == "length" and capped.eval_count == 5


def test_requests_are_served_one_at_a_time(engine: OllamaLlm, serve_llm) -> None:
    results = []

    def one(q: str) -> None:
        results.append(engine.stream(ask(q), lambda t: False, max_tokens=24))

    threads = [threading.Thread(target=one, args=(q,)) for q in ("Who wrote Hamlet?", "What is two plus two?",
                                                               "Name a colour.")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3 and all(r.finish_reason in ("stop", "length") and r.text for r in results), results
    assert serve_llm.stats["max_active"] == 1


def _cpu_s() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def test_closing_the_stream_stops_generation(engine: OllamaLlm, serve_llm) -> None:
    """Cancel mid-answer: the client closes the stream, the server stops; tokens and CPU both stop."""
    cancelled_before = serve_llm.stats["cancelled"]
    marks: dict = {}

    def on_token(_t: str) -> bool:
        now = time.monotonic()
        marks.setdefault("first", (now, _cpu_s()))
        if now - marks["first"][0] >= 0.8:
            marks["cancel"] = (now, _cpu_s())
            return True
        return False

    r = engine.stream(ask("Tell me a very long story about a dragon and a knight, with many details."),
                      on_token, max_tokens=1000)
    assert r.finish_reason == "cancelled", r
    (t_first, c_first), (t_cancel, c_cancel) = marks["first"], marks["cancel"]
    cpu_during = (c_cancel - c_first) / (t_cancel - t_first) * 100.0
    time.sleep(0.2)
    n0, c0, t0 = serve_llm.stats["tokens"], _cpu_s(), time.monotonic()
    time.sleep(1.0)
    n1, c1, t1 = serve_llm.stats["tokens"], _cpu_s(), time.monotonic()
    cpu_after = (c1 - c0) / (t1 - t0) * 100.0
    print(f"\nclose mid-stream: process CPU {cpu_during:.0f} % while generating, {cpu_after:.1f} % after the close; "
          f"server tokens {n0} → {n1}")
    assert n1 == n0, "the server kept generating after the client closed the stream"
    assert serve_llm.stats["cancelled"] == cancelled_before + 1
    assert serve_llm.stats["active"] == 0
    assert cpu_during > 40.0, cpu_during
    assert cpu_after < 15.0, cpu_after
    # and the server is fine for the next request
    again = engine.stream(ask("What is the capital of France?"), lambda t: False, max_tokens=48)
    assert again.finish_reason in ("stop", "length") and "Paris" in again.text, again


def test_time_to_first_token_ollama_loopback_vs_embedded(engine: OllamaLlm, serve_llm, models) -> None:
    """Measurement: warm first-token latency, embedded in process vs the same model through serve-llm."""
    embedded = EmbeddedLlm(models.llm, n_threads=CONFIG.llm.threads)
    embedded.warm(SYSTEM)
    questions = ["What is the capital of Spain?", "How many legs does a spider have?", "Who painted the Mona Lisa?",
                 "What colour is the sky?", "What is the largest ocean?"] * 2
    emb, oll = [], []
    for q in questions:
        emb.append(embedded.stream(ask(q), lambda t: True, max_tokens=16).first_token_ms)
        oll.append(engine.stream(ask(q), lambda t: True, max_tokens=16).first_token_ms)
    e50, o50 = statistics.median(emb), statistics.median(oll)
    print(f"\ntime to first token (warm, n={len(questions)}): embedded p50 {e50:.0f} ms max {max(emb):.0f} ms; "
          f"ollama on loopback p50 {o50:.0f} ms max {max(oll):.0f} ms")
    assert all(x is not None for x in emb + oll)
    assert o50 < 1000 and e50 < 1000


def test_host_resolution(monkeypatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert resolve_host("") == "http://127.0.0.1:11434"
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.5:9999")
    assert resolve_host("") == "http://10.0.0.5:9999"
    assert resolve_host("http://box:1234") == "http://box:1234"
