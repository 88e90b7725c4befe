"""LLM worker: turns a transcript into a streamed answer -- always, on time.

The system prompt is evaluated once at start, so a request only pays for its own few
tokens (the prefix cache makes the first token ~10x faster). Tokens go out one message
each as soon as they exist.

Deadlines, retry and cancellation (DESIGN.md "Failure handling"):

* The engine runs on a helper thread; this process's main thread only moves tokens from
  that thread to the outbox, beats the heartbeat and watches the inbox and the clock. So
  a hung engine can neither silence the heartbeat nor hold the person past a deadline.
* First-token deadline (``llm.first_token_timeout_s``) and total deadline
  (``llm.total_timeout_s``), both counted from ``LlmRequest.t_ns``: the moment the person
  stopped speaking (the coordinator sets it so), not the moment the request came. A request
  started on a partial transcript and the final one therefore share one deadline, and a hung
  engine keeps the person waiting ``first_token_timeout_s`` after their last word, not that
  long again after each request.
* One retry when the engine could not connect (``error`` starting "connect:") before any
  token went out, if ``llm.retry_connect`` and the first-token budget still allows.
* A ``Cancel`` for the session (barge-in, shutdown) stops the engine between two tokens:
  the helper's token callback returns True, which stops llama.cpp, and for ollama closes
  the HTTP stream (the server then stops generating).
* Any failure -- connection refused, hang, HTTP error, broken or malformed stream, model
  missing, engine error, deadline -- streams ``FRIENDLY_FAILURE`` as an ordinary Token and
  ends with ``LlmDone(degraded=True)``.

What happens to a helper thread that outlives its request (a hang):

* ollama: it stays blocked in a socket read until the client's own timeout
  (first-token deadline + ``CLIENT_TIMEOUT_MARGIN_S``) ends it; meanwhile the next request
  proceeds at once on a new connection. At most ``MAX_ABANDONED`` such threads may be
  alive; past that requests are answered friendly without calling the engine.
* embedded (llama.cpp in process): calls are serialised by the engine's lock. A cancelled
  call stops at its next token (~15 ms), so normally nothing is left behind. A call that
  truly wedges inside llama.cpp keeps the lock: the next requests then miss their
  first-token deadline and are answered friendly, and once a helper has been stuck for
  ``wedged_after_s`` the worker exits (code 70) so the supervisor restarts it with a fresh
  engine -- a native call cannot be interrupted any other way.

Extending: ``answer()`` picks a route; the LLM is the "llm" route. Another route (a skill)
can reuse :func:`deliver` with its own ``produce(on_token) -> StreamResult`` and
``route="skill:NAME"`` to get the same threads, deadlines, cancellation and fallback.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.messages import FRIENDLY_FAILURE, Announce, Cancel, LlmDone, LlmRequest, Token
from skills import SkillRunner
from engines.llm.embedded import EmbeddedLlm
from engines.llm import LlmEngine, ModelLoadError, StreamResult
from core.config import Config
from workers.base import Worker, WorkerContext

POLL_S = 0.01  # main-thread wait per loop: bounds the reaction time to a Cancel
RETRY_PAUSE_S = 0.05  # before the one connect retry (a restarting server)
MIN_RETRY_BUDGET_S = 0.1  # retry only if at least this much first-token budget is left
CLIENT_TIMEOUT_MARGIN_S = 1.0  # ollama client timeout = first-token deadline + this
MAX_ABANDONED = 8  # helper threads still blocked after their request ended
WARM_TIMEOUT_S = 60.0
EXIT_WEDGED = 70

log = logging.getLogger("vigil.llm")

Produce = Callable[[Callable[[str], bool]], StreamResult]


def make_engine(config: Config) -> LlmEngine:
    cfg = config.llm
    if cfg.engine == "embedded":
        model = Path(cfg.model)
        return EmbeddedLlm(model.resolve(), n_threads=cfg.threads, repeat_penalty=cfg.repeat_penalty,
                           temperature=cfg.temperature, n_prompt_threads=cfg.prompt_threads)
    if cfg.engine == "ollama":
        from engines.llm.ollama import OllamaLlm

        return OllamaLlm(host=cfg.host, model=cfg.model, timeout_s=cfg.first_token_timeout_s + CLIENT_TIMEOUT_MARGIN_S,
                         keep_alive=cfg.keep_alive, warm_timeout_s=WARM_TIMEOUT_S,
                         options={"temperature": cfg.temperature, "repeat_penalty": cfg.repeat_penalty})
    raise ValueError(f"unknown llm engine {cfg.engine!r}")


def cancels(message: Any, request: LlmRequest) -> bool:
    """A Cancel for this request: the whole session (request 0) or exactly this request."""
    return (isinstance(message, Cancel) and message.session == request.session
            and message.request in (0, request.request))


def is_connect_failure(result: StreamResult) -> bool:
    return result.finish_reason == "error" and (result.error or "").startswith("connect:")


# ---- helper threads -------------------------------------------------------------------


class Attempt:
    """One engine call on a daemon helper thread; tokens and the result come back through a queue."""

    def __init__(self, produce: Produce, label: str) -> None:
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.cancel = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(produce,), name=f"llm-{label}", daemon=True)
        self.abandoned_at = 0.0
        self.thread.start()

    def _on_token(self, text: str) -> bool:
        if self.cancel.is_set():
            return True
        self.queue.put(("token", text, time.monotonic_ns()))
        return self.cancel.is_set()

    def _run(self, produce: Produce) -> None:
        try:
            result = produce(self._on_token)
        except BaseException as exc:  # engines should not raise; report it if one does
            result = StreamResult("", 0, "error", None, 0.0, f"engine raised {type(exc).__name__}: {exc}")
        self.queue.put(("done", result, time.monotonic_ns()))


@dataclass
class Helpers:
    """Helper threads that outlived their request, and the limit on them."""

    abandoned: list[Attempt] = field(default_factory=list)
    max_abandoned: int = MAX_ABANDONED

    def reap(self) -> None:
        self.abandoned = [a for a in self.abandoned if a.thread.is_alive()]

    def abandon(self, attempt: Attempt) -> None:
        attempt.cancel.set()
        if attempt.thread.is_alive():
            attempt.abandoned_at = time.monotonic()
            self.abandoned.append(attempt)

    def full(self) -> bool:
        self.reap()
        return len(self.abandoned) >= self.max_abandoned

    def stuck_for(self) -> float:
        """Seconds the oldest still-running abandoned helper has been stuck (0 if none)."""
        self.reap()
        now = time.monotonic()
        return max((now - a.abandoned_at for a in self.abandoned), default=0.0)



# ---- one request ----------------------------------------------------------------------


@dataclass
class _Delivery:
    worker: LlmWorker
    request: LlmRequest
    index: int = 0
    first_ns: int = 0
    parts: list[str] = field(default_factory=list)
    cancelled: bool = False

    def send(self, text: str, t_ns: int | None = None) -> None:
        now = t_ns or time.monotonic_ns()
        if not self.first_ns:
            self.first_ns = now
        self.worker.ctx.send(Token(session=self.request.session, text=text, index=self.index, t_ns=now,
                                   request=self.request.request))
        self.index += 1
        self.parts.append(text)

    def poll_inbox(self) -> None:
        """Take what arrived meanwhile: our Cancel (or a stop) ends the delivery; the rest waits in the backlog."""
        if self.worker.interruption(self.request.session, self.request.request, takeover=False) is not None:
            self.cancelled = True


def deliver(worker: LlmWorker, request: LlmRequest, produce: Produce, *, route: str = "llm",
            first_token_timeout_s: float | None = None, total_timeout_s: float | None = None,
            retry_connect: bool | None = None) -> LlmDone:
    """Run ``produce(on_token)`` on a helper thread and stream its tokens under the deadlines.

    Always returns an LlmDone; on any failure the person has been sent FRIENDLY_FAILURE.
    """
    ctx = worker.ctx
    cfg = worker.config.llm
    first_s = cfg.first_token_timeout_s if first_token_timeout_s is None else first_token_timeout_s
    total_s = cfg.total_timeout_s if total_timeout_s is None else total_timeout_s
    retry = cfg.retry_connect if retry_connect is None else retry_connect
    helpers = worker.helpers

    now_ns = time.monotonic_ns()
    start_ns = request.t_ns if 0 < request.t_ns <= now_ns else now_ns
    first_deadline = start_ns + int(first_s * 1e9)
    total_deadline = start_ns + int(total_s * 1e9)
    d = _Delivery(worker, request)
    result: StreamResult | None = None
    reason = ""  # why we gave up without a result: timeout | cancelled | busy
    attempts = 0
    while True:
        if helpers.full():
            reason, error = "busy", f"{len(helpers.abandoned)} engine calls still stuck"
            break
        attempts += 1
        attempt = Attempt(produce, f"{request.session}.{attempts}")
        result, reason, error = _pump(d, attempt, first_deadline, total_deadline)
        if result is None:  # timeout or cancel: the helper may still be running
            helpers.abandon(attempt)
            break
        left_s = (first_deadline - time.monotonic_ns()) / 1e9
        if (retry and attempts == 1 and not d.parts and is_connect_failure(result)
                and left_s >= MIN_RETRY_BUDGET_S + RETRY_PAUSE_S):
            ctx.log.warning("session %d: %s; retrying once (%.0f ms of first-token budget left)",
                            request.session, result.error, left_s * 1000)
            time.sleep(RETRY_PAUSE_S)
            ctx.beat()
            continue
        break

    end_ns = time.monotonic_ns()
    if result is not None and not d.cancelled:
        finish = result.finish_reason
        degraded = finish in ("error", "cancelled") or not "".join(d.parts).strip()
        error = result.error if finish == "error" else ("empty answer" if degraded else None)
    elif d.cancelled or reason == "cancelled":
        finish, degraded, error = "cancelled", False, None
    else:
        finish, degraded = ("timeout" if reason == "timeout" else "error"), True
    if degraded:
        ctx.log.warning("session %d: %s (%s) after %.0f ms; answering friendly", request.session, finish,
                        error, (end_ns - start_ns) / 1e6)
        d.send((" " if d.parts else "") + FRIENDLY_FAILURE)  # the person always hears something
    ctx.beat()
    text = "".join(d.parts).strip()
    engine_first_ms = result.first_token_ms if result is not None else None
    return LlmDone(session=request.session, text=text, finish_reason=finish, route=route, degraded=degraded,
                   first_token_ns=d.first_ns,
                   compute_ms=round((end_ns - start_ns) / 1e6, 1),
                   first_token_ms=round(engine_first_ms if engine_first_ms is not None
                                        else (d.first_ns - start_ns) / 1e6 if d.first_ns else 0.0, 1),
                   request=request.request)


def _pump(d: _Delivery, attempt: Attempt, first_deadline: int,
          total_deadline: int) -> tuple[StreamResult | None, str, str | None]:
    """Move tokens from the helper to the outbox until it is done, a deadline passes or a Cancel comes."""
    ctx = d.worker.ctx
    while True:
        d.poll_inbox()
        if d.cancelled:
            return None, "cancelled", None
        now = time.monotonic_ns()
        deadline = total_deadline if d.parts else min(first_deadline, total_deadline)
        if now >= deadline:
            which = "total" if d.parts else "first-token"
            return None, "timeout", f"no {'end' if d.parts else 'first token'} within the {which} deadline"
        try:
            kind, payload, t_ns = attempt.queue.get(timeout=min(POLL_S, (deadline - now) / 1e9))
        except queue.Empty:
            ctx.beat()
            continue
        if kind == "done":
            return payload, "", payload.error
        if t_ns > deadline:  # produced too late: the deadline check above handles it next turn
            attempt.cancel.set()
            continue
        d.send(payload, t_ns)
        ctx.beat()


def answer(worker: LlmWorker, request: LlmRequest) -> LlmDone:
    """Route a request: a skill when one matches (instant and exact), else the LLM."""
    cfg, engine, skills = worker.config.llm, worker.engine, worker.skills
    skill = skills.answer(request.text, request.speaker) if skills is not None else None
    if skill is not None:  # already bounded by the skill's own deadline
        def spoken(on_token: Callable[[str], bool]) -> StreamResult:
            on_token(skill.text)
            return StreamResult(skill.text, 1, "stop", skill.elapsed_ms, skill.elapsed_ms)

        done = deliver(worker, request, spoken, route=skill.route)
        return dataclasses.replace(done, degraded=done.degraded or skill.degraded)
    messages = [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": request.text}]
    if skills is not None and getattr(engine, "toolbox", None) is not None:
        engine.toolbox = skills.for_speaker(request.speaker)  # tools obey enrolled_only like skills do

    def produce(on_token: Callable[[str], bool]) -> StreamResult:
        return engine.stream(messages, on_token, max_tokens=cfg.max_tokens)

    return deliver(worker, request, produce, route="llm")


# ---- the worker -----------------------------------------------------------------------


class LlmWorker(Worker):
    """Answers each LlmRequest (a skill or the LLM), one at a time, always in time."""

    poll_s = 0.1
    # In setup(): the embedded engine's gguf is missing or llama.cpp cannot load it (a restart loads the same
    # file). An Ollama server that is down is not: the engine starts anyway and every answer retries it.
    cannot_start = (ModelLoadError,)

    def __init__(self, ctx: WorkerContext, engine: LlmEngine | None = None, skills: SkillRunner | None = None,
                 helpers: Helpers | None = None) -> None:
        super().__init__(ctx)
        self.engine = engine  # tests hand one in; setup() makes the configured one otherwise
        self.skills = skills
        self.helpers = helpers or Helpers()
        self.announcements: queue.SimpleQueue[str] = queue.SimpleQueue()  # timer threads must not write the ring
        self.cancelled: deque[Cancel] = deque(maxlen=64)  # Cancels that came before their request was taken
        self.wedged_after_s = max(2.0 * self.config.llm.total_timeout_s, 30.0)

    def setup(self) -> None:
        if self.engine is None:
            self.engine = make_engine(self.config)
        if self.skills is None:
            self.skills = SkillRunner.from_config(self.config, announce=self.announcements.put)
        if self.config.llm.tools:  # [llm] tools: the allowed skills offered as LLM tools
            from engines.llm.tools import with_tools

            self.engine = with_tools(self.engine, self.skills)
        self.warm()

    def warm(self, timeout_s: float = WARM_TIMEOUT_S) -> None:
        """Warm the engine on a helper thread, beating meanwhile; give up waiting after ``timeout_s``."""
        t0 = time.monotonic()
        thread = threading.Thread(target=self.engine.warm, args=(self.config.llm.system_prompt,), name="llm-warm",
                                  daemon=True)
        thread.start()
        while thread.is_alive() and time.monotonic() - t0 < timeout_s and not self.ctx.should_stop():
            self.ctx.beat()
            thread.join(0.1)
        if thread.is_alive():
            self.log.warning("warm-up still running after %.0f s; serving anyway", timeout_s)
        else:
            self.log.info("warm-up done in %.0f ms", (time.monotonic() - t0) * 1000)

    def step(self) -> None:
        stuck = self.helpers.stuck_for()
        if stuck > self.wedged_after_s and self.engine.name == "embedded":
            self.log.error("an engine call has been stuck for %.0f s; exiting so the supervisor restarts us", stuck)
            sys.exit(EXIT_WEDGED)
        while not self.announcements.empty():
            self.ctx.send(Announce(text=self.announcements.get(), route="skill:timer", t_ns=time.monotonic_ns()))
        super().step()

    def handle(self, message: Any) -> None:
        if isinstance(message, Cancel):
            self.cancelled.append(message)
        elif isinstance(message, LlmRequest):
            if any(cancels(c, message) for c in self.cancelled):
                self.log.info("session %d was cancelled before it started", message.session)
                return
            done = answer(self, message)
            self.log.info("answer (%s, first token %.0f ms%s): %r", done.finish_reason, done.first_token_ms,
                          ", degraded" if done.degraded else "", done.text)
            self.ctx.send(done)

    def close(self) -> None:
        if self.skills is not None:
            self.skills.close()
