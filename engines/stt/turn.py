"""Is the person done? Turn-aware endpointing from the audio, the partial transcript and the pause.

A fixed end-of-speech silence is wrong one way or the other: 500 ms is too long for "what
time is it" and too short for "set a timer for … ten minutes". So at every pause the STT
worker transcribes what it has and asks three witnesses whether the request is complete:

* ``SmartTurn``: Smart Turn v3.2 (BSD-2; a Whisper-tiny encoder and a classifier, int8 ONNX),
  the probability that the turn is complete judged from the last 8 s of audio — prosody and
  words. Its input, as its authors feed it: 16 kHz float, the last 8 s, zeros *before* a
  shorter clip, the whole 8 s window normalised to zero mean and unit variance, then Whisper's
  80-bin log-mel with the last frame dropped (80 × 800). Sensible on natural voices; on flat
  synthetic prosody (flite) close to random, so it never decides alone.
* ``open_ending``: the partial transcript ends on a word that cannot end a request ("for",
  "of", "the", "and", "me", …) or trails off ("…"): then it is surely not done.
* ``ending_p``: how sure whisper was of the sentence end it wrote (``sentence_end_p``). At a pause
  after "what is the capital of" whisper may drop the open word and close the question anyway
  ("What is the capital?"), unsure of that close; below ``sure_ending`` a transcript that reads
  complete counts only in proportion, so the pause must last longer.
* the pause itself: the longer the silence, the less evidence is needed (``TurnPolicy``).

``TurnPolicy.required`` is the evidence a pause of a given length needs: ``threshold`` at the
first moment, falling linearly to 0 at ``max_pause_ms`` (then the request ends whatever the
witnesses say). ``evidence`` is the model's probability, or a fixed ``text_prior`` when the
model is absent, lifted by ``text_weight`` for a transcript that reads complete and zeroed for
an open ending. With the default weights the words alone meet the threshold, so the worker loads
the model only when ``TurnPolicy.model_can_decide`` (a stricter ``[stt] turn_threshold``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.audio import SAMPLE_RATE
from core.dsp import log_mel, mel_filterbank, to_float32

WINDOW_S = 8  # the model's input: the last 8 s of the turn
N_MELS = 80
NORM_EPS = 1e-7


class SmartTurn:
    """Smart Turn v3.2 through onnxruntime (one thread: it runs beside whisper on the other core)."""

    def __init__(self, model_path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"Smart Turn model not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._filters = mel_filterbank(N_MELS)
        self.model_path = path

    def features(self, audio: np.ndarray) -> np.ndarray:
        """``[1, 80, 800]`` float32: the model's input for a mono 16 kHz clip (int16 or float)."""
        x = to_float32(audio)
        n = WINDOW_S * SAMPLE_RATE
        x = x[-n:] if x.size >= n else np.pad(x, (n - x.size, 0))
        x = (x - x.mean()) / np.sqrt(x.var() + NORM_EPS)
        return log_mel(x, self._filters)[None, :, :]

    def score(self, audio: np.ndarray) -> float:
        """Probability (0..1) that the speaker's turn is complete at the end of ``audio``."""
        out = self._session.run(None, {self._input: self.features(audio)})
        return float(np.asarray(out[0]).reshape(-1)[0])


# Words a request does not end on: prepositions, articles, conjunctions, pronoun objects of an
# unfinished verb, "what's the", "set a", "turn on", a subject before its verb ("how do I"). A request
# that really ends on one ("what is it for") waits longer, never loses words.
OPEN_WORDS = frozenset("""
a an the this that these those my your our their his her its some any every each no
for of to in on at by with from into onto about over under after before than as like until
and or but so because if then while plus
me us him them you i we they he she
is are was were be been being am do does did can could would will should may might must shall
what's whats what where when why how which whose whom
please set turn tell give show play call remind make put start stop add find
it's i'm i'd i'll let's
""".split())
# A pronoun whisper writes for words it has not heard yet: "set a timer for …" decoded at the pause reads "Set a
# timer for it." (on Piper, espeak-ng and flite alike), "tell me something about …" "… about it." A request that
# means it ("what do you make of it") waits the longer pause, and loses no words.
FILLER_AFTER = frozenset("for of to with from into onto about over under after before than like".split())
QUESTION_WORDS = frozenset("who what where when why how which whose whom".split())
SUBJECTS = frozenset("i you we they he she it".split())
MODALS = frozenset("can could would will should shall may might must do does did".split())
_WORD = re.compile(r"[a-z']+")
_TRAILING_OFF = re.compile(r"(\.\.\.|…|-|—|,)\s*$")
_NON_SPEECH = re.compile(r"\[[^\]]*\]|\([^)]*\)")  # whisper's "[BLANK_AUDIO]", "(music)": no words at all


