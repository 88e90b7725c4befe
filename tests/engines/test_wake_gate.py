"""workers/wake_gate.py: the idle gate in front of the real openWakeWord, on synthesized speech and noise."""

from __future__ import annotations

import numpy as np
import pytest

from bench.synth import mix_at_snr, pink_noise
from bench.speech import synth
from engines.wake.oww import OpenWakeWordEngine
from engines.wake.detector import WakeDetector
from engines.wake.gate import GatedEngine

RATE = 16_000
FRAME = 1280


def scores(engine, audio: np.ndarray) -> np.ndarray:
    return np.array([engine.score(audio[i:i + FRAME]) for i in range(0, audio.size - FRAME + 1, FRAME)])


def noisy_request(voice: str, lead_s: float = 6.0) -> np.ndarray:
    """Steady pink noise, then "hey jarvis, what time is it" over it at 10 dB SNR, then noise again."""
    speech = synth("Hey Jarvis, what time is it?", voice)
    noise = pink_noise(lead_s + speech.size / RATE + 3.0, rms=300.0, seed=4)
    start = int(lead_s * RATE)
    mixed = noise.copy()
    mixed[start:start + speech.size] = mix_at_snr(speech, noise[start:start + speech.size], 10.0)
    return mixed


def test_the_engine_sleeps_through_silence_and_steady_noise():
    gated = GatedEngine(OpenWakeWordEngine())
    audio = np.concatenate([np.zeros(10 * RATE, np.int16), pink_noise(20.0, rms=300.0, seed=1)])
    got = scores(gated, audio)
    assert gated.skipped_frames > 0.8 * got.size, (gated.skipped_frames, got.size)
    assert gated.catchups <= 2  # the noise starting is a sound; then the floor follows it
    assert np.all(got[: 10 * RATE // FRAME] == 0.0)  # digital silence never runs the engine


@pytest.mark.parametrize("voice", ["en-us", "flite:slt"])
def test_the_gate_changes_no_score_that_matters_and_no_detection(voice):
    audio = noisy_request(voice)
    gated = GatedEngine(OpenWakeWordEngine())
    got, ref = scores(gated, audio), scores(OpenWakeWordEngine(), audio)
    assert gated.skipped_frames > 40  # it did sleep through the noise before the request
    # openWakeWord's start-up scores (~1 s in, on anything) fall in the detector's warm-up: not compared
    warm = int(np.ceil(1.5 * RATE / FRAME))
    got, ref = got[warm:], ref[warm:]
    either = (got >= 0.005) | (ref >= 0.005)
    assert either.any()
    np.testing.assert_allclose(got[either], ref[either], atol=1e-4)

    def detections(engine):
        det = WakeDetector(engine, threshold=0.1, warmup_s=1.5)  # a proposal, as two-stage wake makes
        return [(i, d.frame_index, round(d.score, 4)) for i in range(0, audio.size - FRAME + 1, FRAME)
                if (d := det.feed(audio[i:i + FRAME])) is not None]

    fired = detections(GatedEngine(OpenWakeWordEngine()))
    assert fired and fired == detections(OpenWakeWordEngine())


def test_reset_and_the_rest_reach_the_engine():
    engine = OpenWakeWordEngine()
    gated = GatedEngine(engine)
    assert gated.name == engine.name and gated.frame_samples == engine.frame_samples
    assert set(gated.session_threads()) == {"wake", "melspec_model", "embedding_model"}
    scores(gated, noisy_request("en-us", lead_s=1.0))
    assert len(engine._model.prediction_buffer[engine._key]) > 0
    gated.reset()
    assert len(engine._model.prediction_buffer[engine._key]) == 0
