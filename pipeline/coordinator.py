"""The session coordinator: turns worker messages into sessions, latency marks and events.

It lives in the parent and only routes small messages; audio never passes through it.
A session is wake → transcript → answer. Deadlines here are the last line of defence: if
STT or the LLM worker dies or hangs mid-session, the person still gets a short, friendly,
degraded answer instead of silence.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.config import Config
from pipeline.latency import LatencyTracker
from pipeline.messages import (
    FRIENDLY_FAILURE, Announce, Cancel, InputEnded, InputStarted, LlmDone, LlmRequest, StartListening, Token,
    Transcript, WakeDetected, WorkerState,
)
from pipeline.metrics_store import MetricsStore

log = logging.getLogger("vigil.coordinator")

BACKSTOP_S = 1.0  # added to the worker's own deadlines before the coordinator steps in


@dataclass
class Session:
    id: int
    wake: WakeDetected
    state: str = "listening"  # listening | answering | done
    transcript: str = ""
    speaker: str = "unknown"
    tokens: list[str] = field(default_factory=list)
    deadline: float = 0.0  # monotonic seconds; past it the session is answered as degraded
    requests: int = 0  # LlmRequests sent for this session so far (their numbers)
    answering: int = 0  # the request whose tokens the person sees
    # A request started on a partial transcript: its text, number, held tokens and its end, if it came.
    guess_text: str | None = None
    guess: int = 0
    held: list[Token] = field(default_factory=list)
    held_done: LlmDone | None = None


class Coordinator:
    def __init__(self, config: Config, send: Callable[[str, Any], bool], emit: Callable[[dict[str, Any]], None],
                 tracker: LatencyTracker, store: MetricsStore | None) -> None:
        self.config = config
        self.send = send  # send(worker name, message)
        self.emit = emit
        self.tracker = tracker
        self.store = store
        self.sessions: dict[int, Session] = {}
        self._ids = itertools.count(1)
        self.input_started: InputStarted | None = None
        self.input_ended: InputEnded | None = None
        self.worker_states: dict[str, WorkerState] = {}
        self.answered = 0
        self.speculation_hits = 0
        self.speculation_misses = 0

    # ---- routing -----------------------------------------------------------------------

    def handle(self, message: Any) -> None:
        if isinstance(message, WakeDetected):
            self._on_wake(message)
        elif isinstance(message, Transcript):
            self._on_transcript(message)
        elif isinstance(message, Token):
            self._on_token(message)
        elif isinstance(message, LlmDone):
            self._on_done(message)
        elif isinstance(message, Announce):
            self._on_announce(message)
        elif isinstance(message, InputStarted):
            self.input_started = message
            self.emit({"type": "input", "t": time.time(), "event": "started", "source": message.source,
                       "seq": message.seq, "t0_ns": message.t0_ns})
        elif isinstance(message, InputEnded):
            self.input_ended = message
            self.emit({"type": "input", "t": time.time(), "event": "ended", "source": message.source,
                       "seq": message.last_seq, "t_ns": message.t_ns})
        elif isinstance(message, WorkerState):
            self.worker_states[message.worker] = message
            if message.state in ("lost", "no_device", "error"):
                self.emit({"type": "error", "t": time.time(), "where": message.worker,
                           "message": f"{message.state}: {message.detail}"})
        else:
            log.warning("unexpected message %r", message)

    def _on_wake(self, wake: WakeDetected) -> None:
        for old in list(self.sessions.values()):  # barge-in: the newest request wins
            self._cancel(old, "superseded by a new wake word")
        session = Session(next(self._ids), wake)
        stt = self.config.stt
        session.deadline = time.monotonic() + stt.max_utterance_s + stt.no_speech_timeout_s + 10.0
        self.sessions[session.id] = session
        self.tracker.mark(session.id, "wake", wake.detected_ns)
        self.tracker.mark(session.id, "wake_audio", wake.audio_ns)
        self.emit({"type": "wake", "t": time.time(), "session": session.id, "seq": wake.seq, "score": wake.score,
                   "engine": wake.engine, "verify_score": None})
        self.send("stt", StartListening(session=session.id, wake_seq=wake.seq, wake_ns=wake.detected_ns))

    def _on_transcript(self, msg: Transcript) -> None:
        session = self.sessions.get(msg.session)
        if session is None or session.state != "listening":
            return
        self.emit({"type": "transcript", "t": time.time(), "session": msg.session, "text": msg.text,
                   "final": msg.final, "speech_end_ns": msg.speech_end_ns})
        if not msg.final:
            if msg.text and self.config.llm.speculate and msg.text != session.guess_text:
                self._drop_guess(session)
                session.guess_text, session.guess = msg.text, self._request(session, msg.text)
            return
        if msg.speech_end_ns:
            self.tracker.mark(msg.session, "speech_end", msg.speech_end_ns)
        self.tracker.mark(msg.session, "transcript", msg.done_ns)
        self.tracker.stage(msg.session, "stt", msg.compute_ms)
        session.transcript = msg.text
        if not msg.text:
            self._drop_guess(session)
            log.info("session %d: nothing heard (%s)", msg.session, msg.reason)
            self._finish(session, route="none", text="", degraded=False)
            return
        session.state = "answering"
        session.deadline = time.monotonic() + self.config.llm.first_token_timeout_s + BACKSTOP_S
        if session.guess and session.guess_text == msg.text:
            self.speculation_hits += 1
            session.answering = session.guess
            self.tracker.mark(msg.session, "llm_request")
            held, done = session.held, session.held_done
            session.held, session.held_done = [], None
            for token in held:  # the person sees them now, not when they were made
                self._on_token(dataclasses.replace(token, t_ns=max(token.t_ns, time.monotonic_ns())))
            if done is not None:
                self._on_done(done)
            return
        if session.guess:
            self.speculation_misses += 1
        self._drop_guess(session)
        self.tracker.mark(msg.session, "llm_request")
        # The LLM worker enforces the first-token deadline itself; this later one covers a dead or hung worker.
        session.answering = self._request(session, msg.text)

    def _request(self, session: Session, text: str) -> int:
        session.requests += 1
        self.send("llm", LlmRequest(session=session.id, text=text, speaker=session.speaker,
                                    t_ns=time.monotonic_ns(), request=session.requests))
        return session.requests

    def _drop_guess(self, session: Session) -> None:
        if session.guess and session.held_done is None:
            self.send("llm", Cancel(session.id, session.guess))
        session.guess_text, session.guess, session.held, session.held_done = None, 0, [], None

    def _on_token(self, token: Token) -> None:
        session = self.sessions.get(token.session)
        if session is None:
            return
        if session.state == "listening" and token.request == session.guess:
            session.held.append(token)  # an answer to the partial transcript: wait for the final one
            return
        if session.state != "answering" or token.request != session.answering:
            return
        if not session.tokens:
            self.tracker.mark(token.session, "first_token", token.t_ns)
            session.deadline = time.monotonic() + self.config.llm.total_timeout_s + BACKSTOP_S
        session.tokens.append(token.text)
        self.emit({"type": "token", "t": time.time(), "session": token.session, "text": token.text})

    def _on_done(self, done: LlmDone) -> None:
        session = self.sessions.get(done.session)
        if session is None:
            return
        if session.state == "listening" and done.request == session.guess:
            session.held_done = done
            return
        if session.state != "answering" or done.request != session.answering:
            return
        self.tracker.mark(done.session, "done")
        self.tracker.stage(done.session, "llm_first_token", done.first_token_ms)
        self.tracker.stage(done.session, "llm", done.compute_ms)
        self._finish(session, route=done.route, text=done.text or "".join(session.tokens).strip(),
                     degraded=done.degraded)

    def _on_announce(self, msg: Announce) -> None:
        """A timer went off: say so like any answer, as its own session with nothing heard."""
        session = next(self._ids)
        self.emit({"type": "token", "t": time.time(), "session": session, "text": msg.text})
        self.emit({"type": "response", "t": time.time(), "session": session, "transcript": "", "speaker": "unknown",
                   "route": msg.route, "text": msg.text, "degraded": False, "latency_ms": {}})

    # ---- endings -----------------------------------------------------------------------

    def _finish(self, session: Session, route: str, text: str, degraded: bool) -> None:
        session.state = "done"
        self.sessions.pop(session.id, None)
        spans = self.tracker.spans(session.id)
        if route not in ("none", "cancelled"):
            self.answered += 1
            self.emit({"type": "response", "t": time.time(), "session": session.id,
                       "transcript": session.transcript, "speaker": session.speaker, "route": route,
                       "text": text, "degraded": degraded, "latency_ms": spans})
        if self.store is not None:
            self.store.record(session.id, transcript=session.transcript, speaker=session.speaker, route=route,
                              degraded=degraded, response=text, spans=spans, marks=self.tracker.marks(session.id))

    def _answer_friendly(self, session: Session, reason: str) -> None:
        """The person must never be left in silence: stream a short apology, marked degraded."""
        log.warning("session %d: %s; answering with the friendly fallback", session.id, reason)
        self.send("llm", Cancel(session.id))
        if not session.tokens:
            self.tracker.mark(session.id, "first_token")
        self.emit({"type": "token", "t": time.time(), "session": session.id, "text": FRIENDLY_FAILURE})
        self.tracker.mark(session.id, "done")
        self._finish(session, route="llm", text=FRIENDLY_FAILURE, degraded=True)

    def _cancel(self, session: Session, reason: str) -> None:
        log.info("session %d cancelled: %s", session.id, reason)
        if session.requests:  # the answer, or one started on a partial transcript
            self.send("llm", Cancel(session.id))
        self._finish(session, route="none" if session.state == "listening" else "cancelled",
                     text="".join(session.tokens).strip(), degraded=False)

    def check_deadlines(self) -> None:
        now = time.monotonic()
        for session in list(self.sessions.values()):
            if now <= session.deadline:
                continue
            if session.state == "listening":
                self.emit({"type": "error", "t": time.time(), "where": "stt",
                           "message": f"session {session.id}: no transcript in time"})
                self._finish(session, route="none", text="", degraded=True)
            else:
                self._answer_friendly(session, "the LLM missed its deadline")

    def idle(self) -> bool:
        return not self.sessions
