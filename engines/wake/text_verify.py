"""Second-stage wake verification: whisper tiny.en reads the proposal's window and decides.

The proposer (openWakeWord at a low threshold) is fast and catches nearly every "hey
jarvis", but also "hey marvin", "jars of honey" and babble.  ``WakeVerifier.check``
decodes the last ``WINDOW_BEFORE_S + WINDOW_AFTER_S`` seconds and returns a ``Verdict``.
Three ways to decide (``mode``), all measured by ``bench/wake_eval.py`` on the wake corpus:

* "text" (the first verifier Vigil had): decode with ``initial_prompt="Hey Jarvis."`` and
  accept when a "hey"-like word stands directly before a fuzzy "jarvis" (so "ask mister
  jarvis" and "we talked to jarvis" do not wake).  Without the prompt tiny.en spells the
  name every which way ("I hate Jarvis", "Hey, Jervis") and detection collapses.
* "score": as "text", and the decoder's probability of those wake tokens (geometric mean
  of the token probabilities whisper reports) must reach ``min_score``.  pywhispercpp
  1.5.1 does not expose logits (its logits-filter callback and ``whisper_get_logits``
  hand Python a single float), so a true forced-decoding score of "Hey Jarvis" is out of
  reach; this is the probability of the tokens whisper chose.
* "confirm": as "text", then decode the same window once more *without* the prompt; a
  jarvis-like word must still be there (probability ≥ ``min_score``).  The prompt is what
  turns "hey, jars of honey" into "Hey Jarvis"; unprompted, whisper writes what it hears
  ("I'm all stars of 30").  The second pass runs only after a prompted match.

Pitfalls handled here:
* decode params persist in pywhispercpp — ``WhisperEngine.transcribe_tokens`` sets the
  prompt for one call and puts the engine's own prompt back under the engine's lock, so
  a request transcribed afterwards on the same engine never inherits "Hey Jarvis.";
* whisper.cpp pads to 30 s: the engine fits ``audio_ctx`` to the clip (``audio_ctx_for``);
* a clip shorter than ``MIN_CHECK_S``, empty or all zeros is a clean reject, never a crash.

The engine can be shared with STT (one model in memory, calls serialised by the engine's
lock); the bench gives the verifier its own.
"""

from __future__ import annotations

import difflib
import re
import time
from dataclasses import dataclass

import numpy as np

from core.audio import SAMPLE_RATE

WINDOW_BEFORE_S = 2.0   # audio before the proposing frame the verifier reads (the whole phrase, slow voices too)
WINDOW_AFTER_S = 0.25   # ... and after it (oww fires on "jar-"; the end of "-vis" must be in)
MAX_TOKENS = 20         # the window holds a few words; a decode looping on noise stops here
MIN_CHECK_S = 0.3       # shorter than this cannot hold "hey jarvis": reject without decoding
WAKE_PROMPT = "Hey Jarvis."
DEFAULT_MODE = "text"    # chosen on the "tune" half of the wake corpus (bench/wake_eval.py --tune)
DEFAULT_MIN_SCORE = 0.0  # (the "text" mode does not use it)

HEY_WORDS = frozenset({"hey", "hay", "hi", "hei", "he", "heh", "a", "eh", "ey", "hej", "they", "here", "hear"})
JARVIS = "jarvis"
# Real names close to "jarvis" that are near misses, not mishearings of it.
NOT_JARVIS = frozenset({"travis", "marvin", "harvey", "davis", "mavis", "jars", "jar", "service", "harvest"})
JARVIS_MIN_RATIO = 0.72


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    score: float        # 0..1: probability of the wake tokens (0 when no wake phrase was read)
    heard: str          # what whisper read in the window
    compute_ms: float
    phrase_end_s: float | None = None  # where the wake phrase ends in the window, when the verifier knows


def _norm(word: str) -> str:
    return re.sub(r"[^a-z'-]", "", word.lower()).strip("'-")


def jarvis_like(word: str) -> bool:
    w = _norm(word)
    if not w or w in NOT_JARVIS:
        return False
    if w.endswith("'s"):
        w = w[:-2]
    return w == JARVIS or difflib.SequenceMatcher(None, w, JARVIS).ratio() >= JARVIS_MIN_RATIO


def words_of(tokens: list[tuple[str, float]]) -> list[tuple[str, int, int]]:
    """Glue whisper's sub-word pieces (" Hey", " Jar", "vis", ",") into words: (word, first token, end token).

    A piece starting with a space starts a word; punctuation ends one and is dropped.
    """
    words: list[tuple[str, int, int]] = []
    open_word = False
    for i, (text, _p) in enumerate(tokens):
        for piece in re.findall(r"\s*\S+", text):
            alpha = re.sub(r"[^A-Za-z'-]", "", piece)
            if not alpha:
                open_word = False
                continue
            if piece[:1].isspace() or not open_word:
                words.append((alpha, i, i + 1))
            else:
                w, a, _ = words[-1]
                words[-1] = (w + alpha, a, i + 1)
            open_word = not re.search(r"[^A-Za-z'-]$", piece)
    return words


