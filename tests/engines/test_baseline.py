"""The sequential baseline and the compute floor on real synthesized speech, with the real models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.baseline import BASELINE_END_SILENCE_MS, SPAN_NAMES, run_baseline, run_floor
from core.config import Config
from bench.synth import engine_available, synthesize, write_wav16
from core.audio import SAMPLE_RATE, load_wav

pytestmark = pytest.mark.skipif(not engine_available("espeak-ng"), reason="espeak-ng is not installed")

LEAD_S, TAIL_S = 1.0, 1.5


@dataclass(frozen=True)
class Utt:
    """Utterance-like: the attributes bench.corpus.Utterance has."""

    wav: Path
    wake: bool
    transcript: str
    speaker: str
    speech_end_s: float
    kind: str
    voice: str = ""


def make_utt(folder: Path, name: str, text: str, transcript: str, wake: bool, kind: str) -> Utt:
    raw = synthesize(text, folder / f"{name}.raw.wav", engine="espeak-ng", voice="en-us", pad_s=0.05)
    speech = load_wav(raw)
    loud = np.nonzero(np.abs(speech.astype(np.int32)) > 50)[0]
    speech = speech[loud[0] : loud[-1] + 1]
    z = lambda s: np.zeros(int(s * SAMPLE_RATE), dtype=np.int16)  # noqa: E731
    wav = write_wav16(folder / f"{name}.wav", np.concatenate([z(LEAD_S), speech, z(TAIL_S)]))
    return Utt(wav, wake, transcript, "espeak:en-us", LEAD_S + len(speech) / SAMPLE_RATE, kind, "en-us")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Utt]:
    d = tmp_path_factory.mktemp("baseline")
    return [
        make_utt(d, "capital", "hey jarvis, what is the capital of France", "what is the capital of France",
                 True, "question"),
        make_utt(d, "time", "hey jarvis, what time is it", "what time is it", True, "command"),
        make_utt(d, "negative", "the weather is nice today in the city", "", False, "negative"),
    ]


@pytest.fixture(scope="module")
def baseline(corpus, models) -> list[dict]:
    return run_baseline(corpus, models, Config(), progress=False)


@pytest.fixture(scope="module")
def floor(corpus, models, baseline) -> list[dict]:
    # Half of the floor finds the wake frame itself, half reuses the baseline's.
    known = {baseline[0]["wav"]: baseline[0]["wake_audio_s"]}
    return run_floor(corpus, models, Config(), progress=False, wake_audio_s=known)


def test_baseline_wakes_transcribes_and_waits_for_silence(corpus, baseline) -> None:
    assert len(baseline) == 3
    for utt, res in zip(corpus[:2], baseline[:2]):
        assert "error" not in res, res
        assert res["wav"] == str(utt.wav)
        assert res["wake_detected"], res
        assert LEAD_S < res["wake_audio_s"] < utt.speech_end_s
        assert res["endpoint"] == "speech_end"
        assert set(res["spans_ms"]) == set(SPAN_NAMES)
        spans, stages = res["spans_ms"], res["stages_ms"]
        assert stages["stt"] > 0 and stages["llm_first_token"] > 0
        # The endpointer must hear the whole end-of-speech silence before STT can start.
        assert spans["speech_end_to_first_token"] >= BASELINE_END_SILENCE_MS
        compute = stages["stt"] + stages["llm_first_token"]
        assert spans["speech_end_to_first_token"] >= BASELINE_END_SILENCE_MS + compute - 100
        assert spans["wake_to_first_token"] > spans["speech_end_to_first_token"]
        assert spans["wake_to_speech_end"] > 0
        assert spans["transcript_to_first_token"] == stages["llm_first_token"]
    words = baseline[0]["transcript"].lower()
    assert "capital" in words and "france" in words, baseline[0]["transcript"]
    assert "jarvis" not in words


def test_baseline_negative_has_no_wake(baseline) -> None:
    neg = baseline[2]
    assert "error" not in neg, neg
    assert neg["wake_detected"] is False and neg["wake_audio_s"] is None
    assert neg["spans_ms"] == {}


def test_baseline_survives_a_bad_utterance(models, tmp_path) -> None:
    bad = Utt(tmp_path / "missing.wav", True, "x", "", 1.0, "command")
    (res,) = run_baseline([bad], models, Config(), progress=False)
    assert res["wav"] == str(bad.wav) and "error" in res


def test_floor_is_below_the_baseline(corpus, baseline, floor) -> None:
    assert len(floor) == 2  # wake utterances only
    for utt, res, base in zip(corpus, floor, baseline):
        assert "error" not in res, res
        assert res["wav"] == str(utt.wav)
        assert res["stt_window"] == "wake"
        assert res["stt_ms"] > 0 and res["llm_first_token_ms"] > 0
        # The baseline's transcript waits for the end-of-speech silence (audio time) on top of the same compute.
        assert base["spans_ms"]["speech_end_to_transcript"] - base["stages_ms"]["stt"] >= 500
        assert res["prompt"] == utt.transcript
    assert "capital" in floor[0]["transcript"].lower()
