"""The benchmark corpus: built with the real TTS engines, loaded and validated like any folder in the contract's
format."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from bench.corpus import (CorpusError, Utterance, build_default_corpus, load_corpus, main, plan)
from bench.synth import engine_available, mix_at_snr, pink_noise, speech_bounds, write_wav16
from core.audio import load_wav, read_wav_info

RATE = 16_000
needs_tts = pytest.mark.skipif(not (engine_available("espeak-ng") and engine_available("flite")),
                               reason="espeak-ng and flite are needed (apt-get install espeak-ng flite)")


def window_db(x: np.ndarray, n: int) -> np.ndarray:
    """RMS of consecutive n-sample windows, in dB re int16 full scale."""
    x = x.astype(np.float64) / 32768
    w = x[: len(x) // n * n].reshape(-1, n)
    return 20 * np.log10(np.sqrt(np.mean(w * w, axis=1)) + 1e-12)


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("corpus")
    t0 = time.monotonic()
    build_default_corpus(out, quick=True, progress=False)
    return out, time.monotonic() - t0


# ----------------------------------------------------------------------------- the default corpus

@needs_tts
def test_quick_corpus_builds_and_loads(quick):
    out, seconds = quick
    assert seconds < 20, f"quick corpus took {seconds:.1f} s"
    utts = load_corpus(out)
    assert len(utts) == len(plan(quick=True)) == 3 * 3 + 2 + 2 + 1  # requests, hesitations, negatives, noise
    wake = [u for u in utts if u.wake]
    assert len(wake) == 11 and {u.kind for u in wake} == {"command", "question"}
    assert len({u.speaker for u in wake}) == 3 and "piper:joe" in {u.voice for u in wake}
    assert {u.condition for u in wake} == {"clean"}
    hesitations = [u for u in wake if u.hesitation]
    assert len(hesitations) == 2
    for u in hesitations:  # the pause is where the manifest says: silence inside, speech on both sides
        audio = load_wav(u.wav)
        start, end = (int(x * RATE) for x in u.pause_s)
        assert 0.4 <= (end - start) / RATE <= 0.8 and end < u.speech_end_s * RATE
        assert np.abs(audio[start + 160:end - 160]).max() < 100
        assert window_db(audio[start - 1600:start], 1600).max() > -35
        assert window_db(audio[end:end + 1600], 1600).max() > -35
    negatives = [u for u in utts if u.kind == "negative"]
    assert len(negatives) == 3 and not any(u.wake for u in negatives)
    noise = [u for u in negatives if u.transcript == ""]
    assert len(noise) == 1 and noise[0].duration_s == pytest.approx(10.0)
    assert "hey marvin, what is the weather" in {u.transcript for u in negatives}
    for u in utts:
        assert u.wav.is_absolute() and u.wav.parent == out.resolve()
        info = read_wav_info(u.wav)
        assert (info.rate, info.channels, info.bits) == (RATE, 1, 16)
    for u in wake:
        assert not u.transcript.lower().startswith("hey jarvis")  # the request only


@needs_tts
def test_speech_end_is_where_speech_ends(quick):
    out, _ = quick
    for u in load_corpus(out):
        if u.speaker == "":  # noise-only
            assert u.speech_end_s == 0.0
            continue
        x = load_wav(u.wav)
        end = int(round(u.speech_end_s * RATE))
        peak = window_db(x, 160).max()
        assert 0.5 < u.speech_end_s < u.duration_s
        assert not np.any(x[: RATE // 2]), f"{u.wav.name}: the first 0.5 s is not silent"
        assert u.duration_s - u.speech_end_s >= 1.2 - 1e-3, f"{u.wav.name}: trailing silence too short"
        after = window_db(x[end:], 800)  # 50 ms windows
        assert after.max() < peak - 30, f"{u.wav.name}: audio after speech_end_s is not near-silent"
        before = window_db(x[end - RATE // 5: end], 160)  # the 200 ms before, 10 ms frames
        assert before.max() > peak - 30, f"{u.wav.name}: the 200 ms before speech_end_s are silent"


@needs_tts
def test_second_build_is_instant(quick):
    out, _ = quick
    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    t0 = time.monotonic()
    manifest = build_default_corpus(out, quick=True, progress=False)
    assert time.monotonic() - t0 < 0.5
    assert manifest == out.resolve() / "manifest.jsonl"
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


@needs_tts
def test_cli_reports_the_corpus(quick, capsys):
    out, _ = quick
    assert main([str(out), "--quick", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "14 files" in text and "command 7" in text and "hesitations: 2" in text


# ----------------------------------------------------------------------------- load_corpus validation

GOOD = {"wav": "a.wav", "wake": True, "transcript": "what time is it", "speaker": "ann",
        "speech_end_s": 0.8, "kind": "command"}


def corpus_with(tmp_path: Path, *rows: dict | str) -> Path:
    write_wav16(tmp_path / "a.wav", np.zeros(RATE, dtype=np.int16))  # 1.0 s
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.mark.parametrize("row, problem", [
    ({k: v for k, v in GOOD.items() if k != "speaker"}, "missing key 'speaker'"),
    ({**GOOD, "wake": "yes"}, "'wake' must be true or false"),
    ({**GOOD, "speech_end_s": True}, "'speech_end_s' must be a number"),
    ({**GOOD, "transcript": None}, "'transcript' must be a string"),
    ({**GOOD, "wav": "missing.wav"}, "does not exist"),
    ({**GOOD, "speech_end_s": 1.5}, "outside the file"),
    ({**GOOD, "speech_end_s": -0.1}, "outside the file"),
    ({**GOOD, "kind": "chitchat"}, "unknown kind 'chitchat'"),
    ({**GOOD, "voice": 3}, "'voice' must be a string"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_load_corpus_rejects_bad_lines_with_their_number(tmp_path, row, problem):
    folder = corpus_with(tmp_path, GOOD, row)
    with pytest.raises(CorpusError) as e:
        load_corpus(folder)
    assert "line 2" in str(e.value) and problem in str(e.value), str(e.value)


def test_load_corpus_rejects_unusable_folders(tmp_path):
    with pytest.raises(CorpusError, match="not a folder"):
        load_corpus(tmp_path / "nope")
    with pytest.raises(CorpusError, match="no manifest.jsonl"):
        load_corpus(tmp_path)
    (tmp_path / "manifest.jsonl").write_text("\n\n")
    with pytest.raises(CorpusError, match="no utterances"):
        load_corpus(tmp_path)
    (tmp_path / "b.wav").write_bytes(b"RIFF not really a wav")
    (tmp_path / "manifest.jsonl").write_text(json.dumps({**GOOD, "wav": "b.wav"}) + "\n")
    with pytest.raises(CorpusError, match="line 1: wav 'b.wav' is not usable audio"):
        load_corpus(tmp_path)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_external_minimal_corpus_loads(tmp_path):
    """A corpus we never made: a 44.1 kHz stereo WAV written by sox elsewhere, an absolute path, extra keys."""
    audio_dir, corpus_dir = tmp_path / "audio", tmp_path / "corpus"
    audio_dir.mkdir(), corpus_dir.mkdir()
    wav = audio_dir / "take1.wav"
    subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", str(wav), "synth", "2.5", "sine", "440"], check=True)
    row = {"wav": str(wav), "wake": False, "transcript": "nothing to see", "speaker": "bob",
           "speech_end_s": 2, "kind": "negative", "mic": "usb", "voice": "human"}
    (corpus_dir / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    [u] = load_corpus(corpus_dir)
    assert u == Utterance(wav=wav, wake=False, transcript="nothing to see", speaker="bob",
                          speech_end_s=2.0, kind="negative", voice="human")
    assert u.duration_s == pytest.approx(2.5)


def test_relative_paths_resolve_against_the_folder(tmp_path, monkeypatch):
    (tmp_path / "c").mkdir()
    corpus_with(tmp_path / "c", GOOD)
    monkeypatch.chdir(tmp_path)
    [u] = load_corpus("c")  # a relative folder, a relative wav: both absolute afterwards
    assert u.wav == (tmp_path / "c" / "a.wav").resolve() and u.voice == "" and u.duration_s == pytest.approx(1.0)


# ----------------------------------------------------------------------------- synth helpers

def test_speech_bounds_finds_a_tone_and_ignores_a_click():
    x = np.zeros(3 * RATE, dtype=np.int16)
    t = np.arange(int(0.8 * RATE)) / RATE
    x[int(0.5 * RATE): int(1.3 * RATE)] = (8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    x[int(2.5 * RATE): int(2.51 * RATE)] = 4000  # a 10 ms click 1.2 s later: not speech
    start, end = speech_bounds(x)
    assert start == pytest.approx(0.5, abs=0.011) and end == pytest.approx(1.3, abs=0.011)
    assert speech_bounds(np.zeros(RATE, dtype=np.int16)) == (0.0, 0.0)
    assert speech_bounds(np.full(RATE, 10, dtype=np.int16)) == (0.0, 0.0)  # -70 dBFS hum


def test_pink_noise_level_spectrum_and_seed():
    a = pink_noise(4.0, rms=328.0, seed=7)  # -40 dBFS
    assert a.dtype == np.int16 and len(a) == 4 * RATE
    assert np.sqrt(np.mean(a.astype(float) ** 2)) == pytest.approx(328.0, rel=0.01)
    assert np.array_equal(a, pink_noise(4.0, rms=328.0, seed=7))
    assert not np.array_equal(a, pink_noise(4.0, rms=328.0, seed=8))
    power = np.abs(np.fft.rfft(a.astype(float))) ** 2
    f = np.fft.rfftfreq(len(a), 1 / RATE)
    octave = [power[(f >= lo) & (f < 2 * lo)].sum() for lo in (125, 500, 2000)]
    assert max(octave) / min(octave) < 1.5  # pink: equal power per octave


def test_mix_at_snr_hits_the_ratio_over_the_speech():
    x = np.zeros(2 * RATE, dtype=np.int16)
    x[RATE // 2: RATE] = (6000 * np.sin(np.arange(RATE // 2) * 0.2)).astype(np.int16)
    noise = pink_noise(0.7, rms=1600.0, seed=1)  # shorter than the speech: tiled
    mixed = mix_at_snr(x, noise, 10.0)
    assert mixed.dtype == np.int16 and len(mixed) == len(x)
    s = x[RATE // 2: RATE].astype(float)
    n = (mixed.astype(float) - x)[RATE // 2: RATE]
    assert 10 * np.log10(np.mean(s * s) / np.mean(n * n)) == pytest.approx(10.0, abs=0.3)
