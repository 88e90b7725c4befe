"""LLM worker: turns a transcript into a streamed answer.

The system prompt is evaluated once at start, so a request only pays for its own few
tokens (the prefix cache makes the first token ~10x faster). Tokens go out one message
each as soon as they exist; a Cancel for the session (barge-in, shutdown) stops the engine
between two tokens.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.messages import Cancel, LlmDone, LlmRequest, Token
from workers.llm_engines import EmbeddedLlm, LlmEngine
from workers.runtime import WorkerContext

FRIENDLY_FAILURE = "Sorry, I can't answer that right now."


def make_engine(ctx: WorkerContext) -> LlmEngine:
    cfg = ctx.config.llm
    if cfg.engine == "embedded":
        model = Path(cfg.model) if cfg.model else Path(ctx.extra["llm_model"])
        return EmbeddedLlm(model.resolve(), n_threads=cfg.threads, repeat_penalty=cfg.repeat_penalty,
                           temperature=cfg.temperature)
    raise ValueError(f"unknown llm engine {cfg.engine!r}")


def answer(ctx: WorkerContext, engine: LlmEngine, request: LlmRequest) -> LlmDone:
    cfg = ctx.config.llm
    messages = [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": request.text}]
    state = {"index": 0, "first_ns": 0, "cancelled": False}

    def on_token(text: str) -> bool:
        now = time.monotonic_ns()
        if not state["first_ns"]:
            state["first_ns"] = now
        ctx.send(Token(session=request.session, text=text, index=state["index"], t_ns=now))
        state["index"] += 1
        ctx.beat()
        message = ctx.recv(0.0)
        if isinstance(message, Cancel) and message.session == request.session:
            state["cancelled"] = True
        return state["cancelled"] or ctx.should_stop()

    result = engine.stream(messages, on_token, max_tokens=cfg.max_tokens)
    degraded = result.finish_reason == "error" or (not result.text.strip() and not state["cancelled"])
    text = result.text
    if degraded and not state["cancelled"]:
        on_token(FRIENDLY_FAILURE)  # the person always hears something
        text = FRIENDLY_FAILURE
    return LlmDone(session=request.session, text=text.strip(), finish_reason=result.finish_reason, route="llm",
                   degraded=degraded, first_token_ns=state["first_ns"], compute_ms=round(result.total_ms, 1),
                   first_token_ms=round(result.first_token_ms or 0.0, 1))


def run(ctx: WorkerContext) -> None:
    engine = make_engine(ctx)
    engine.warm(ctx.config.llm.system_prompt)
    while not ctx.should_stop():
        ctx.beat()
        message = ctx.recv(0.1)
        if isinstance(message, LlmRequest):
            done = answer(ctx, engine, message)
            ctx.log.info("answer (%s, first token %.0f ms): %r", done.finish_reason, done.first_token_ms, done.text)
            ctx.send(done)
