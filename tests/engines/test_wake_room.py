"""The forced verifier in a far-field room (bench/rooms.py: talker 1-2 m away, T30 0.4-0.8 s): real wakes that
the plain margin turned down are accepted, near misses in the same rooms stay rejected.

Real components: the CTranslate2 tiny.en model provisioned from PyPI, espeak-ng/flite speech, pyroomacoustics rooms.
"""

from __future__ import annotations

import pytest

from bench.rooms import in_room, room_for
from bench.speech import pad, synth
from engines.wake.forced import ForcedPhraseScorer, ForcedVerifier, accepts
from engines.wake.text_verify import window_samples


@pytest.fixture(scope="module")
def scorer(models):
    return ForcedPhraseScorer(models.whisper_ct2, threads=2)


def room_window(text: str, voice: str, seed: int):
    """The verifier's window over the utterance as the kiosk hears it in room ``room_for(seed)``."""
    return in_room(pad(synth(text, voice), 0.5, 1.0), seed)[:window_samples()]


@pytest.mark.parametrize("text,voice,seed", [("Hey Jarvis, what time is it?", "en-gb", 1),
                                             ("Hey Jarvis, turn on the kitchen light.", "en-gb", 1),
                                             ("Hey Jarvis, what time is it?", "en+m3", 0)])
def test_a_room_wake_the_plain_margin_missed_is_accepted(scorer, text, voice, seed):
    """In the shop (1.5 m, T30 0.6 s) and the office (1 m, 0.4 s) tiny.en finds "Hey Travis" about as likely
    as "Hey Jarvis", but "Hey Jarvis" itself stays likely: the relief for a likely wake phrase accepts it."""
    window = room_window(text, voice, seed)
    raw = scorer.score(window)
    assert not accepts(raw, relief=False), raw  # what the verifier did before
    v = ForcedVerifier(scorer).check(window)
    assert v.accepted, (room_for(seed).name, v)
    assert v.phrase_end_s is not None and 0.6 < v.phrase_end_s < 2.2


@pytest.mark.parametrize("text", ["Hey Travis, can you pass the salt?", "Hey Marvin, what is the weather?",
                                  "Hey Harvey, is dinner ready?"])
@pytest.mark.parametrize("voice", ["flite:slt", "en-us"])
def test_near_misses_in_the_rooms_stay_rejected(scorer, text, voice):
    verifier = ForcedVerifier(scorer)
    for seed in range(3):  # each room once
        v = verifier.check(room_window(text, voice, seed))
        assert not v.accepted, (room_for(seed).name, v)
