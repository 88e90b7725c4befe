"""The sequential single-process baseline and the compute floor, for ``pipeline bench``.

Both run the *same engines* as Vigil (openWakeWord, Silero VAD + ``Endpointer``,
whisper.cpp, embedded llama.cpp) on the same corpus, so the bench can report
Vigil against what a plain script achieves (``run_baseline``) and against the
least the engines themselves need (``run_floor``).

Utterances are duck-typed on ``bench.corpus.Utterance``: ``wav`` (path),
``wake`` (bool), ``transcript`` (the request after the wake phrase),
``speech_end_s`` (where speech ends in the file), ``kind``
("command" | "question" | "negative"); ``speaker`` and ``voice`` are not used.

Baseline — what a straightforward script does, one process, one thing at a time
---------------------------------------------------------------------------------
1. feed 1280-sample frames to the wake detector (config threshold/refractory);
2. after a wake, record (pre-roll ``stt.preroll_s`` before the frame after the
   wake, exactly the audio Vigil's STT worker reads, so transcripts are
   comparable) until the endpointer says speech ended. The endpointer is the
   same Silero VAD, but with the end-of-speech silence of a typical assistant:
   ``baseline_end_silence_ms`` = 700 ms, Home Assistant's default
   (its Assist pipeline's VAD "silence_seconds" 0.7 s), instead of Vigil's
   ``stt.end_silence_ms``. When the file runs out first, digital silence is
   fed, as a microphone would keep delivering it;
3. transcribe the recorded request with whisper (``strip_wake_phrase`` as
   Vigil does);
4. (speaker ID: not built yet — ``speaker_id=`` is the hook: a callable on
   the request audio, run and timed sequentially after STT, as a plain
   script would);
5. ask the LLM (same system prompt, ``llm.max_tokens``, streamed) and stop
   at the first token (cancelled through the callback: time to first token
   is what is measured, the rest would only cost time).

The LLM is loaded once and kept; the system prompt is *not* pre-evaluated, so
the first request pays the cold prompt (~1 s) and later ones get llama.cpp's
automatic prefix cache — as a simple script would. Whisper is not warmed either.

Timing model: audio is processed faster than real time, but an audio clock is
kept. A stage that waits for audio (wake, recording until the endpoint) is
charged audio time — on a live microphone it could not finish earlier, and
wake/VAD compute per 80 ms frame is far below 80 ms, so it keeps up; a compute
stage (STT, speaker ID, LLM) is charged its measured wall time. Per utterance,
with ``detect`` = the end of the frame in which the endpointer fired and
``wake`` = the end of the frame in which the wake fired (seconds of audio in
the file), ``speech_end`` = the manifest's ground truth::

    wake_to_speech_end       = (speech_end - wake) * 1000
    speech_end_to_transcript = (detect - speech_end) * 1000 + stt (+ speaker)
    transcript_to_first_token = llm_first_token
    speech_end_to_first_token = (detect - speech_end) * 1000 + stt (+ speaker) + llm_first_token
    wake_to_first_token      = (detect - wake) * 1000 + stt (+ speaker) + llm_first_token

Each utterance starts from a clean wake detector: the engine is reset and
``LEAD_IN_S`` of silence is fed first (past the detector's warm-up, and it
flushes the previous clip from openWakeWord's ~1.3 s feature window); that
lead-in is not on the audio clock.

Floor — each engine's isolated compute per wake utterance
-----------------------------------------------------------
* STT on the exact request audio: from ``stt.preroll_s`` before the frame
  after the wake detection (the audio Vigil's STT reads; the request may
  begin right after the wake phrase) to the ground-truth ``speech_end_s`` +
  50 ms (the tail Vigil adds). The wake frame comes from ``wake_audio_s``
  (e.g. the baseline's results of the same run, so openWakeWord is not run
  twice) or from running the wake detector here; when the wake is missed the
  window starts at the file's start (``stt_window`` says which). Whisper is
  warmed with one second of silence first (as Vigil's STT worker does).
* LLM time to first token on the exact prompt (the reference transcript),
  with the system prompt warm (``engine.warm(system_prompt)`` first).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.config import Config
from core.audio import FRAME_SAMPLES, SAMPLE_RATE, load_wav
from workers.stt import strip_wake_phrase

BASELINE_END_SILENCE_MS = 700  # Home Assistant Assist's default end-of-speech silence
LEAD_IN_S = 2.0  # silence fed before each utterance (not timed): detector warm-up + clean features
STT_TAIL_S = 0.05  # audio kept past the last voiced sample, as Vigil's STT worker does

SPAN_NAMES = ("wake_to_speech_end", "speech_end_to_transcript", "transcript_to_first_token",
              "speech_end_to_first_token", "wake_to_first_token")

SpeakerHook = Callable[[np.ndarray], Any]


# --------------------------------------------------------------------------- engines

def _wake_detector(config: Config):
    from engines.wake.oww import OpenWakeWordEngine
    from engines.wake.detector import WakeDetector

    if config.wake.engine != "openwakeword":
        raise ValueError(f"unsupported wake engine {config.wake.engine!r}")
    engine = OpenWakeWordEngine(model=config.wake.model)
    # Single stage, firing at the crossing, as a one-stage assistant does.
    return engine, lambda: WakeDetector(engine, threshold=config.wake.threshold, settle_score=config.wake.threshold,
                                        warmup_s=config.wake.warmup_s, refractory_s=config.wake.refractory_s)


def _whisper(models, config: Config):
    from engines.stt.whispercpp import WhisperEngine

    path = Path(config.stt.model) if config.stt.model else Path(models.whisper)
    return WhisperEngine(path.resolve(), n_threads=config.stt.threads)


def _llm(models, config: Config):
    from engines.llm.embedded import EmbeddedLlm

    if config.llm.engine != "embedded":
        raise ValueError(f"the baseline runs the embedded LLM engine, not {config.llm.engine!r}")
    path = Path(config.llm.model) if config.llm.model else Path(models.llm)
    return EmbeddedLlm(path.resolve(), n_threads=config.llm.threads, repeat_penalty=config.llm.repeat_penalty,
                       temperature=config.llm.temperature)


def _first_token_ms(llm, config: Config, text: str) -> float:
    """Stream the reply to ``text``; cancel at the first token; return its latency in ms."""
    messages = [{"role": "system", "content": config.llm.system_prompt}, {"role": "user", "content": text}]
    result = llm.stream(messages, lambda _tok: True, max_tokens=config.llm.max_tokens)
    if result.first_token_ms is None:
        raise RuntimeError(f"LLM produced no token ({result.finish_reason}: {result.error})")
    return float(result.first_token_ms)


def _progress(items: Sequence, progress: bool, desc: str) -> Iterable:
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="utt", leave=False)


def _error(utt: Any, exc: BaseException) -> dict:
    return {"wav": str(getattr(utt, "wav", "?")), "error": f"{type(exc).__name__}: {exc}"}


def _feed_lead_in(detector) -> int:
    """Feed LEAD_IN_S of silence; returns the number of frames fed (the utterance's frame offset)."""
    detector.engine.reset()
    silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    n = int(np.ceil(LEAD_IN_S * SAMPLE_RATE / FRAME_SAMPLES))
    for _ in range(n):
        detector.feed(silence)
    return n


def _find_wake(detector, audio: np.ndarray) -> tuple[int | None, float | None, float]:
    """Frames of ``audio`` through a fresh detector; (wake frame index, score, compute ms)."""
    offset = _feed_lead_in(detector)
    started = time.perf_counter()
    for i in range(0, len(audio) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
        det = detector.feed(audio[i : i + FRAME_SAMPLES])
        if det is not None:
            return det.frame_index - offset, det.score, (time.perf_counter() - started) * 1000
    return None, None, (time.perf_counter() - started) * 1000


# --------------------------------------------------------------------------- baseline

def run_baseline(utterances: Sequence[Any], models: Any, config: Config, *, progress: bool = True,
                 baseline_end_silence_ms: int = BASELINE_END_SILENCE_MS,
                 speaker_id: SpeakerHook | None = None) -> list[dict]:
    """The sequential single-process baseline on ``utterances`` (see the module docstring).

    ``models``: a ``ModelPaths`` (``.whisper``, ``.llm``); ``config.stt.model`` /
    ``config.llm.model`` override them as in the pipeline. ``speaker_id``: the
    hook for speaker identification (not built yet): called with the request
    audio (int16) after STT; its wall time is charged as stage ``speaker``.

    Returns one dict per utterance: ``wav``, ``kind``, ``wake_detected``,
    ``wake_audio_s``, ``wake_score``, ``transcript``, ``endpoint`` (endpointer
    event kind), ``endpoint_detected_audio_s``, ``speech_end_s``, ``spans_ms``
    (the five spans; empty without a wake or without speech), ``stages_ms``
    (``stt``, ``llm_first_token``, and ``speaker`` when hooked) and
    ``audio_compute_ms`` (wake/VAD compute, to check it kept up with real
    time); or ``{"wav", "error"}`` for an utterance that failed.
    """
    from engines.stt.vad import Endpointer, SileroVad

    _, new_detector = _wake_detector(config)
    vad = SileroVad(threshold=config.stt.vad_threshold)
    endpointer = Endpointer(vad, end_silence_ms=baseline_end_silence_ms,
                            no_speech_timeout_s=config.stt.no_speech_timeout_s,
                            max_utterance_s=config.stt.max_utterance_s, frame_samples=FRAME_SAMPLES)
    stt = _whisper(models, config)
    llm = _llm(models, config)
    preroll_frames = int(round(config.stt.preroll_s * SAMPLE_RATE / FRAME_SAMPLES))

    out = []
    for utt in _progress(utterances, progress, "baseline"):
        try:
            out.append(_baseline_one(utt, new_detector(), endpointer, stt, llm, config,
                                     preroll_frames, speaker_id))
        except Exception as exc:  # a bad utterance must not stop the bench
            out.append(_error(utt, exc))
    return out


def _baseline_one(utt, detector, endpointer, stt, llm, config: Config, preroll_frames: int,
                  speaker_id: SpeakerHook | None) -> dict:
    audio = load_wav(utt.wav)
    speech_end_s = float(utt.speech_end_s)
    res: dict[str, Any] = {"wav": str(utt.wav), "kind": getattr(utt, "kind", ""), "wake_detected": False,
                           "wake_audio_s": None, "wake_score": None, "transcript": "", "endpoint": None,
                           "endpoint_detected_audio_s": None, "speech_end_s": speech_end_s,
                           "spans_ms": {}, "stages_ms": {}, "audio_compute_ms": {}}

    # 1. wake word, frame by frame (charged audio time).
    wake_frame, score, wake_ms = _find_wake(detector, audio)
    res["audio_compute_ms"]["wake"] = round(wake_ms, 1)
    if wake_frame is None:
        return res
    wake_audio_s = (wake_frame + 1) * FRAME_SAMPLES / SAMPLE_RATE
    res.update(wake_detected=True, wake_audio_s=wake_audio_s, wake_score=round(float(score), 3))

    # 2. record until the endpointer says speech ended (charged audio time). The pre-roll is the
    # audio Vigil's STT reads too; a speech end inside it is the wake phrase's, so it is skipped.
    start = max(0, (wake_frame + 1 - preroll_frames) * FRAME_SAMPLES)
    request_start = (wake_frame + 1) * FRAME_SAMPLES - start  # in recorded samples
    limit = int((config.stt.max_utterance_s + config.stt.no_speech_timeout_s + 1.0) * SAMPLE_RATE)
    silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    frames: list[np.ndarray] = []
    fed = offset = 0
    endpoint = None
    endpointer.reset()
    started = time.perf_counter()
    while fed < limit:
        pos = start + fed
        frame = audio[pos : pos + FRAME_SAMPLES]
        if len(frame) < FRAME_SAMPLES:  # the file ended: a microphone keeps delivering silence
            frame = np.concatenate([frame, silence[: FRAME_SAMPLES - len(frame)]])
        frames.append(frame)
        fed += FRAME_SAMPLES
        ev = endpointer.feed(frame)
        if ev is None or ev.kind == "speech_start":
            continue
        if ev.kind == "speech_end" and offset + ev.sample_index <= request_start:
            offset = fed  # the wake phrase ending inside the pre-roll: listen on
            endpointer.reset()
            continue
        endpoint = ev
        break
    res["audio_compute_ms"]["vad"] = round((time.perf_counter() - started) * 1000, 1)
    if endpoint is None:
        res["endpoint"] = "timeout"
        return res
    detect_audio_s = (start + fed) / SAMPLE_RATE
    res.update(endpoint=endpoint.kind, endpoint_detected_audio_s=round(detect_audio_s, 4))
    if endpoint.kind == "no_speech":
        return res

    # 3. transcribe (charged wall time).
    end_sample = offset + endpoint.sample_index + int(STT_TAIL_S * SAMPLE_RATE)
    request = np.concatenate(frames)[:end_sample]
    t0 = time.perf_counter()
    text = strip_wake_phrase(stt.transcribe(request))
    stt_ms = (time.perf_counter() - t0) * 1000
    res["transcript"] = text
    stages = {"stt": round(stt_ms, 1)}

    # 4. speaker identification: not built yet; the hook runs sequentially, as a script would.
    speaker_ms = 0.0
    if speaker_id is not None:
        t0 = time.perf_counter()
        res["speaker"] = speaker_id(request)
        speaker_ms = (time.perf_counter() - t0) * 1000
        stages["speaker"] = round(speaker_ms, 1)
    res["stages_ms"] = stages
    if not text:
        return res  # nothing to ask: no spans

    # 5. LLM, stopped at the first token (charged wall time).
    llm_ms = _first_token_ms(llm, config, text)
    stages["llm_first_token"] = round(llm_ms, 1)

    wait_ms = (detect_audio_s - speech_end_s) * 1000  # audio the endpointer waited for past speech end
    to_transcript = wait_ms + stt_ms + speaker_ms
    res["spans_ms"] = {
        "wake_to_speech_end": round((speech_end_s - wake_audio_s) * 1000, 1),
        "speech_end_to_transcript": round(to_transcript, 1),
        "transcript_to_first_token": round(llm_ms, 1),
        "speech_end_to_first_token": round(to_transcript + llm_ms, 1),
        "wake_to_first_token": round((detect_audio_s - wake_audio_s) * 1000 + stt_ms + speaker_ms + llm_ms, 1),
    }
    return res


# --------------------------------------------------------------------------- floor

def run_floor(utterances: Sequence[Any], models: Any, config: Config, *, progress: bool = True,
              wake_audio_s: Mapping[str, float | None] | None = None) -> list[dict]:
    """Each engine's isolated compute time per wake utterance (see the module docstring).

    ``wake_audio_s``: optional {wav path (str): end of the wake frame in seconds}, e.g.
    ``{r["wav"]: r["wake_audio_s"] for r in baseline}``; utterances missing from it run
    the wake detector here. Negatives (``wake`` False) are skipped.

    Returns per wake utterance: ``wav``, ``stt_ms``, ``llm_first_token_ms``,
    ``transcript`` (STT output on the window), ``prompt`` (the reference
    transcript sent to the LLM), ``stt_window`` ("wake" or "file_start") and
    ``stt_audio_s`` [start, end]; or ``{"wav", "error"}``.
    """
    wake_utts = [u for u in utterances if getattr(u, "wake", False)]
    known = dict(wake_audio_s or {})
    new_detector = None
    if any(str(u.wav) not in known for u in wake_utts):
        _, new_detector = _wake_detector(config)
    stt = _whisper(models, config)
    stt.transcribe(np.zeros(SAMPLE_RATE, dtype=np.int16))  # first call allocates, as the STT worker does
    llm = _llm(models, config)
    llm.warm(config.llm.system_prompt)
    preroll_s = round(config.stt.preroll_s * SAMPLE_RATE / FRAME_SAMPLES) * FRAME_SAMPLES / SAMPLE_RATE

    out = []
    for utt in _progress(wake_utts, progress, "floor"):
        try:
            audio = load_wav(utt.wav)
            key = str(utt.wav)
            if key in known:
                wake_s = known[key]
            else:
                frame, _, _ = _find_wake(new_detector(), audio)
                wake_s = None if frame is None else (frame + 1) * FRAME_SAMPLES / SAMPLE_RATE
            begin_s = 0.0 if wake_s is None else max(0.0, wake_s - preroll_s)
            end_s = float(utt.speech_end_s) + STT_TAIL_S
            clip = audio[int(round(begin_s * SAMPLE_RATE)) : int(round(end_s * SAMPLE_RATE))]
            t0 = time.perf_counter()
            text = strip_wake_phrase(stt.transcribe(clip))
            stt_ms = (time.perf_counter() - t0) * 1000
            prompt = str(utt.transcript)
            llm_ms = _first_token_ms(llm, config, prompt)
            out.append({"wav": key, "stt_ms": round(stt_ms, 1), "llm_first_token_ms": round(llm_ms, 1),
                        "transcript": text, "prompt": prompt,
                        "stt_window": "file_start" if wake_s is None else "wake",
                        "stt_audio_s": [round(begin_s, 3), round(end_s, 3)]})
        except Exception as exc:  # a bad utterance must not stop the bench
            out.append(_error(utt, exc))
    return out
