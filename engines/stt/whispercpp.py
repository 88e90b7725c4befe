"""Speech-to-text with whisper.cpp through pywhispercpp, tuned for short commands.

Why the care:
* pywhispercpp 1.5.1 accepts a corrupt model silently and then segfaults in
  the first transcription, and treats a path that does not exist as a model
  *name* to download — so the file is validated first and always passed as an
  existing absolute path.
* whisper.cpp pads every clip to 30 s (1500 encoder frames).  For a 2–3 s
  command, a smaller ``audio_ctx`` cuts the encoder work ~3×.  Below ~512
  frames tiny.en's text degrades, so the context never goes below
  :data:`MIN_AUDIO_CTX` and always leaves a margin past the clip.
* With that short context and no timestamp tokens, tiny.en can loop: flite slt's
  "tell me something about the moon" came back as the sentence six times (3.6 s of
  decoding, the whole p99), unbounded it runs to the 448-token limit.  Timestamp tokens
  stop that (the decoder then knows where in the audio it is and ends at the speech's
  end) but cost accuracy on the bench corpora, so they are the retry, not the default.
  The guards (``Decoding``, measured by ``python -m bench.stt_study hearing``):
  - a token budget from the audio's length (``tokens_per_s``), so a loop cannot run long;
  - ``loop_reason``: a word n-gram repeated back to back, a high compression ratio or
    a decode that ran into its budget ends the result; the clip is decoded once more
    without the prompt (the previous context), with timestamp tokens and the temperature
    fallback, and if that loops too the repetition is cut to its first copy.
* Decode params persist in pywhispercpp between calls, so every call sets all of
  them (``_params_for``): nothing one call changes leaks into the next.
* Every call runs on the engine's one whisper thread (``submit``; ``hear`` waits for it). The
  wheel's whisper.cpp computes with OpenMP, whose thread team belongs to the calling thread: calls
  from two threads kept two teams spinning against each other and made each decode ~25 % slower.
  So the turn endpoint can decode a pause beside the frame loop (``submit`` returns a future)
  and abandon it when the voice comes back (``abort``: whisper.cpp's abort callback, polled
  between graph computations), at the speed of a plain call.
"""

from __future__ import annotations

import math
import queue
import re
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from core.audio import SAMPLE_RATE
from core.dsp import to_float32
from engines.model_files import validate_ggml

T = TypeVar("T")

FRAME_SAMPLES = 320  # one encoder frame (after conv stride 2) = 20 ms
MAX_AUDIO_CTX = 1500  # 30 s: whisper's full window
MIN_AUDIO_CTX = 512  # smaller contexts measurably hurt tiny.en (wrong words, repetition loops)
AUDIO_CTX_MARGIN = 64  # frames (1.28 s) beyond the clip
MIN_CLIP_S = 0.1
MAX_TOKENS = 128  # per transcription, whatever the clip's length
COMPRESSION_RATIO_LOOP = 2.4  # OpenAI whisper's threshold: text that zlib shrinks this much repeats itself


def audio_ctx_for(n_samples: int) -> int:
    """Encoder context for a clip: a multiple of 64 comfortably past its length, within [512, 1500].

    Clips longer than ~28.7 s get the full window (0 would mean the same).
    """
    frames = math.ceil(n_samples / FRAME_SAMPLES) + AUDIO_CTX_MARGIN
    ctx = max(MIN_AUDIO_CTX, math.ceil(frames / 64) * 64)
    return min(ctx, MAX_AUDIO_CTX)


@dataclass(frozen=True)
class Decoding:
    """How a request is decoded.  The defaults are what ``python -m bench.stt_study hearing`` picked."""
    beam_size: int = 1            # 1 = greedy (beam 5: 1.35x the decode time, 2.8x at p95, for 0.005 less WER)
    temperature_inc: float = 0.0  # whisper.cpp's own fallback to sampling (0 = off); the loop retry uses it
    timestamps: bool = False      # timestamp tokens anchor the decoder in time (no loops) but cost accuracy: the retry
    initial_prompt: str = ""
    pad_s: float = 0.0            # silence around the clip (0.2 s: lower WER in noise, higher on clean requests)
    tokens_per_s: float = 8.0     # the token budget: this many per second of audio ...
    min_tokens: int = 16          # ... and never fewer
    retry_on_loop: bool = True

    def token_budget(self, n_samples: int) -> int:
        return min(MAX_TOKENS, self.min_tokens + math.ceil(self.tokens_per_s * n_samples / SAMPLE_RATE))


DEFAULT_DECODING = Decoding()


