"""Turn-aware endpointing's witnesses: the transcript's last word, Smart Turn on real speech, the pause rule."""

from __future__ import annotations


import numpy as np
import pytest

from bench.synth import engine_available, speech_bounds, tts_samples
from engines.stt.turn import SmartTurn, TurnPolicy, open_ending
from models.provision import SMART_TURN

RATE = 16_000


@pytest.mark.parametrize("text", ["What time is it?", "Set a timer for 5 minutes.", "What is the capital of France?",
                                  "How many legs does a spider have", "What can you do?", "Thank you.",
                                  "How are you?", "Who wrote Hamlet?", "Turn it off.", "What is it?"])
def test_finished_requests_read_complete(text):
    assert not open_ending(text)


@pytest.mark.parametrize("text", ["Set a timer for", "What is the capital of", "Please turn off the",
                                  "Tell me about...", "Remind me to call my", "", "   ", "What's the weather and",
                                  "[BLANK_AUDIO]", "(music)", "How do I", "Can you", "Who wrote", "How many",
                                  # whisper's "it" for the words after a hesitation (bench hesitation set)
                                  "Set a timer for it.", "Tell me something about it."])
def test_unfinished_requests_read_open(text):
    assert open_ending(text)


def test_the_longer_the_pause_the_less_evidence_it_needs():
    policy = TurnPolicy(threshold=0.8, max_pause_ms=1200, text_weight=0.0)
    assert policy.required(0) == pytest.approx(0.8) and policy.required(600) == pytest.approx(0.4)
    assert policy.required(1200) == 0 and policy.complete(0.0, 1200)  # the longest pause ends it anyway
    assert policy.complete(0.9, 0) and not policy.complete(0.5, 0) and policy.complete(0.5, 600)
    assert policy.wait_ms(0.9) == 0 and policy.wait_ms(0.4) == pytest.approx(600)
    # an open ending is no evidence at all, whatever the model says; a finished one is lifted
    assert policy.evidence(0.99, "Set a timer for") == 0.0
    lifted = TurnPolicy(text_weight=0.5).evidence(0.2, "What time is it?")
    assert lifted == pytest.approx(0.6)
    assert TurnPolicy(text_prior=0.7, text_weight=0.0).evidence(None, "What time is it?") == pytest.approx(0.7)


def test_an_unsure_sentence_end_makes_the_pause_last_longer():
    """Whisper closed "What is the capital?" at a hesitation with p 0.2: with sure_ending 0.5 the pause must
    last 1300 (1 - 0.2 / 0.5) = 780 ms; a sure end (0.9) ends it at once; 0 turns the witness off."""
    policy = TurnPolicy(threshold=0.5, max_pause_ms=1300, text_weight=0.5, sure_ending=0.5)
    unsure = policy.evidence(None, "What is the capital?", ending_p=0.2)
    assert policy.wait_ms(unsure) == pytest.approx(780)
    assert not policy.complete(unsure, 700) and policy.complete(unsure, 800)
    assert policy.wait_ms(policy.evidence(None, "What is the capital?", ending_p=0.9)) == 0
    assert policy.wait_ms(policy.evidence(None, "Set a timer for 5 minutes.", ending_p=0.0)) == pytest.approx(1300)
    assert policy.evidence(None, "Set a timer for", ending_p=0.99) == 0.0  # open stays open
    assert TurnPolicy(sure_ending=0.0).evidence(None, "What is the capital?", ending_p=0.0) == pytest.approx(0.75)


def test_the_model_is_needed_only_when_its_score_can_change_a_decision():
    # the defaults: a complete-reading transcript alone (0.5) meets the 0.5 threshold at any judged pause
    assert not TurnPolicy(threshold=0.5, max_pause_ms=1300, text_weight=0.5).model_can_decide(100)
    # a stricter threshold asks the model at the first judged pause, until the pause alone nearly decides
    strict = TurnPolicy(threshold=0.8, max_pause_ms=1300, text_weight=0.5)
    assert strict.model_can_decide(100) and not strict.model_can_decide(600)
    assert TurnPolicy(threshold=0.5, text_weight=0.0).model_can_decide(100)


@pytest.fixture(scope="module")
def smart_turn(models) -> SmartTurn:
    assert models.turn is not None and models.turn.name == SMART_TURN.filename
    return SmartTurn(models.turn)


def _spoken(text: str, pause_s: float = 0.05) -> np.ndarray:
    speech = tts_samples(text, "piper")
    _, end = speech_bounds(speech)
    cut = speech[: int(end * RATE)]
    return np.concatenate([np.zeros(RATE // 2, np.int16), cut, np.zeros(int(pause_s * RATE), np.int16)])


def test_features_are_the_models_input(smart_turn):
    feats = smart_turn.features(np.zeros(RATE, dtype=np.int16))
    assert feats.shape == (1, 80, 800) and feats.dtype == np.float32
    long = smart_turn.features((np.random.default_rng(0).standard_normal(12 * RATE) * 3000).astype(np.int16))
    assert long.shape == (1, 80, 800)  # the last 8 s only


@pytest.mark.skipif(not engine_available("piper"), reason="the Piper voice is a dev requirement")
def test_smart_turn_hears_a_finished_request_from_an_unfinished_one(smart_turn):
    """On the neural voice, a few tens of ms into the pause (when the STT worker asks)."""
    done = smart_turn.score(_spoken("Hey Jarvis, set a timer for five minutes."))
    unfinished = smart_turn.score(_spoken("Hey Jarvis, please turn off the"))
    assert 0.0 <= unfinished < 0.5 < done <= 1.0, (done, unfinished)
