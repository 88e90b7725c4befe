"""The forced verifier's rule for far-field rooms (engines/wake/forced.py): a likely wake phrase needs less
margin, a dereverberated third look at a stricter one; and the late-reverberation suppression (core/dsp.py)."""

from __future__ import annotations

import numpy as np
import pytest

from core.dsp import suppress_late_reverb
from engines.wake.forced import (
    DEREVERB_EXTRA_MARGIN, LIKELY_FROM_LOG10P, LIKELY_MIN_MARGIN, accepts, decide, required_margin,
)


def view(margin: float, wake: float, ms: float = 20.0) -> dict:
    return {"margin": margin, "wake_log10p": wake, "compute_ms": ms}


def test_a_likely_wake_phrase_needs_less_margin():
    assert required_margin(-6.0, 0.5) == 0.5 and required_margin(LIKELY_FROM_LOG10P, 0.5) == 0.5
    assert required_margin(-3.5, 0.5) == pytest.approx(-0.5)
    assert required_margin(-1.0, 0.5) == LIKELY_MIN_MARGIN  # never below the floor of the relief
    # " Hey Travis" a little likelier than a likely " Hey Jarvis": a wake in a room ...
    assert accepts(view(-0.3, -3.0)) and not accepts(view(-0.3, -3.0), relief=False)
    # ... but the same margin on an unlikely wake phrase (a near miss) is not
    assert not accepts(view(-0.3, -5.0)) and not accepts(view(0.4, -4.5))
    assert not accepts(view(2.0, -7.5))  # the floor stands


def test_views_are_looked_at_in_order_and_only_after_a_close_call():
    looked: list[str] = []

    def look(views):
        def f(name):
            looked.append(name)
            return views.get(name)
        return f

    ok, reading, ms = decide(look({"raw": view(1.0, -3.0)}))
    assert ok and looked == ["raw"] and ms == 20.0
    looked.clear()
    ok, reading, ms = decide(look({"raw": view(-3.0, -5.0), "denoised": view(2.0, -2.0)}))
    assert not ok and looked == ["raw"]  # far from the wake phrase: no second look
    looked.clear()
    views = {"raw": view(0.1, -5.0), "denoised": view(0.2, -5.0),
             "dereverbed": view(0.5 + DEREVERB_EXTRA_MARGIN, -5.0, 30.0)}
    ok, reading, ms = decide(look(views))
    assert ok and looked == ["raw", "denoised", "dereverbed"] and reading is views["dereverbed"] and ms == 70.0
    views["dereverbed"] = view(0.5 + DEREVERB_EXTRA_MARGIN - 0.05, -2.0)  # stricter, and no relief
    ok, reading, _ms = decide(look(views))
    assert not ok and reading is views["raw"]
    ok, _r, ms = decide({"raw": view(0.1, -5.0), "denoised": view(0.2, -5.0)}.get)  # a stored run without it
    assert not ok and ms == 40.0


def test_suppress_late_reverb_removes_the_tail_and_keeps_the_onset():
    frames = np.arange(200)
    t60, hop = 0.6, 0.01
    mel = np.full((4, 200), 1e-6)
    mel[:, 50:60] = 1.0  # a word ...
    mel[:, 60:] += 10.0 ** (-6.0 * (frames[60:] - 60) * hop / t60)  # ... and its reverberant tail
    out = suppress_late_reverb(mel, t60_s=t60)
    assert np.allclose(out[:, 50:55], mel[:, 50:55])  # the direct sound and early reflections stay
    assert (out[:, 70:100] <= 0.1 * mel[:, 70:100] + 1e-12).all()  # the tail is down to the kept share
    assert (out >= 0.1 * mel - 1e-12).all() and out.shape == mel.shape
