"""Wake-word engine + detector on real synthesized speech (openWakeWord hey_jarvis)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from workers.wake_engines import Detection, OpenWakeWordEngine, WakeDetector

from tests.speech import SR, pad, synth

FRAME = 1280

pytestmark = pytest.mark.skipif(
    not (shutil.which("espeak-ng") and shutil.which("flite")), reason="needs espeak-ng and flite"
)


def run(detector: WakeDetector, audio: np.ndarray) -> list[Detection]:
    out = []
    for i in range(0, len(audio) - FRAME + 1, FRAME):
        d = detector.feed(audio[i : i + FRAME])
        if d is not None:
            out.append(d)
    return out


@pytest.fixture(scope="module")
def engine() -> OpenWakeWordEngine:
    return OpenWakeWordEngine("hey_jarvis")


def test_engine_shape_and_single_thread(engine: OpenWakeWordEngine) -> None:
    assert engine.frame_samples == 1280
    assert engine.model_path.name == "hey_jarvis_v0.1.onnx"
    threads = engine.session_threads()
    assert set(threads) == {"wake", "melspec_model", "embedding_model"}
    assert all(t == (1, 1) for t in threads.values()), threads
    assert 0.0 <= engine.score(np.zeros(FRAME, dtype=np.int16)) <= 1.0


@pytest.mark.parametrize("voice", ["en-us", "en+f3", "flite:kal"])
def test_fires_once_on_wake_phrase(engine: OpenWakeWordEngine, voice: str) -> None:
    speech = synth("hey jarvis, what time is it", voice)
    jarvis_end = len(synth("hey jarvis", voice))
    lead = 2.0  # > warm-up, and flushes the previous clip from the feature window
    engine.reset()
    dets = run(WakeDetector(engine, threshold=0.5), pad(speech, lead, 1.5))
    assert len(dets) == 1, dets
    det_end_s = (dets[0].frame_index + 1) * FRAME / SR
    delay = det_end_s - (lead + jarvis_end / SR)
    assert -0.2 < delay < 0.8, f"detected {delay * 1000:.0f} ms after 'jarvis' ended"
    assert dets[0].score >= 0.5


@pytest.mark.parametrize("voice", ["en-us", "flite:kal"])
def test_no_wake_on_other_sentence(engine: OpenWakeWordEngine, voice: str) -> None:
    speech = synth("the weather is nice today in the city", voice)
    engine.reset()
    assert run(WakeDetector(engine, threshold=0.5), pad(speech, 2.0, 1.5)) == []


def test_low_threshold_still_one_detection_per_utterance(engine: OpenWakeWordEngine) -> None:
    """At 0.3 the phrase stays above threshold for several frames; reset +
    refractory must still give one detection, and a second utterance after the
    refractory time must fire again."""
    speech = synth("hey jarvis, turn on the lights", "flite:kal")
    engine.reset()
    det = WakeDetector(engine, threshold=0.3, refractory_s=2.0)
    dets = run(det, np.concatenate([pad(speech, 2.0, 2.5), pad(speech, 0.0, 1.5)]))
    assert len(dets) == 2, dets
    assert det.detections == 2
    assert dets[1].frame_index - dets[0].frame_index > 2.0 * SR / FRAME


def test_warmup_suppresses_detections() -> None:
    """A phrase right at start-up is ignored while warming up, seen without it."""
    speech = pad(synth("hey jarvis, what time is it", "flite:kal"), 0.0, 1.0)
    quiet = WakeDetector(OpenWakeWordEngine(), warmup_s=speech.size / SR + 0.5)
    assert run(quiet, speech) == []
    assert quiet.frames_fed == speech.size // FRAME
    loud = WakeDetector(OpenWakeWordEngine(), warmup_s=0.5)
    assert len(run(loud, speech)) == 1
    # reset() re-applies the warm-up: the same phrase right after is ignored.
    loud.reset()
    quiet_again = WakeDetector(loud.engine, warmup_s=speech.size / SR + 0.5)
    assert run(quiet_again, speech) == []
