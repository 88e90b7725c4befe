"""The forced-score wake verifier (workers/wake_forced.py) and the onset proposer (workers/wake_onset.py).

Real components: the CTranslate2 tiny.en model provisioned from PyPI, ctranslate2, espeak-ng/flite speech.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.synth import mix_at_snr, pink_noise, tts_samples
from bench.speech import pad, synth
from engines.wake.forced import (
    ForcedPhraseScorer, ForcedScoreUnavailable, ForcedVerifier, accepts, log_mel, subtract_noise, tokenize,
)
from engines.wake.onset import ONSET_PROPOSE_S, OnsetProposer
from engines.wake.text_verify import WINDOW_AFTER_S, window_samples

RATE = 16_000
FRAME = 1280


@pytest.fixture(scope="module")
def scorer(models):
    return ForcedPhraseScorer(models.whisper_ct2, threads=2)


@pytest.fixture(scope="module")
def verifier(scorer):
    return ForcedVerifier(scorer)


def window(text: str, voice: str, lead_s: float = 0.5) -> np.ndarray:
    """The verifier's window over an utterance that starts with ``text``'s first words: 2.25 s from 0.5 s
    before it (where an onset proposal's window lies)."""
    speech = pad(synth(text, voice), lead_s, 1.0)
    return speech[:window_samples()]


def test_log_mel_and_tokens(scorer):
    # tiny.en is English-only: the transcript starts without a language and task, although its vocabulary
    # holds <|en|> and <|transcribe|> too (a multilingual model gets both before <|notimestamps|>).
    assert scorer.multilingual is False and scorer.n_mels == 80 and len(scorer._start) == 2
    feats = log_mel(np.zeros(RATE, dtype=np.int16), scorer._filters)
    assert feats.shape == (80, 100) and np.isfinite(feats).all()
    vocab = {"ĠHey": 1, "ĠJar": 2, "vis": 3, "ĠJarvis": 4, ",": 5}
    assert tokenize(" Hey, Jarvis", vocab) == [1, 5, 4]
    with pytest.raises(ValueError):
        tokenize(" Hey Zq", vocab)


@pytest.mark.parametrize("voice", ["flite:slt", "flite:kal", "en-us"])
def test_accepts_hey_jarvis(verifier, voice):
    v = verifier.check(window("Hey Jarvis, what time is it?", voice))
    assert v.accepted, v
    assert v.score > 0.66 and v.heard.startswith("Hey Jarvis") and v.phrase_end_s is not None
    # the phrase ends after the 0.5 s lead and well before the window ends
    assert 0.6 < v.phrase_end_s < 2.0, v


@pytest.mark.parametrize("text", ["Hey Travis, can you pass the salt?", "Hey Marvin, what is the weather?",
                                  "Hey, jars of honey are on sale.", "Hey Harvey, is dinner ready?",
                                  "The children are playing football in the park."])
def test_rejects_near_misses(verifier, text):
    v = verifier.check(window(text, "flite:slt"))
    assert not v.accepted, v
    assert v.score < 0.66


def test_accepts_hey_jarvis_in_pink_noise(verifier):
    clean = window("Hey Jarvis, turn on the kitchen light.", "flite:slt")
    noisy = mix_at_snr(clean, pink_noise(clean.size / RATE + 0.1, seed=3), 10.0)
    assert verifier.check(noisy).accepted


def test_a_wake_lost_in_steady_noise_is_accepted_by_the_denoised_view(scorer, verifier):
    """flite awb's "Jarvis" in pink noise at 10 dB: raw, tiny.en hears "Travis" about as well; with the
    window's stationary noise subtracted it hears "Jarvis" clearly. The second view is only looked at then."""
    clean = window("Hey Jarvis, what time is it?", "flite:awb")
    noisy = mix_at_snr(clean, pink_noise(clean.size / RATE + 0.1, seed=0), 10.0)
    raw = scorer.score(noisy)
    assert not accepts(raw) and not raw.denoised, raw
    v = verifier.check(noisy)
    assert v.accepted and v.heard.startswith("Hey Jarvis") and v.heard.endswith("denoised"), v
    assert v.compute_ms > raw.compute_ms * 1.3  # both views were scored
    first = verifier.check(window("Hey Jarvis, what time is it?", "flite:slt"))
    assert first.accepted and not first.heard.endswith("denoised")  # accepted raw: one pass


@pytest.mark.parametrize("text", ["Hey Travis, can you pass the salt?", "Hey, jars of honey are on sale."])
def test_near_misses_in_steady_noise_stay_rejected_in_both_views(verifier, text):
    clean = window(text, "flite:slt")
    noisy = mix_at_snr(clean, pink_noise(clean.size / RATE + 0.1, seed=0), 10.0)
    assert not verifier.check(noisy).accepted


def test_subtract_noise_removes_the_steady_part_and_keeps_the_rest():
    rng = np.random.default_rng(0)
    noise = rng.uniform(0.9, 1.1, (80, 200))
    mel = noise.copy()
    mel[:, 80:120] += 50.0  # a loud word over the steady noise
    out = subtract_noise(mel)
    assert out[:, :80].max() <= 0.1 * noise.max() + 1e-9  # the noise is down to its kept fraction
    assert (out[:, 80:120] > 49.0).all()  # the word keeps its level
    assert (out >= 0.05 * mel - 1e-12).all()


@pytest.mark.parametrize("audio", [np.zeros(36_000, dtype=np.int16), np.zeros(100, dtype=np.int16),
                                   np.full(36_000, np.nan, dtype=np.float32)])
def test_silence_short_or_garbage_is_a_clean_reject(verifier, audio):
    v = verifier.check(audio)
    assert not v.accepted and 0.0 <= v.score <= 1.0


def test_wrong_shape_is_a_clear_error(verifier):
    with pytest.raises(ValueError, match="mono"):
        verifier.check(np.random.default_rng(0).integers(-3000, 3000, (2, 36_000)).astype(np.int16))


def test_missing_or_corrupt_model_folder_is_unavailable(tmp_path, models):
    with pytest.raises(ForcedScoreUnavailable):
        ForcedPhraseScorer(tmp_path)
    (tmp_path / "model.bin").write_bytes(b"not a model" * 100)
    (tmp_path / "vocabulary.txt").write_text((models.whisper_ct2 / "vocabulary.txt").read_text())
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ForcedScoreUnavailable):
        ForcedPhraseScorer(tmp_path)


