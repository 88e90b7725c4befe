"""The session coordinator: turns worker messages into sessions, latency marks and events.

It lives in the parent and only routes small messages; audio never passes through it.
A session is wake → transcript → answer. With two-stage wake a session starts as a
*proposal* that STT's first pass accepts (then the `wake` event) or turns down (a silent
`wake_rejected`); speaker ID runs beside STT and its name is used only if it is known by the
time the answer starts (plus `[speaker] deadline_ms` after speech end, at most). Deadlines here
are the last line of defence: if STT or the LLM worker dies or hangs mid-session, the person
still gets a short, friendly, degraded answer instead of silence.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from core.config import Config
from core.events import (
    DropEvent, ErrorEvent, Event, InputEndedEvent, InputStartedEvent, ResponseEvent, SpeakerEvent, TokenEvent,
    TranscriptEvent, WakeEvent, WakeRejectedEvent,
)
from pipeline.latency import LatencyTracker
from core.messages import (
    FRIENDLY_FAILURE, Announce, Cancel, InputEnded, InputStarted, LlmDone, LlmRequest, SpeakerResult,
    StartListening, Token, Transcript, WakeDetected, WakeVerdict, WorkerState,
)
from pipeline.metrics_store import MetricsStore

log = logging.getLogger("vigil.coordinator")

BACKSTOP_S = 1.0  # added to the worker's own deadlines before the coordinator steps in
# The LLM's first-token deadline is counted from the moment the person stopped speaking, the same one for a
# request started on a partial transcript and for the final one; a transcript that came very late still
# gets this long for a healthy LLM to answer.
MIN_ANSWER_S = 0.2
# A wake or a request this old when it reaches the parent was not handled in time (the parent was stopped
# or starved): answering it now would surprise the person more than an apology. Far above a healthy
# pipeline's worst speech end -> transcript (~2.2 s measured on a 2-core box loaded to 8).
STALE_S = 8.0
MISSED = "Sorry, I missed that."  # a request heard long ago (the parent was stopped): not answered late

SessionState = Literal["proposed", "listening", "waiting_speaker", "answering", "done"]


@dataclass
class Session:
    id: int
    wake: WakeDetected
    state: SessionState = "listening"
    transcript: str = ""
    speaker: str = "unknown"
    speaker_known: bool = False  # a SpeakerResult came (its name may still be "unknown")
    speaker_wait_until: float = 0.0  # monotonic: waiting_speaker ends here at the latest
    verify_score: float | None = None
    tokens: list[str] = field(default_factory=list)
    deadline: float = 0.0  # monotonic seconds; past it the session is answered as degraded
    requests: int = 0  # LlmRequests sent for this session so far (their numbers)
    answering: int = 0  # the request whose tokens the person sees
    # A request started on a partial transcript: its text, number, held tokens and its end, if it came.
    guess_text: str | None = None
    guess: int = 0
    guess_speaker: str = "unknown"
    held: list[Token] = field(default_factory=list)
    held_done: LlmDone | None = None
    speech_end_ns: int = 0  # of the transcript being answered (or guessed): the LLM deadline counts from it

    def listen(self, verify: bool = False) -> StartListening:
        """What STT (and speaker ID) get to hear this session's request from the shared ring."""
        return StartListening(session=self.id, wake_seq=self.wake.seq, wake_ns=self.wake.detected_ns, verify=verify,
                              start_seq=self.wake.start_seq)


