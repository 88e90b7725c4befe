"""Silero VAD + endpointer on real synthesized speech with known silence padding."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from engines.stt.vad import Endpoint, Endpointer, SileroVad

from bench.speech import SR, pad, synth

pytestmark = pytest.mark.skipif(
    not (shutil.which("espeak-ng") and shutil.which("flite")), reason="needs espeak-ng and flite"
)


def run(ep: Endpointer, audio: np.ndarray, frame: int = 1280) -> list[Endpoint]:
    out = []
    for i in range(0, len(audio), frame):
        e = ep.feed(audio[i : i + frame])
        if e is not None:
            out.append(e)
    return out


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def test_model_is_hc_state_silero_with_512_chunks(vad: SileroVad) -> None:
    assert {i.name for i in vad._sess.get_inputs()} == {"input", "sr", "h", "c"}
    opts = vad._sess.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)
    with pytest.raises(ValueError):
        vad.prob(np.zeros(480, dtype=np.int16))
    vad.reset()
    assert vad.prob(np.zeros(512, dtype=np.int16)) < 0.2
    speech = synth("what is the capital of france", "en-us")
    vad.reset()
    probs = [vad.prob(speech[i : i + 512]) for i in range(0, len(speech) - 511, 512)]
    assert np.mean(probs) > 0.6


@pytest.mark.parametrize(
    ("voice", "text", "frame"),
    [
        ("en-us", "what is the capital of france", 1280),
        ("flite:kal", "set a timer for five minutes", 1280),
        ("en+f3", "turn on the kitchen lights please", 1000),  # odd frame size: remainder carry
        ("flite:slt", "how many legs does a spider have", 512),
    ],
)
def test_speech_end_matches_ground_truth(vad: SileroVad, voice: str, text: str, frame: int) -> None:
    speech = synth(text, voice)
    lead = 0.7
    truth_end = int(lead * SR) + len(speech)
    events = run(Endpointer(vad, end_silence_ms=500, frame_samples=frame), pad(speech, lead, 1.5), frame)
    assert [e.kind for e in events] == ["speech_start", "speech_end"], events
    start, end = events
    # start may lag a soft onset (the "s" of "set") by a few hundred ms
    assert -0.1 < (start.sample_index - lead * SR) / SR < 0.5
    err_ms = (end.sample_index - truth_end) / SR * 1000
    assert abs(err_ms) <= 150, f"speech_end off by {err_ms:.0f} ms"


@pytest.mark.parametrize("noise_sd", [0.0, 100.0, 300.0])
def test_no_speech_on_silence_and_low_noise(vad: SileroVad, noise_sd: float) -> None:
    rng = np.random.default_rng(7)
    audio = np.clip(rng.normal(0.0, noise_sd, 6 * SR), -32768, 32767).astype(np.int16)
    events = run(Endpointer(vad, no_speech_timeout_s=4.0), audio)
    assert len(events) == 1 and events[0].kind == "no_speech", events
    assert abs(events[0].sample_index - 4 * SR) <= 512


def test_max_length_and_reset(vad: SileroVad) -> None:
    speech = synth("this is a long request that keeps on going without any pause at all", "en-us")
    ep = Endpointer(vad, max_utterance_s=2.0)
    events = run(ep, pad(speech, 0.3, 0.0))
    assert [e.kind for e in events] == ["speech_start", "max_length"], events
    assert abs(events[1].sample_index - 2 * SR) <= 512
    assert ep.feed(np.zeros(1280, dtype=np.int16)) is None  # finished until reset
    ep.reset()
    assert ep.samples_fed == 0 and ep.done is None
    events = run(ep, pad(synth("what time is it", "en-us"), 0.5, 1.0))
    assert [e.kind for e in events] == ["speech_start", "speech_end"]
