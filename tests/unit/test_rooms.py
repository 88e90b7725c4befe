"""The far-field room condition (bench/rooms.py): the rooms are what they claim, the speech stays put."""

from __future__ import annotations

import numpy as np
import pytest

from bench.rooms import ROOMS, impulse_response, in_room, pyroomacoustics, room_for
from bench.synth import pink_noise


@pytest.mark.parametrize("room", ROOMS, ids=lambda r: r.name)
def test_each_room_reverberates_as_documented(room):
    pra = pyroomacoustics()

    h = impulse_response(room)
    assert int(np.argmax(np.abs(h))) <= 3 and np.abs(h).max() == pytest.approx(1.0)  # the direct sound first
    t30 = pra.experimental.measure_rt60(h, fs=16000, decay_db=30)
    assert t30 == pytest.approx(room.t30_s, rel=0.1)
    direct = np.sum(h[:40] ** 2) / np.sum(h[40:] ** 2)
    assert 10 * np.log10(direct) < -3  # past the critical distance: more reverberation than voice
    assert 0.9 <= room.distance_m <= 2.1


def test_in_room_keeps_length_loudness_and_timing():
    rng = np.random.default_rng(0)
    burst = np.zeros(16000, dtype=np.int16)
    burst[4000:4800] = (rng.standard_normal(800) * 4000).astype(np.int16)  # a "word" at 0.25 s
    for seed in range(len(ROOMS)):
        wet = in_room(burst, seed)
        assert wet.dtype == np.int16 and wet.shape == burst.shape
        rms = lambda x: np.sqrt(np.mean(x.astype(np.float64) ** 2))  # noqa: E731
        assert rms(wet) == pytest.approx(rms(burst), rel=0.01)
        onset = int(np.argmax(np.abs(wet) > 0.05 * np.abs(wet).max()))
        assert 3990 <= onset <= 4010  # the direct sound where the dry word was
        assert np.abs(wet[5000:]).max() > 0  # ... and its reverberant tail after it
    assert {room_for(s).name for s in range(6)} == {r.name for r in ROOMS}
    silence = np.zeros(800, dtype=np.int16)
    assert not np.any(in_room(silence, 0))
    assert in_room(pink_noise(0.5, seed=1), 1).shape == (8000,)


def test_the_room_simulator_leaves_portaudio_alone():
    """Imported our way, pyroomacoustics does not pull in sounddevice, whose import would freeze
    PortAudio's device list for every later PyAudio in this process."""
    import sys

    pyroomacoustics()
    assert "sounddevice" not in sys.modules