def feed_all(audio: np.ndarray) -> list[float]:
    """Seconds (frame ends) at which the onset proposer proposes."""
    proposer = OnsetProposer(FRAME)
    return [(i + 1) * FRAME / RATE for i in range(audio.size // FRAME)
            if proposer.feed(audio[i * FRAME:(i + 1) * FRAME])]


def test_onset_proposer_proposes_each_utterance_once_after_its_start():
    speech = synth("Hey Jarvis, what time is it?", "en-us")
    stream = np.concatenate([np.zeros(2 * RATE, np.int16), speech, np.zeros(2 * RATE, np.int16), speech,
                             np.zeros(RATE, np.int16)])
    starts = [2.0, 4.0 + speech.size / RATE]
    got = feed_all(stream)
    assert len(got) == 2, got
    for t, start in zip(got, starts):
        assert start + ONSET_PROPOSE_S - 0.1 <= t <= start + ONSET_PROPOSE_S + 0.2, (got, starts)
        # the verifier's window (2.0 s before the proposal, WINDOW_AFTER_S after) holds the wake phrase
        assert t - 2.0 < start


def test_onset_proposer_is_quiet_in_silence_and_steady_noise():
    assert feed_all(np.zeros(10 * RATE, np.int16)) == []
    noise = pink_noise(20.0, rms=1000.0, seed=1)
    assert len(feed_all(noise)) <= 1  # a steady noise raises the floor instead of firing


def test_onset_window_of_a_fast_voice_is_accepted(verifier):
    """espeak en+m7 at 220 wpm: openWakeWord scores it under 0.005; the onset proposal's window passes."""
    speech = tts_samples("Hey Jarvis, what time is it?", "espeak-ng", "en+m7", rate=220)
    stream = np.concatenate([np.zeros(2 * RATE, np.int16), speech, np.zeros(RATE, np.int16)])
    (t,) = feed_all(stream)
    end = int((t + WINDOW_AFTER_S) * RATE)
    assert verifier.check(stream[end - window_samples():end]).accepted