def open_ending(text: str) -> bool:
    """True when the transcript cannot be a finished request: empty (or only whisper's non-speech tags),
    trailing off, a question word and at most one more word ("who wrote", "how many": a request is longer),
    or an open last word — except a main verb "do" after its subject ("what can you do") and "you" that no
    modal asks a verb of ("thank you", "how are you"; "can you" stays open) — or "it" after a preposition,
    whisper's stand-in for the words still to come ("set a timer for it")."""
    stripped = _NON_SPEECH.sub(" ", text).strip()
    if not stripped or _TRAILING_OFF.search(stripped):
        return True
    words = _WORD.findall(stripped.lower().replace("’", "'"))
    if not words:
        return True
    if words[0] in QUESTION_WORDS and len(words) <= 2:
        return True
    last, before = words[-1], (words[-2] if len(words) > 1 else "")
    if last in ("do", "does", "did") and before in SUBJECTS:
        return False
    if last == "you" and before not in MODALS:
        return False
    if last == "it" and before in FILLER_AFTER:
        return True
    return last in OPEN_WORDS


@dataclass(frozen=True)
class TurnPolicy:
    """When a pause ends the request (see the module docstring)."""

    threshold: float = 0.5  # evidence needed at the start of a pause ...
    max_pause_ms: int = 1300  # ... falling to 0 here: the longest a pause can hold the request open
    text_weight: float = 0.5  # how far a transcript that reads complete lifts the evidence towards 1
    text_prior: float = 0.5  # the audio evidence when there is no model (or it failed)
    sure_ending: float = 0.0  # whisper's sentence-end probability a complete-reading transcript needs (0 = any)

    def required(self, pause_ms: float) -> float:
        return self.threshold * max(0.0, 1.0 - pause_ms / self.max_pause_ms)

    def evidence(self, audio_score: float | None, text: str, ending_p: float = 1.0) -> float:
        """0 for an open ending; for an end whisper was unsure of (``ending_p`` below ``sure_ending``), the
        threshold scaled by that certainty (the pause must last ``max_pause_ms (1 - ending_p / sure_ending)``);
        else the audio evidence lifted by the words."""
        if open_ending(text):
            return 0.0
        if ending_p < self.sure_ending:
            return self.threshold * ending_p / self.sure_ending
        return self._lifted(self.text_prior if audio_score is None else audio_score)

    def _lifted(self, audio_score: float) -> float:
        """The evidence of a transcript that reads complete: the audio score lifted by ``text_weight``."""
        return audio_score + self.text_weight * (1.0 - audio_score)

    def complete(self, evidence: float, pause_ms: float) -> bool:
        return pause_ms >= self.max_pause_ms or evidence >= self.required(pause_ms)

    def model_can_decide(self, min_pause_ms: float) -> bool:
        """Whether the audio model's score can change any decision for pauses judged at ``min_pause_ms`` or
        later: not when a transcript that reads complete meets the threshold on its words alone (score 0), and an
        open one waits whatever the model says. Then loading the model only costs memory (34 MB of RSS) and start-up."""
        return self._lifted(0.0) < self.required(min_pause_ms)

    def wait_ms(self, evidence: float) -> float:
        """The pause length at which ``evidence`` becomes enough (0: at once)."""
        if self.threshold <= 0 or evidence >= self.threshold:
            return 0.0
        return self.max_pause_ms * (1.0 - evidence / self.threshold)


@dataclass(frozen=True)
class TurnVerdict:
    """What the witnesses said about one pause (for the trace and the bench)."""

    text: str
    audio_score: float | None
    evidence: float
    wait_ms: float  # the pause this evidence needs
    compute_ms: float  # the turn model's own time
    ending_p: float  # whisper's probability for the sentence end it wrote
