"""What STT hears of the wake phrase is not part of the request (workers/stt.py strip_wake_phrase)."""

from __future__ import annotations

import pytest

from workers.stt import strip_wake_phrase


@pytest.mark.parametrize("heard, request_", [
    ("Hey Jarvis, what time is it?", "what time is it?"),
    ("Hey Jarmis, what time is it?", "what time is it?"),
    ("Page Arvis, set a timer for five minutes.", "set a timer for five minutes."),
    ("This, set a timer for 5 minutes.", "set a timer for 5 minutes."),  # the tail of "Jarvis"
    ("this what time is it?", "what time is it?"),
    ("was what time is it.", "what time is it."),
    ("This is what is the boiling point of water.", "what is the boiling point of water."),
    ("service, set a timer for 5 minutes.", "set a timer for 5 minutes."),
])
def test_the_wake_phrase_and_its_tail_are_stripped(heard, request_):
    assert strip_wake_phrase(heard) == request_


@pytest.mark.parametrize("request_", [
    "What time is it?", "Is it raining?", "This is great.", "Is the museum open?", "Service was slow today.",
    "Who wrote Romeo and Juliet?", "",
])
def test_requests_that_start_like_a_tail_are_kept(request_):
    assert strip_wake_phrase(request_) == request_
