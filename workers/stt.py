"""STT worker: after a wake, read the request from the shared ring, endpoint it, transcribe it.

It reads the same audio frames the wake-word worker saw (from the wake frame minus a short
pre-roll), so nothing is copied through the parent. Silero VAD finds the pauses;
`speech_end_ns` is the capture time of the last voiced sample, the start of the headline
span speech end → first token.

Endpointing (`[stt] endpoint`): "turn" transcribes the moment the voice drops and asks whether
the request is complete (engines/stt/turn.py: the transcript's last word, Smart Turn on the
audio, the pause so far); a complete one ends at once, an unfinished one ("set a timer for")
is heard on, up to `turn_max_pause_ms`. "silence" waits `end_silence_ms`, transcribing
speculatively after `speculative_silence_ms`.

With two-stage wake, STT is also the verifier: for a proposed wake it first checks the wake
phrase (the ~2 s before the proposing frame, plus a little after) and answers with a
`WakeVerdict`; the request's own frames keep arriving in the ring meanwhile, so the check
costs the answer nothing unless the request is shorter than the check.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.audio import SAMPLE_NS, SAMPLE_RATE
from core.messages import StartListening, Transcript, WakeVerdict, WorkerState
from workers.base import Worker
from engines.stt.background import BackgroundHearing
from engines.stt.turn import SmartTurn, TurnPolicy, TurnVerdict, open_ending
from engines.stt.vad import Endpointer, SileroVad
from engines.stt.whispercpp import Hearing, WhisperEngine

# Where the request starts after a verified wake: this long after the wake phrase's end as the verifier aligned
# it (its cross-attention puts the end a little early). Measured by `python -m bench.stt_study hearing` on the
# bench and wake corpora: +50 ms heard the bench corpus's clean requests best; the true end, the aligned end
# itself and 100 ms earlier cut more first words, the utterance from its start leaks the wake phrase.
WAKE_END_LAG_S = 0.05

# How long the heartbeat goes on (Worker.busy) inside one call that cannot beat: a transcription (tiny.en: ~0.5 s
# for 11 s of speech; a bigger model several times that) and a verifier pass (~30 ms). Past it the call counts as
# wedged and the supervisor kills the worker as hung.
TRANSCRIBE_BUSY_S = 60.0
VERIFY_BUSY_S = 10.0
# How often the frame loop looks in on a pause decode running beside it (frames come every 80 ms).
DECODE_POLL_S = 0.005

_WAKE_PREFIX = re.compile(r"^\W*(?:(?:hey|hi|a|okay|ok|page)\W+)?(?:jarvis|jervis|travis|javis|jarmis|jardis|"
                          r"arvis|jarvis's)\b\W*", re.IGNORECASE)
# What tiny.en writes for the last syllable of "Jarvis" when the clip starts inside it ("This, set a timer",
# "was what time is it"), seen on the bench corpora (bench/stt_study.py hearing) ...
_WAKE_TAIL = r"(?:this is|this|is|was|vis|his|us|as|service|but)"
# ... stripped only where no request goes on: before a comma or full stop, or before a word that starts one.
_REQUEST_START = (r"(?:what|what's|whats|how|who|who's|when|where|why|which|set|tell|turn|start|stop|cancel|can|"
                  r"could|would|will|please|play|give|remind|is it|are)")
_WAKE_TAIL_PREFIX = re.compile(rf"^\W*{_WAKE_TAIL}(?:\s*[,.!]+\s*|\s+(?={_REQUEST_START}\b))", re.IGNORECASE)


def strip_wake_phrase(text: str) -> str:
    """The request without what whisper heard of the wake phrase before it: "Hey Jarvis," (from the pre-roll)
    or the tail of "Jarvis" when the clip starts inside it ("This, set a timer for 5 minutes")."""
    text = _WAKE_PREFIX.sub("", text.strip(), count=1).strip()
    return _WAKE_TAIL_PREFIX.sub("", text, count=1).strip()


class Session:
    """One request being heard: the frames so far and their capture times."""

    def __init__(self, request: StartListening, first_seq: int, frame_samples: int) -> None:
        self.request = request
        self.first_seq = first_seq
        self.frame_samples = frame_samples
        self.frames: list[np.ndarray] = []
        self.capture_ns: list[int] = []
        self.offset = 0  # samples fed to the endpointer before its last reset
        # Speech that ends inside the pre-roll is the wake phrase, not the request.
        self.request_start_sample = (request.wake_seq + 1 - first_seq) * frame_samples
        self.skip = 0  # samples at the start not transcribed (the wake phrase, once the verifier placed it)

        self.speculative: tuple[int, str, float] | None = None  # (end sample, text, compute ms)
        self.pause: tuple[int, TurnVerdict] | None = None  # "turn": the current pause's end sample and verdict
        self.decode: tuple[int, BackgroundHearing] | None = None  # "turn": the current pause's decode, running

    def audio(self, end_sample: int) -> np.ndarray:
        return np.concatenate(self.frames)[self.skip:end_sample]

    def starts_after_wake_phrase(self, phrase_end_seq_sample: int) -> None:
        """The verifier found where the wake phrase ends (``seq * frame_samples`` units): the request starts
        ``WAKE_END_LAG_S`` after it, not at the proposal frame (an onset proposal comes ~1 s into the
        utterance, an openWakeWord peak anywhere from the end of "jar-" to well after "-vis"). An end before
        the session's first sample leaves the start where it was (the pre-roll before the wake frame)."""
        rel = phrase_end_seq_sample + int(WAKE_END_LAG_S * SAMPLE_RATE) - self.first_seq * self.frame_samples
        if rel > 0:
            self.request_start_sample = self.skip = rel
            self.forget_pauses()  # they were heard from the old start

    def forget_pauses(self) -> None:
        """Drop what was heard at earlier pauses, and abandon a pause decode still running."""
        self.drop_decode()
        self.speculative = self.pause = None

    def drop_decode(self) -> None:
        """Abandon the pause decode still running, if any: its pause is over."""
        if self.decode is not None:
            self.decode[1].abort()
            self.decode = None

    def time_of(self, sample: int) -> int:
        index = min(sample // self.frame_samples, len(self.capture_ns) - 1)
        last_in_frame = (index + 1) * self.frame_samples - 1
        return self.capture_ns[index] - (last_in_frame - sample) * SAMPLE_NS


def request_audio(session: Session, end_sample: int) -> np.ndarray:
    """The request up to a pause, with a little audio past the last voiced sample (it helps the last word)."""
    return session.audio(end_sample + int(0.05 * SAMPLE_RATE))


def transcribe(engine: WhisperEngine, session: Session, end_sample: int) -> tuple[str, float]:
    started = time.perf_counter()
    text = strip_wake_phrase(engine.transcribe(request_audio(session, end_sample)))
    return text, (time.perf_counter() - started) * 1000


class WakeCheck:
    """The audio of a proposed wake phrase, gathered frame by frame until the verifier can judge it."""

    def __init__(self, request: StartListening, frame_samples: int) -> None:
        from engines.wake.text_verify import WINDOW_AFTER_S, WINDOW_BEFORE_S

        self.request = request
        self.frame_samples = frame_samples
        self.frames_before = int(np.ceil(WINDOW_BEFORE_S * SAMPLE_RATE / frame_samples))
        self.last_seq = request.wake_seq + int(np.ceil(WINDOW_AFTER_S * SAMPLE_RATE / frame_samples))
        self.frames: list[np.ndarray] = []
        self.first_seq: int | None = None
        self.phrase_end: int | None = None  # after judge(): where the verifier put the end of the wake phrase

    def feed(self, seq: int, samples: np.ndarray) -> bool:
        """Collect a frame; True once the window is complete."""
        if self.first_seq is None:
            self.first_seq = seq
        self.frames.append(samples)
        return seq >= self.last_seq

    def place(self, verifier) -> int | None:
        """Where the wake phrase ends (``seq * frame_samples`` units) for a wake that needs no verdict (a sure
        one): the verifier's alignment only; None when it has none or fails (then the pre-roll stands)."""
        try:
            self.judge(verifier)
        except Exception:  # placing the request's start must never stop the request
            return None
        return self.phrase_end

    def judge(self, verifier) -> WakeVerdict:
        session = self.request.session
        started = time.perf_counter()
        if verifier is None:
            return WakeVerdict(session, False, -1.0, "error: no verifier", 0.0, time.monotonic_ns())
        try:
            verdict = verifier.check(np.concatenate(self.frames))
        except Exception as exc:  # a broken verifier must never stop wake: the coordinator falls back
            return WakeVerdict(session, False, -1.0, f"error: {exc}"[:200],
                               round((time.perf_counter() - started) * 1000, 1), time.monotonic_ns())
        if verdict.phrase_end_s is not None and self.first_seq is not None:
            self.phrase_end = self.first_seq * self.frame_samples + int(verdict.phrase_end_s * SAMPLE_RATE)
        return WakeVerdict(session, bool(verdict.accepted), round(float(verdict.score), 3), verdict.heard[:200],
                           round(float(verdict.compute_ms), 1), time.monotonic_ns())


class SttWorker(Worker):
    """Hears one request at a time: from the wake frame until Silero VAD says speech ended."""

    def setup(self) -> None:
        cfg = self.config.stt
        self.engine = WhisperEngine(Path(cfg.model).resolve(), n_threads=cfg.threads)
        self.engine.transcribe(np.zeros(SAMPLE_RATE, dtype=np.int16))  # first call allocates; do it before a user waits
        end_silence_ms = cfg.turn_max_pause_ms if cfg.endpoint == "turn" else cfg.end_silence_ms
        self.endpointer = Endpointer(SileroVad(threshold=cfg.vad_threshold), end_silence_ms=end_silence_ms,
                                     no_speech_timeout_s=cfg.no_speech_timeout_s, max_utterance_s=cfg.max_utterance_s,
                                     frame_samples=self.ctx.audio.frame_samples)
        self.turn_policy = TurnPolicy(threshold=cfg.turn_threshold, max_pause_ms=cfg.turn_max_pause_ms,
                                      sure_ending=cfg.turn_sure_ending)
        self.turn_model = None
        if cfg.endpoint == "turn":
            if self.turn_policy.model_can_decide(cfg.turn_min_pause_ms):
                self.turn_model = self.make_turn_model()
            else:
                self.log.info("turn model not loaded: at turn_threshold %.2f a transcript that reads complete ends "
                              "the request on its words alone (raise [stt] turn_threshold to let Smart Turn judge)",
                              cfg.turn_threshold)
        self.verifier = self.make_verifier()
        self.reader = self.ctx.audio.reader(slot=self.ctx.spec.audio_slot)
        self.reader.set_active(False)

    def make_turn_model(self) -> SmartTurn | None:
        """Smart Turn, warmed; None when it cannot load (then the transcript and the pause decide alone)."""
        from models.provision import SMART_TURN

        try:
            model = SmartTurn(Path(self.config.models.dir).expanduser() / SMART_TURN.filename, threads=1)
            model.score(np.zeros(SAMPLE_RATE, dtype=np.int16))
            return model
        except Exception:  # endpointing must never stop because the model cannot start
            self.log.exception("turn model unavailable; the transcript and the pause decide")
            return None

    def make_verifier(self):
        """The configured wake verifier, or None (then every proposal is a counted verifier fault and the
        proposer's own threshold decides: wake never stops because the verifier cannot start). A verifier
        that cannot start is reported at once (an `error` event, a degraded /healthz), not at the first wake."""
        wake = self.config.wake
        verifier = None
        try:
            if wake.verify == "whisper":
                from engines.wake.text_verify import WakeVerifier

                verifier = WakeVerifier(self.engine)
            elif wake.verify == "forced":
                from engines.wake.forced import ForcedPhraseScorer, ForcedVerifier
                from models.provision import WHISPER_CT2

                model_dir = (Path(self.config.models.dir).expanduser() / WHISPER_CT2.filename).parent
                verifier = ForcedVerifier(ForcedPhraseScorer(model_dir, threads=1), min_margin=wake.verify_margin,
                                          min_log10p=wake.verify_floor)
        except Exception as exc:
            self.log.exception("wake verifier %r unavailable; the proposer's threshold decides", wake.verify)
            self.report_verifier("error", f"wake verifier {wake.verify!r} unavailable: {exc}")
        else:
            if verifier is not None:  # after a restart that healed it, /healthz is no longer degraded
                self.report_verifier("running", f"wake verifier {wake.verify!r} ready")
        return verifier

    def report_verifier(self, state: str, detail: str) -> None:
        self.ctx.send(WorkerState(worker=self.ctx.name, state=state, detail=detail[:300], t_ns=time.monotonic_ns()))

    def handle(self, message: Any) -> None:
        if not isinstance(message, StartListening):
            return
        self.reader.set_active(True)
        try:
            result = self.listen(message)
        finally:
            self.reader.set_active(False)
        if result is not None:
            self.log.info("transcript (%s, %.0f ms): %r", result.reason, result.compute_ms, result.text)
            self.ctx.send(result)

    # ---- endpointing ----------------------------------------------------------------------

    def transcribe(self, session: Session, end_sample: int) -> tuple[str, float]:
        with self.busy(TRANSCRIBE_BUSY_S):
            return transcribe(self.engine, session, end_sample)

    def endpointing(self, session: Session) -> Transcript | None:
        """Called on every frame without an endpointer event: the final transcript when this pause ends
        the request ("turn"), else None (meanwhile a partial transcript may go out for the LLM to start)."""
        if self.config.stt.endpoint == "turn":
            return self.turn_endpoint(session)
        self.speculate(session)
        return None

    def speculate(self, session: Session) -> None:
        """"silence": in a pause long enough to maybe be the end, transcribe now (the endpoint wait hides it)."""
        threshold = self.config.stt.speculative_silence_ms * 16
        endpointer = self.endpointer
        pause = endpointer.silence_since
        if not threshold or pause is None:
            return
        end_sample = session.offset + pause
        if end_sample <= session.request_start_sample or endpointer.samples_fed - pause < threshold:
            return
        if session.speculative is None or session.speculative[0] != end_sample:
            text, compute_ms = self.transcribe(session, end_sample)
            session.speculative = (end_sample, text, compute_ms)
            self.ctx.send(Transcript(session.request.session, text, False, session.time_of(end_sample),
                                     time.monotonic_ns(), round(compute_ms, 1), "partial"))

    def turn_endpoint(self, session: Session) -> Transcript | None:
        """"turn": decode each pause the moment the voice drops, on a helper thread while the frames go on
        (the voice coming back abandons it); then judge the pause once, and end the request when the pause is
        at least `turn_min_pause_ms` and as long as its verdict needs (at once for a complete request)."""
        endpointer = self.endpointer
        pause = endpointer.silence_since
        end_sample = None if pause is None else session.offset + pause
        if session.decode is not None and session.decode[0] != end_sample:  # the voice came back
            session.drop_decode()
            self.log.debug("pause decode abandoned: the voice came back (whisper.cpp logs 'failed to encode')")
        if end_sample is None or end_sample <= session.request_start_sample:
            return None
        pause_ms = (endpointer.samples_fed - pause) * 1000 / SAMPLE_RATE
        if session.pause is None or session.pause[0] != end_sample:
            if session.decode is None:
                if self.reader.lag == 0:  # with audio waiting, a pause that is already over must not cost a decode
                    session.decode = (end_sample, BackgroundHearing(self.engine, request_audio(session, end_sample),
                                                                    strip_wake_phrase))
                return None
            hearing = session.decode[1]
            if not hearing.done:
                if hearing.running_s > TRANSCRIBE_BUSY_S:
                    raise RuntimeError(f"a pause decode has run {hearing.running_s:.0f} s: whisper is wedged")
                return None
            session.decode = None
            session.pause = (end_sample, self.judge_pause(session, end_sample, hearing.result()))
        verdict = session.pause[1]
        if pause_ms < self.config.stt.turn_min_pause_ms or not self.turn_policy.complete(verdict.evidence, pause_ms):
            return None
        now = time.monotonic_ns()
        self.log.info("endpoint after a %.0f ms pause (evidence %.2f, sentence end p %.2f, turn model %s)", pause_ms,
                      verdict.evidence, verdict.ending_p,
                      "n/a" if verdict.audio_score is None else f"{verdict.audio_score:.2f}")
        _, text, compute_ms = session.speculative
        return Transcript(session.request.session, text, True, session.time_of(end_sample), now,
                          round(compute_ms, 1), "speech_end", endpoint_ns=now, turn_score=_score(verdict))

    def judge_pause(self, session: Session, end_sample: int, heard: Hearing) -> TurnVerdict:
        """Ask the turn model about the pause ``heard`` transcribed — unless the words are unfinished.
        A request that reads complete goes out as a partial first, so the LLM prefills while the model runs."""
        text, compute_ms, ending_p = heard.text, heard.compute_ms, heard.ending_p
        session.speculative = (end_sample, text, compute_ms)
        score, model_ms = None, 0.0
        if not open_ending(text):
            self.ctx.send(Transcript(session.request.session, text, False, session.time_of(end_sample),
                                     time.monotonic_ns(), round(compute_ms, 1), "partial"))
            # The model is asked only when it can change the decision: if the words alone (model score 0)
            # already end the request now, its ~50-100 ms would only delay the answer.
            pause_ms = (self.endpointer.samples_fed - (end_sample - session.offset)) * 1000 / SAMPLE_RATE
            words_suffice = self.turn_policy.complete(self.turn_policy.evidence(0.0, text, ending_p), pause_ms)
            if self.turn_model is not None and not words_suffice:
                started = time.perf_counter()
                try:
                    with self.busy(TRANSCRIBE_BUSY_S):
                        score = self.turn_model.score(np.concatenate(session.frames))
                except Exception:  # the transcript and the pause still decide
                    self.log.exception("turn model failed")
                model_ms = (time.perf_counter() - started) * 1000
        evidence = self.turn_policy.evidence(score, text, ending_p)
        self.log.debug("pause at %d: %r score %s ending %.2f evidence %.2f (stt %.0f ms, turn %.0f ms)", end_sample,
                       text, score, ending_p, evidence, compute_ms, model_ms)
        return TurnVerdict(text, score, evidence, self.turn_policy.wait_ms(evidence), model_ms, ending_p)

    def listen(self, request: StartListening) -> Transcript | None:
        """Read frames until speech ends; None when the session was cancelled, rejected or we must stop.

        A newer StartListening takes over (barge-in): the request it names is heard instead.
        """
        while True:
            outcome = self.hear(request)
            if not isinstance(outcome, StartListening):
                return outcome
            request = outcome

    def hear(self, request: StartListening) -> Transcript | StartListening | None:
        cfg = self.config.stt
        reader, endpointer = self.reader, self.endpointer
        fs = self.ctx.audio.frame_samples
        preroll = int(round(cfg.preroll_s * SAMPLE_RATE / fs))
        # a sure wake is not verified, but the verifier still places the end of its wake phrase (WakeCheck.place)
        check = WakeCheck(request, fs) if request.verify or self.verifier is not None else None
        start_seq = request.wake_seq + 1 if request.start_seq is None else min(request.start_seq, request.wake_seq + 1)
        reader.seek(min(start_seq - preroll, request.wake_seq + 1 - (check.frames_before if check else 0)))
        session = Session(request, max(reader.cursor, start_seq - preroll), fs)
        endpointer.reset()
        try:
            return self.hear_frames(request, session, check)
        finally:
            session.forget_pauses()  # a pause decode still running is abandoned with the request

    def hear_frames(self, request: StartListening, session: Session,
                    check: WakeCheck | None) -> Transcript | StartListening | None:
        cfg = self.config.stt
        reader, endpointer = self.reader, self.endpointer
        fs = self.ctx.audio.frame_samples
        deadline = time.monotonic() + cfg.max_utterance_s + cfg.no_speech_timeout_s + 5.0
        while True:
            self.ctx.beat()
            ended = self.interruption(request.session)
            if isinstance(ended, StartListening):  # a newer wake supersedes this one (barge-in)
                return ended
            if ended is not None:  # our Cancel, or the process stops
                return None
            if time.monotonic() > deadline:  # audio stopped flowing: do not listen forever
                return Transcript(request.session, "", True, 0, time.monotonic_ns(), 0.0, "no_speech")
            # while a pause is being decoded, look often: its end may decide the request between two frames
            frame = reader.read_wait(0.1 if session.decode is None else DECODE_POLL_S)
            if frame is None:
                if session.decode is not None and session.decode[1].done:
                    if (decided := self.endpointing(session)) is not None:
                        return decided
                continue
            if check is not None and check.feed(frame.seq, frame.samples):
                if not request.verify:  # a sure wake: the verifier only places the end of its wake phrase
                    with self.busy(VERIFY_BUSY_S):
                        phrase_end, check = check.place(self.verifier), None
                    if phrase_end is not None:
                        session.starts_after_wake_phrase(phrase_end)
                else:
                    with self.busy(VERIFY_BUSY_S):
                        verdict = check.judge(self.verifier)
                    phrase_end, check = check.phrase_end, None
                    self.log.info("wake verdict: %s (score %.2f, %.0f ms, heard %r)",
                                  "accept" if verdict.accepted else "reject", verdict.score, verdict.compute_ms,
                                  verdict.heard)
                    self.ctx.send(verdict)
                    if not verdict.accepted and verdict.score >= 0:
                        return None  # rejected: nobody is asking anything
                    if verdict.accepted and phrase_end is not None:
                        session.starts_after_wake_phrase(phrase_end)
            if frame.seq < session.first_seq:
                continue  # the verifier's lead-in: before the request's pre-roll
            session.frames.append(frame.samples)
            session.capture_ns.append(frame.capture_ns)
            endpoint = endpointer.feed(frame.samples)
            if endpoint is None:
                if (decided := self.endpointing(session)) is not None:
                    return decided
                continue
            if endpoint.kind == "speech_start":
                continue
            if endpoint.kind == "no_speech":
                return Transcript(request.session, "", True, 0, time.monotonic_ns(), 0.0, "no_speech")
            end_sample = session.offset + endpoint.sample_index
            if endpoint.kind == "speech_end" and end_sample <= session.request_start_sample:
                session.offset = len(session.frames) * fs
                session.forget_pauses()
                endpointer.reset()
                continue
            if session.decode is not None and session.decode[0] == end_sample:  # decoding this pause already
                hearing, session.decode = session.decode[1], None
                with self.busy(TRANSCRIBE_BUSY_S):
                    hearing.wait()
                heard = hearing.result()
                text, compute_ms = heard.text, heard.compute_ms
            elif session.speculative and session.speculative[0] == end_sample:
                _, text, compute_ms = session.speculative  # transcribed during the endpoint silence
            else:
                text, compute_ms = self.transcribe(session, end_sample)
            now = time.monotonic_ns()
            verdict = session.pause[1] if session.pause and session.pause[0] == end_sample else None
            return Transcript(request.session, text, True, session.time_of(end_sample), now,
                              round(compute_ms, 1), endpoint.kind, endpoint_ns=now, turn_score=_score(verdict))


def _score(verdict: TurnVerdict | None) -> float:
    return -1.0 if verdict is None or verdict.audio_score is None else round(verdict.audio_score, 3)
