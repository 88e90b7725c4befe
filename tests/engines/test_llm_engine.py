"""EmbeddedLlm (xllamacpp in process) with the real SmolLM2-135M gguf."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from engines.llm.embedded import EmbeddedLlm
from engines.llm import LlmError, StreamResult

DEV_MODEL = Path("/tmp/vigil-dev-models/SmolLM2-135M-Instruct.Q4_1.gguf")

SYSTEM = (
    "You are Vigil, a helpful offline voice assistant on a kiosk. Answer in one short sentence. "
    "Be factual. If you do not know, say so. Never invent the time, the date or device states. "
    "Do not use lists or markdown. Keep answers under twenty words."
)


@pytest.fixture(scope="module")
def model_path() -> Path:
    """The app's provisioned weights; the dev copy when provisioning is unavailable."""
    try:
        from models.provision import ensure_models
    except ImportError:
        ensure_models = None
    if ensure_models is not None:
        try:
            return Path(ensure_models(progress=False).llm)
        except Exception:
            if not DEV_MODEL.is_file():
                raise
    if not DEV_MODEL.is_file():
        pytest.skip(f"no LLM weights: models.provision missing and {DEV_MODEL} absent")
    return DEV_MODEL


@pytest.fixture(scope="module")
def llm(model_path: Path) -> EmbeddedLlm:
    return EmbeddedLlm(model_path, n_threads=1, seed=1234)


def ask(q: str, system: str = SYSTEM) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": q}]


def test_streams_paris(llm: EmbeddedLlm) -> None:
    tokens: list[str] = []
    r = llm.stream(ask("What is the capital of France?"), lambda t: tokens.append(t) or False, max_tokens=48)
    assert isinstance(r, StreamResult)
    assert r.finish_reason in ("stop", "length")
    assert "Paris" in r.text
    assert "".join(tokens) == r.text and r.n_tokens >= len(tokens) > 0
    assert r.first_token_ms is not None and 0 < r.first_token_ms <= r.total_ms


def test_prefix_cache_makes_second_question_faster(llm: EmbeddedLlm) -> None:
    # A system prompt this engine has never seen: the first question is cold.
    system = SYSTEM + " The kiosk stands in the lobby of the Marlowe public library. " * 4
    cold = llm.stream(ask("What is the capital of Italy?", system), lambda t: False, max_tokens=8)
    warm = llm.stream(ask("How many legs does a spider have?", system), lambda t: False, max_tokens=8)
    assert cold.first_token_ms and warm.first_token_ms
    assert warm.first_token_ms < 0.6 * cold.first_token_ms, (cold.first_token_ms, warm.first_token_ms)
    # warm() on another new prompt gives the same effect for the first real question.
    other = SYSTEM + " Opening hours are posted at the entrance. " * 6
    llm.warm(other)
    after_warm = llm.stream(ask("Who wrote Hamlet?", other), lambda t: False, max_tokens=8)
    assert after_warm.first_token_ms < 0.6 * cold.first_token_ms


def test_cancel_stops_generation(llm: EmbeddedLlm) -> None:
    seen: list[str] = []

    def on_token(t: str) -> bool:
        seen.append(t)
        return len(seen) >= 3

    r = llm.stream(ask("Tell me a very long story about a dragon."), on_token, max_tokens=200)
    assert r.finish_reason == "cancelled"
    assert r.n_tokens == 3 == len(seen)
    assert r.total_ms < 2000
    proc = psutil.Process()
    c0 = sum(proc.cpu_times()[:2])
    time.sleep(0.5)
    assert sum(proc.cpu_times()[:2]) - c0 < 0.15, "generation kept running after cancel"
    full = llm.stream(ask("Tell me a very long story about a dragon."), lambda t: False, max_tokens=24)
    assert full.finish_reason == "length" and full.n_tokens == 24 > r.n_tokens


def test_errors_become_finish_reason_error(llm: EmbeddedLlm) -> None:
    r = llm.stream(ask("hi"), lambda t: 1 / 0)
    assert r.finish_reason == "error" and "ZeroDivisionError" in (r.error or "")
    r = llm.stream(ask("word " * 3000), lambda t: False)  # beyond n_ctx=2048
    assert r.finish_reason == "error" and r.error
    ok = llm.stream(ask("What is the capital of France?"), lambda t: False, max_tokens=16)
    assert ok.finish_reason in ("stop", "length") and ok.text


def test_bad_model_files_raise_llm_error(tmp_path: Path) -> None:
    with pytest.raises(LlmError, match="not found"):
        EmbeddedLlm(tmp_path / "missing.gguf")
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"\x00" * 4096)
    with pytest.raises(LlmError, match="magic"):
        EmbeddedLlm(garbage)
    header_only = tmp_path / "header_only.gguf"
    header_only.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 4096)
    with pytest.raises(LlmError, match="could not load"):
        EmbeddedLlm(header_only)