@dataclass(frozen=True)
class Hearing:
    """One decode: the text and what it took."""
    text: str
    tokens: int = 0            # text tokens the first decode wrote
    loop: str = ""             # why the first decode was taken for a loop ("" = it was not)
    retried: bool = False      # decoded a second time because of the loop
    cut: bool = False          # the retry looped too: the repetition was cut to its first copy
    compute_ms: float = 0.0
    aborted: bool = False      # abandoned by its caller before the end: the text is incomplete, do not use it
    ending_p: float = 1.0      # whisper's probability for the sentence end it wrote (sentence_end_p)


_WORD = re.compile(r"[\w']+")


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repeated_ngram(words: list[str]) -> tuple[str, ...] | None:
    """The first n-gram said back to back too often to be speech: one or two words three times in a row
    ("Jarvis Jarvis Jarvis"), three or more words twice ("what time is it what time is it"); else None."""
    for n in range(1, len(words) // 2 + 1):
        need = 3 if n <= 2 else 2
        for i in range(len(words) - need * n + 1):
            gram = words[i:i + n]
            if all(words[i + k * n:i + (k + 1) * n] == gram for k in range(1, need)):
                return tuple(gram)
    return None


def sentence_end_p(tokens: list[tuple[str, float]]) -> float:
    """Whisper's probability for the sentence end it wrote: the last token's when it ends in ".", "?" or "!";
    1.0 when it wrote none (nothing to doubt: tiny.en leaves some whole requests unpunctuated, "Tell Me A Long
    Story ..."). Why: at a pause mid-request ("what is the capital of … Australia") whisper may drop the open word
    and close the sentence anyway ("What is the capital?"), unsure of that close (p 0.2-0.5 on the bench's
    synthetic voices, mostly 0.7-0.97 where the request was done); the turn policy can ask for a sure end."""
    if not tokens:
        return 1.0
    text, p = tokens[-1]
    return p if text.rstrip().rstrip('"\'').endswith((".", "?", "!")) else 1.0


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def loop_reason(text: str, tokens: int, budget: int) -> str:
    """Why a decode looks like a loop: "repeat" (an n-gram back to back), "compression" (zlib ratio above
    2.4) or "budget" (it wrote as many tokens as it was allowed: it never ended by itself); "" if none."""
    if repeated_ngram(words_of(text)) is not None:
        return "repeat"
    if compression_ratio(text) > COMPRESSION_RATIO_LOOP:
        return "compression"
    if budget and tokens >= budget:
        return "budget"
    return ""


def cut_repetition(text: str) -> str:
    """The text with its back-to-back copies of the repeated n-gram collapsed to one, and a last partial copy
    dropped ("What time is it? What time is it? What" → "What time is it?", "Jarvis Jarvis Jarvis set a
    timer" → "Jarvis set a timer"): what a loop meant to say, without the loop."""
    words = words_of(text)
    gram = repeated_ngram(words)
    if gram is None:
        return text
    n = len(gram)
    start = next(i for i in range(len(words)) if tuple(words[i:i + n]) == gram)
    after = start + n
    while tuple(words[after:after + n]) == gram:
        after += n
    rest = words[after:]
    spans = list(_WORD.finditer(text))
    first_copy_end = spans[start + n - 1].end()
    punct = re.match(r"[^\w\s]*", text[first_copy_end:])
    head = text[:first_copy_end] + (punct.group(0) if punct else "")
    if not rest or tuple(rest) == gram[:len(rest)]:
        return head.strip()
    return (head + " " + text[spans[after].start():]).strip()


class _WhisperThread:
    """One daemon thread that runs the engine's calls in order (a daemon: a wedged decode never holds up exit)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], object], Future]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="whisper", daemon=True).start()

    def submit(self, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._calls.put((call, future))
        return future

    def _run(self) -> None:
        while True:
            call, future = self._calls.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # the caller gets it from result()
                future.set_exception(exc)


class WhisperEngine:
    """One loaded whisper.cpp model; its calls run one at a time on the engine's whisper thread."""

    def __init__(self, model_path: Path, n_threads: int = 2, language: str = "en",
                 initial_prompt: str | None = None, decoding: Decoding | None = None) -> None:
        path = Path(model_path).expanduser().resolve()
        validate_ggml(path)  # raises ModelError; pywhispercpp would crash later instead
        from pywhispercpp.model import Model  # import late: a bad path fails before loading C code

        self.model_path = path
        self.n_threads = n_threads
        self.decoding = decoding or DEFAULT_DECODING
        if initial_prompt:
            self.decoding = replace(self.decoding, initial_prompt=initial_prompt)
        self._thread = _WhisperThread()
        self._model = Model(str(path), n_threads=n_threads, print_progress=False,
                            redirect_whispercpp_logs_to=None, language=language, single_segment=True,
                            no_context=True, print_realtime=False, print_timestamps=False)

    def _params_for(self, d: Decoding, n_samples: int, max_tokens: int) -> dict[str, object]:
        import _pywhispercpp as pw

        greedy = d.beam_size <= 1
        self._model._params.strategy = (pw.whisper_sampling_strategy.WHISPER_SAMPLING_GREEDY if greedy
                                        else pw.whisper_sampling_strategy.WHISPER_SAMPLING_BEAM_SEARCH)
        return dict(audio_ctx=audio_ctx_for(n_samples),
                    no_timestamps=not d.timestamps, initial_prompt=d.initial_prompt, max_tokens=max_tokens,
                    temperature=0.0, temperature_inc=d.temperature_inc, greedy={"best_of": 1},
                    beam_search={"beam_size": max(1, d.beam_size), "patience": -1.0}, no_context=True)

    def _decode(self, samples: np.ndarray, d: Decoding, max_tokens: int,
                abort: Callable[[], bool] | None = None) -> tuple[str, list[tuple[str, float]]]:
        """Text and text tokens (with probabilities) of one decode; on the whisper thread."""
        import _pywhispercpp as pw

        if d.pad_s > 0:
            pad = np.zeros(int(d.pad_s * SAMPLE_RATE), dtype=np.float32)
            samples = np.concatenate([pad, samples, pad])
        segments = self._model.transcribe(samples, abort_callback=abort,
                                          **self._params_for(d, samples.size, max_tokens))
        ctx = self._model._ctx
        tokens = []
        for i in range(pw.whisper_full_n_segments(ctx)):
            for j in range(pw.whisper_full_n_tokens(ctx, i)):
                text = pw.whisper_full_get_token_text(ctx, i, j)
                if isinstance(text, bytes):
                    text = text.decode("utf-8", errors="replace")
                if text.startswith("[_") or text.startswith("<|"):
                    continue  # special and timestamp tokens
                tokens.append((text, float(pw.whisper_full_get_token_p(ctx, i, j))))
        return "".join(seg.text for seg in segments).strip(), tokens

    def hear(self, audio: np.ndarray, decoding: Decoding | None = None) -> Hearing:
        """Decode a mono 16 kHz clip (int16, or float32 in [-1, 1]) with the loop guards; "" for < 0.1 s."""
        return self.submit(audio, decoding).result()

    def submit(self, audio: np.ndarray, decoding: Decoding | None = None,
               abort: Callable[[], bool] | None = None) -> Future[Hearing]:
        """``hear`` on the whisper thread, without waiting: the future's result is the ``Hearing``.

        ``abort`` is polled while whisper computes; once it returns True the decode stops early and
        the result says ``aborted``.
        """
        return self._thread.submit(lambda: self._hear(audio, decoding, abort))

    def _hear(self, audio: np.ndarray, decoding: Decoding | None, abort: Callable[[], bool] | None) -> Hearing:
        started = time.perf_counter()
        d = decoding or self.decoding
        samples = to_float32(audio)
        if samples.size < MIN_CLIP_S * SAMPLE_RATE:
            return Hearing("")
        budget = d.token_budget(samples.size)
        text, tokens = self._decode(samples, d, budget, abort)
        ending = tokens
        if abort is not None and abort():
            return Hearing(text, len(tokens), compute_ms=round((time.perf_counter() - started) * 1000, 1),
                           aborted=True)
        reason = loop_reason(text, len(tokens), budget)
        retried = cut = False
        if reason and d.retry_on_loop:
            # once more, without the prompt (the previous context) and with the temperature fallback
            retry = replace(d, initial_prompt="", timestamps=True, temperature_inc=d.temperature_inc or 0.2)
            again, again_tokens = self._decode(samples, retry, budget)
            retried = True
            if not loop_reason(again, len(again_tokens), budget):
                text, ending = again, again_tokens
        if reason and loop_reason(text, 0, 0):
            text, cut = cut_repetition(text), True
        return Hearing(text, len(tokens), reason, retried, cut, round((time.perf_counter() - started) * 1000, 1),
                       ending_p=sentence_end_p(ending))

    def transcribe(self, audio: np.ndarray) -> str:
        """Text of a mono 16 kHz clip (int16, or float32 in [-1, 1]); "" for < 0.1 s."""
        return self.hear(audio).text

    def transcribe_tokens(self, audio: np.ndarray, initial_prompt: str | None = None,
                          max_tokens: int = MAX_TOKENS) -> tuple[str, list[tuple[str, float]]]:
        """Text and its tokens with their probabilities, decoded with ``initial_prompt`` for this call only
        (greedy, no timestamps, whisper.cpp's fallback on, no retry: the decode the text verifier was tuned on).

        Special tokens ([_EOT_] ...) are left out.
        """
        samples = to_float32(audio)
        if samples.size < MIN_CLIP_S * SAMPLE_RATE:
            return "", []
        plain = Decoding(timestamps=False, temperature_inc=0.2, initial_prompt=initial_prompt or "",
                         retry_on_loop=False)
        return self._thread.submit(lambda: self._decode(samples, plain, max_tokens)).result()