def find_wake(tokens: list[tuple[str, float]]) -> tuple[int, int] | None:
    """Token index range [a, b) of the last "hey"-like word directly followed by a jarvis-like word
    (punctuation between them allowed; "Heyjarvis" glued counts too)."""
    words = words_of(tokens)
    found = None
    for k, (w, a, b) in enumerate(words):
        n = _norm(w)
        if n.startswith("hey") and len(n) > 3 and jarvis_like(n[3:]):
            found = (a, b)
        elif k + 1 < len(words) and n in HEY_WORDS and jarvis_like(words[k + 1][0]):
            found = (a, words[k + 1][2])
    return found


def jarvis_score(tokens: list[tuple[str, float]]) -> float:
    """Best geometric-mean probability of any jarvis-like word in the tokens (0 when there is none)."""
    best = 0.0
    for w, a, b in words_of(tokens):
        if jarvis_like(w):
            best = max(best, wake_score(tokens, (a, b)))
    return best


def wake_score(tokens: list[tuple[str, float]], span: tuple[int, int]) -> float:
    """Geometric mean of the token probabilities in ``span`` (the wake phrase's tokens)."""
    ps = [max(1e-6, p) for (t, p) in tokens[span[0]:span[1]] if re.search(r"[A-Za-z]", t)]
    if not ps:
        return 0.0
    return float(np.exp(np.mean(np.log(ps))))


@dataclass(frozen=True)
class Reading:
    """What whisper read in a window: with the wake prompt, and (when needed) without it."""
    text: str
    tokens: list
    plain_text: str | None = None      # decoded without the prompt (only after a prompted match)
    plain_tokens: list | None = None
    compute_ms: float = 0.0


MODES = ("text", "score", "confirm", "hybrid")


class WakeVerifier:
    """Check a proposal's window with whisper: ``check(audio) -> Verdict``.

    ``engine``: a loaded ``engines.stt.whispercpp.WhisperEngine`` (shared with STT or its own).
    ``mode``:
      * "text": the prompted decode must read a hey-like word directly before a fuzzy
        "jarvis" (the issue's first verifier); score = those tokens' probability;
      * "score": as "text", and that probability must reach ``min_score``;
      * "confirm": as "text", then a second decode of the same window *without* the
        prompt must still hear a jarvis-like word with probability >= ``min_score``
        (score = that probability).  The prompt is what makes "jars of honey" read as
        "Hey Jarvis"; without it whisper writes what it hears ("I'm all stars of 30").
    """

    def __init__(self, engine, mode: str = DEFAULT_MODE, min_score: float = DEFAULT_MIN_SCORE,
                 prompt: str = WAKE_PROMPT) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.engine = engine
        self.mode = mode
        self.min_score = float(min_score)
        self.prompt = prompt
        self.checks = 0

    def read(self, audio: np.ndarray, confirm: bool | None = None) -> Reading:
        """Decode the window (prompted; unprompted too after a match when confirming)."""
        t0 = time.perf_counter()
        text, tokens = self.engine.transcribe_tokens(audio, initial_prompt=self.prompt or None,
                                                     max_tokens=MAX_TOKENS)
        plain_text = plain_tokens = None
        span = find_wake(tokens)
        if confirm is None:
            confirm = self.mode == "confirm" or (self.mode == "hybrid" and span is not None
                                                 and wake_score(tokens, span) < self.min_score)
        if confirm and span is not None:
            plain_text, plain_tokens = self.engine.transcribe_tokens(audio, initial_prompt=None, max_tokens=MAX_TOKENS)
        return Reading(text, tokens, plain_text, plain_tokens, round((time.perf_counter() - t0) * 1000.0, 1))

    def judge(self, r: Reading) -> Verdict:
        span = find_wake(r.tokens)
        if span is None:
            return Verdict(False, 0.0, r.text, r.compute_ms)
        score = wake_score(r.tokens, span)
        heard = r.text
        if self.mode == "text":
            accepted = True
        elif self.mode == "score":
            accepted = score >= self.min_score
        elif self.mode == "hybrid" and score >= self.min_score:
            accepted = True
        elif self.mode == "hybrid":  # (no unprompted reading = not confirmed)
            accepted = jarvis_score(r.plain_tokens or []) > 0
            heard = f"{r.text} | {r.plain_text}"
        else:
            score = jarvis_score(r.plain_tokens or [])
            accepted = score > 0 and score >= self.min_score
            heard = f"{r.text} | {r.plain_text}"
        return Verdict(accepted=accepted, score=round(score, 4), heard=heard, compute_ms=r.compute_ms)

    def check(self, audio: np.ndarray) -> Verdict:
        """Accept or reject a proposal; ``audio``: int16 (or float32) 16 kHz mono ending just after the proposal."""
        self.checks += 1
        a = checkable(audio)
        return Verdict(False, 0.0, "", 0.0) if a is None else self.judge(self.read(a))


def checkable(audio: np.ndarray) -> np.ndarray | None:
    """The window as a 1-D array, or None when it cannot hold the wake phrase (too short, all zeros):
    a clean reject without decoding, for every verifier."""
    a = np.asarray(audio)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    return None if a.size < MIN_CHECK_S * SAMPLE_RATE or not np.any(a) else a


def window_samples() -> int:
    """Samples the caller should pass: WINDOW_BEFORE_S + WINDOW_AFTER_S at 16 kHz."""
    return int(round((WINDOW_BEFORE_S + WINDOW_AFTER_S) * SAMPLE_RATE))