class Coordinator:
    def __init__(self, config: Config, send: Callable[[str, Any], bool], emit: Callable[[Event], None],
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
        self.wake_proposals = 0
        self.wake_rejections = 0
        self.verify_faults = 0  # verdicts that failed or came too late: the proposer's score decided
        self.proposals_ignored = 0  # proposals while someone was already being heard
        self.proposals_superseded = 0  # proposals dropped unjudged because a sure wake came meanwhile
        self.speaker_late = 0  # answers that went on without the speaker result
        self.stale_wakes = 0  # wakes older than stale_s when they reached us: dropped (a `drop` event)
        self.stale_answers = 0  # requests heard longer than stale_s ago: answered MISSED, not answered late
        self.stale_s = STALE_S

    # ---- routing -----------------------------------------------------------------------

    def handle(self, message: Any) -> None:
        if isinstance(message, WakeDetected):
            self._on_wake(message)
        elif isinstance(message, WakeVerdict):
            self._on_verdict(message)
        elif isinstance(message, SpeakerResult):
            self._on_speaker(message)
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
            self.emit(InputStartedEvent(source=message.source, seq=message.seq, t0_ns=message.t0_ns))
        elif isinstance(message, InputEnded):
            self.input_ended = message
            self.emit(InputEndedEvent(source=message.source, seq=message.last_seq, t_ns=message.t_ns))
        elif isinstance(message, WorkerState):
            self.worker_states[message.worker] = message
            if message.state in ("lost", "no_device", "error"):
                self.emit(ErrorEvent(where=message.worker, message=f"{message.state}: {message.detail}"))
        else:
            log.warning("unexpected message %r", message)

    def _stale(self, t_ns: int) -> bool:
        return bool(t_ns) and (time.monotonic_ns() - t_ns) / 1e9 > self.stale_s

    def _on_wake(self, wake: WakeDetected) -> None:
        if self._stale(wake.detected_ns):
            self.stale_wakes += 1
            log.warning("wake at frame %d is %.1f s old: dropped", wake.seq,
                        (time.monotonic_ns() - wake.detected_ns) / 1e9)
            self.emit(DropEvent(ring="stale_wake", count=1))
            return
        if self.config.wake.verify == "off" or wake.sure:
            session = self._new_session(wake)
            self._accept(session, verify_score=None)
            return
        # Two-stage: a proposal. Someone being heard right now is not interrupted by one.
        if any(s.state in ("proposed", "listening") for s in self.sessions.values()):
            self.proposals_ignored += 1
            log.info("wake proposal at frame %d ignored: a request is being heard", wake.seq)
            return
        self.wake_proposals += 1
        session = self._new_session(wake)
        session.state = "proposed"
        session.deadline = time.monotonic() + self.config.wake.verify_deadline_s
        self.send("stt", session.listen(verify=True))

    def _new_session(self, wake: WakeDetected) -> Session:
        session = Session(next(self._ids), wake)
        self.sessions[session.id] = session
        self.tracker.mark(session.id, "wake", wake.detected_ns)
        self.tracker.mark(session.id, "wake_audio", wake.audio_ns)
        return session

    def _accept(self, session: Session, verify_score: float | None, stt_listening: bool = False) -> None:
        """A wake to act on: supersede older sessions (barge-in), start STT and speaker ID."""
        for old in list(self.sessions.values()):  # barge-in: the newest request wins
            if old is session:
                continue
            if old.state == "proposed":  # a proposal still being checked (an utterance start, say) was no wake
                self.proposals_superseded += 1
                self.sessions.pop(old.id, None)
            else:
                self._cancel(old, "superseded by a new wake word")
        stt = self.config.stt
        session.state = "listening"
        session.verify_score = verify_score
        session.deadline = time.monotonic() + stt.max_utterance_s + stt.no_speech_timeout_s + 10.0
        wake = session.wake
        self.emit(WakeEvent(session=session.id, seq=wake.seq, score=wake.score, engine=wake.engine,
                            verify_score=verify_score))
        start = session.listen()
        if not stt_listening:
            self.send("stt", start)
        if self.config.speaker.enabled:
            self.send("speaker", start)

    def _on_verdict(self, verdict: WakeVerdict) -> None:
        session = self.sessions.get(verdict.session)
        if session is None or session.state != "proposed":
            return
        self.tracker.stage(session.id, "verify", verdict.compute_ms)
        if verdict.score < 0:  # the verifier failed: the proposer's own score decides
            self._verifier_fault(session, verdict.heard, stt_listening=True)
        elif verdict.accepted:
            self.tracker.mark(session.id, "verified", verdict.done_ns)
            self._accept(session, verify_score=verdict.score, stt_listening=True)
        else:
            self._reject(session, verdict.heard, verdict.score)

    def _verifier_fault(self, session: Session, why: str, stt_listening: bool = False) -> None:
        self.verify_faults += 1
        log.warning("session %d: wake verifier failed (%s); proposer score %.2f decides", session.id, why,
                    session.wake.score)
        if session.wake.score >= self.config.wake.threshold:
            self.tracker.mark(session.id, "verified")
            self._accept(session, verify_score=None, stt_listening=stt_listening)  # else STT may have restarted
        else:
            self.send("stt", Cancel(session.id))
            self._reject(session, "", None)

    def _reject(self, session: Session, heard: str, verify_score: float | None) -> None:
        """A proposal turned down: no answer, no sound — only a counted event."""
        self.wake_rejections += 1
        self.sessions.pop(session.id, None)
        log.info("wake proposal at frame %d rejected (heard %r)", session.wake.seq, heard)
        self.emit(WakeRejectedEvent(seq=session.wake.seq, score=session.wake.score, heard=heard,
                                    verify_score=verify_score))

    def _on_speaker(self, msg: SpeakerResult) -> None:
        session = self.sessions.get(msg.session)
        if session is None:
            return
        session.speaker, session.speaker_known = msg.name, True
        self.tracker.mark(msg.session, "speaker_start", msg.started_ns)
        self.tracker.mark(msg.session, "speaker", msg.done_ns)
        self.tracker.stage(msg.session, "speaker", msg.compute_ms)
        self.emit(SpeakerEvent(session=msg.session, name=msg.name, score=msg.score))
        if session.state == "waiting_speaker":
            self._answer(session)

    def _on_transcript(self, msg: Transcript) -> None:
        session = self.sessions.get(msg.session)
        if session is None or session.state != "listening":
            return
        self.emit(TranscriptEvent(session=msg.session, text=msg.text, final=msg.final,
                                  speech_end_ns=msg.speech_end_ns))
        if not msg.final:
            if msg.text and self.config.llm.speculate and msg.text != session.guess_text:
                self._drop_guess(session)
                session.guess_text, session.guess = msg.text, self._request(session, msg.text, msg.speech_end_ns)
                session.guess_speaker = session.speaker
            return
        if msg.speech_end_ns:
            self.tracker.mark(msg.session, "speech_end", msg.speech_end_ns)
        if msg.endpoint_ns:
            self.tracker.mark(msg.session, "endpoint", msg.endpoint_ns)
        if msg.turn_score >= 0:
            self.tracker.note(msg.session, "endpoint_score", msg.turn_score)
        self.tracker.mark(msg.session, "transcript", msg.done_ns)
        self.tracker.stage(msg.session, "stt", msg.compute_ms)
        session.transcript = msg.text
        session.speech_end_ns = msg.speech_end_ns
        if msg.text and self._stale(msg.speech_end_ns):
            self.stale_answers += 1
            self._drop_guess(session)
            self._answer_friendly(session, f"the request ended {(time.monotonic_ns() - msg.speech_end_ns) / 1e9:.1f} s "
                                           "ago", text=MISSED)
            return
        if not msg.text:
            self._drop_guess(session)
            log.info("session %d: nothing heard (%s)", msg.session, msg.reason)
            self._finish(session, route="none", text="", degraded=False)
            return
        wait_s = 0.0 if session.speaker_known else self._speaker_wait_s(msg.speech_end_ns)
        if wait_s > 0:  # speaker ID is nearly done: give it the rest of its short deadline
            session.state = "waiting_speaker"
            session.speaker_wait_until = time.monotonic() + wait_s
            return
        self._answer(session)

    def _speaker_wait_s(self, speech_end_ns: int) -> float:
        """How much longer the answer may wait for speaker ID: never past speech end + deadline_ms."""
        if not self.config.speaker.enabled or not speech_end_ns:
            return 0.0
        limit_ns = speech_end_ns + self.config.speaker.deadline_ms * 1_000_000
        return max(0.0, (limit_ns - time.monotonic_ns()) / 1e9)

    def _answer(self, session: Session) -> None:
        """Start (or release) the answer to the final transcript, with whatever speaker is known."""
        if not session.speaker_known and self.config.speaker.enabled:
            self.speaker_late += 1
        msg_text = session.transcript
        session.state = "answering"
        session.deadline = self._deadline_base_ns(session.speech_end_ns) / 1e9 \
            + self.config.llm.first_token_timeout_s + BACKSTOP_S
        # A guess made before the speaker was known is only good if no skill depends on who asks.
        same_speaker = session.guess_speaker == session.speaker or not self.config.skills.enrolled_only.strip()
        if session.guess and session.guess_text == msg_text and same_speaker:
            self.speculation_hits += 1
            session.answering = session.guess
            self.tracker.mark(session.id, "llm_request")
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
        self.tracker.mark(session.id, "llm_request")
        # The LLM worker enforces the first-token deadline itself; this later one covers a dead or hung worker.
        session.answering = self._request(session, msg_text, session.speech_end_ns)

    def _deadline_base_ns(self, speech_end_ns: int) -> int:
        """Where the first-token deadline is counted from: the speech end, unless the transcript came so late
        that less than MIN_ANSWER_S would be left (then from MIN_ANSWER_S before the deadline, from now)."""
        now = time.monotonic_ns()
        budget = self.config.llm.first_token_timeout_s
        latest = now - int((budget - min(MIN_ANSWER_S, budget)) * 1e9)
        return max(speech_end_ns, latest) if speech_end_ns else now

    def _request(self, session: Session, text: str, speech_end_ns: int) -> int:
        """Ask the LLM worker; its deadline (LlmRequest.t_ns) is counted from the speech end: one deadline for
        a guess and the final request, so a hung LLM keeps the person waiting no longer than the budget."""
        session.requests += 1
        self.send("llm", LlmRequest(session=session.id, text=text, speaker=session.speaker,
                                    t_ns=self._deadline_base_ns(speech_end_ns), request=session.requests))
        return session.requests

    def _drop_guess(self, session: Session) -> None:
        if session.guess and session.held_done is None:
            self.send("llm", Cancel(session.id, session.guess))
        session.guess_text, session.guess, session.held, session.held_done = None, 0, [], None

    def _on_token(self, token: Token) -> None:
        session = self.sessions.get(token.session)
        if session is None:
            return
        if session.state in ("listening", "waiting_speaker") and token.request == session.guess:
            session.held.append(token)  # an answer to the partial transcript: wait for the final one
            return
        if session.state != "answering" or token.request != session.answering:
            return
        if not session.tokens:
            self.tracker.mark(token.session, "first_token", token.t_ns)
            session.deadline = time.monotonic() + self.config.llm.total_timeout_s + BACKSTOP_S
        session.tokens.append(token.text)
        self.emit(TokenEvent(session=token.session, text=token.text))

    def _on_done(self, done: LlmDone) -> None:
        session = self.sessions.get(done.session)
        if session is None:
            return
        if session.state in ("listening", "waiting_speaker") and done.request == session.guess:
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
        self.emit(TokenEvent(session=session, text=msg.text))
        self.emit(ResponseEvent(session=session, transcript="", speaker="unknown", route=msg.route, text=msg.text,
                                degraded=False, latency_ms={}))

    # ---- endings -----------------------------------------------------------------------

    def _finish(self, session: Session, route: str, text: str, degraded: bool) -> None:
        session.state = "done"
        self.sessions.pop(session.id, None)
        spans = self.tracker.spans(session.id)
        if route not in ("none", "cancelled"):
            self.answered += 1
            self.emit(ResponseEvent(session=session.id, transcript=session.transcript, speaker=session.speaker,
                                    route=route, text=text, degraded=degraded, latency_ms=spans))
        if self.store is not None:
            self.store.record(session.id, transcript=session.transcript, speaker=session.speaker, route=route,
                              degraded=degraded, response=text, spans=spans, marks=self.tracker.marks(session.id))

    def _answer_friendly(self, session: Session, reason: str, text: str = FRIENDLY_FAILURE) -> None:
        """The person must never be left in silence: stream a short apology, marked degraded."""
        log.warning("session %d: %s; answering with the friendly fallback", session.id, reason)
        self.send("llm", Cancel(session.id))
        if not session.tokens:
            self.tracker.mark(session.id, "first_token")
        self.emit(TokenEvent(session=session.id, text=text))
        self.tracker.mark(session.id, "done")
        self._finish(session, route="llm", text=text, degraded=True)

    def _cancel(self, session: Session, reason: str) -> None:
        log.info("session %d cancelled: %s", session.id, reason)
        if session.requests:  # the answer, or one started on a partial transcript
            self.send("llm", Cancel(session.id))
        self._finish(session, route="cancelled" if session.state == "answering" else "none",
                     text="".join(session.tokens).strip(), degraded=False)

    def tick(self) -> None:
        """Called on every loop turn: the speaker deadline is short, so it is checked often."""
        now = time.monotonic()
        for session in list(self.sessions.values()):
            if session.state == "waiting_speaker" and now >= session.speaker_wait_until:
                self._answer(session)

    def check_deadlines(self) -> None:
        now = time.monotonic()
        for session in list(self.sessions.values()):
            if now <= session.deadline:
                continue
            if session.state == "proposed":
                self._verifier_fault(session, "no verdict in time")
            elif session.state == "listening":
                self.emit(ErrorEvent(where="stt", message=f"session {session.id}: no transcript in time"))
                self._finish(session, route="none", text="", degraded=True)
            else:
                self._answer_friendly(session, "the LLM missed its deadline")

    def worker_exited(self, name: str) -> None:
        """The supervisor saw a worker die (crash, kill, hang): what it was doing for a session is lost.

        STT: the request being heard is handed to the restarted STT (its audio is still in the ring,
        read from the wake frame on), so the wake is not wasted and later wakes are not ignored for the
        whole listening deadline. The LLM and speaker ID are covered by their own short deadlines.
        """
        if name != "stt":
            return
        for session in self.sessions.values():
            if session.state == "listening":
                log.warning("session %d: stt exited while hearing it; the restarted stt takes it from the ring",
                            session.id)
                self.send("stt", session.listen())

    def idle(self) -> bool:
        return not self.sessions
