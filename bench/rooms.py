"""Far-field rooms: speech as a kiosk microphone hears it from a metre or two away, between hard walls.

The synthetic voices are close-talk recordings: every word arrives once, dry.  A kiosk hears the
person from 1-2 m in a lobby or a shop, where the walls send each word back for half a second or
more (RT60) and the reflections arrive louder than the voice itself.  ``in_room`` convolves a
clean clip with a room impulse response simulated by ``pyroomacoustics`` (the image-source method
in a shoebox room whose wall absorption comes from Sabine's formula, inverted).

Three rooms (``ROOMS``), picked by the clip's seed, so a corpus holds all of them (reverberation
time T30 as measured on the simulated response; Sabine's design value is lower for the larger
rooms, whose image sources decay slower than the formula says):

* a small office, 4 × 3.5 × 2.7 m, T30 0.4 s, the talker 1 m from the microphone;
* a shop, 6 × 4.5 × 3 m, T30 0.6 s, 1.5 m away;
* a hard-walled lobby, 8 × 6 × 3.2 m, T30 0.8 s, 2 m away.

At those distances the direct sound is below the reverberation (past the critical distance,
~0.55-0.8 m in such rooms): what a far-field microphone hears. Measured on the simulated responses
(direct = the first 2.5 ms): direct-to-reverberant ratio -6.9 / -5.6 / -8.3 dB, C50 6.6 / 4.8 / 2.4 dB,
EDT 0.41 / 0.48 / 0.67 s for the office, the shop and the lobby.

Are they realistic for a kiosk? The distances are (people stand 1-2 m from a screen), and so are the
reverberation times for a furnished office and a shop; a real hard-walled lobby often rings longer
(1-2 s), so the lobby here is on the mild side. Two simplifications pull the other way: the talker is
an omnidirectional source, where a person facing the kiosk sends it some 3-5 dB more direct sound; and
the walls are ideal flat reflectors (no furniture, no people scattering the sound). No background noise
is added: the room condition is reverberation alone. On balance neither soft nor extreme; the bench's
targets are held to these rooms as they are.

The result keeps the clip's length and loudness (RMS) and puts the direct sound where the dry
speech was, so ground truth measured on the clean synthesis (speech end, wake phrase end, pauses)
still holds; the reverberant tail runs into the silence after the speech.  The impulse responses
are computed once per process (a few hundred ms each) and are the same on every machine.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from core.audio import SAMPLE_RATE


@dataclass(frozen=True)
class Room:
    name: str
    size_m: tuple[float, float, float]
    sabine_rt60_s: float                   # the design value given to Sabine's formula
    t30_s: float                           # the simulated response's measured reverberation time
    talker_m: tuple[float, float, float]   # mouth
    mic_m: tuple[float, float, float]      # the kiosk's microphone

    @property
    def distance_m(self) -> float:
        return float(np.linalg.norm(np.subtract(self.talker_m, self.mic_m)))


ROOMS: tuple[Room, ...] = (
    Room("office", (4.0, 3.5, 2.7), 0.4, 0.4, talker_m=(2.6, 1.75, 1.6), mic_m=(1.6, 1.75, 1.6)),
    Room("shop", (6.0, 4.5, 3.0), 0.5, 0.6, talker_m=(3.4, 2.2, 1.65), mic_m=(1.9, 2.2, 1.6)),
    Room("lobby", (8.0, 6.0, 3.2), 0.6, 0.8, talker_m=(4.5, 3.0, 1.7), mic_m=(2.5, 3.0, 1.6)),
)


def pyroomacoustics() -> ModuleType:
    """``pyroomacoustics``, imported without ``sounddevice``.

    Why: pyroomacoustics imports sounddevice (for a recognition demo we never use), and importing
    sounddevice initialises PortAudio once for the whole process. PyAudio in the same process then
    shares that initialisation and sees the devices of that moment for ever: a virtual or real
    microphone that appears later is never listed (the capture tests failed after the room tests).
    """
    if "sounddevice" in sys.modules or "pyroomacoustics" in sys.modules:
        import pyroomacoustics as pra
        return pra
    sys.modules["sounddevice"] = None  # type: ignore[assignment]  # its import now raises ImportError
    try:
        import pyroomacoustics as pra
    finally:
        del sys.modules["sounddevice"]
    return pra


@functools.cache
def impulse_response(room: Room) -> np.ndarray:
    """The room's impulse response from the talker to the microphone (float64, 16 kHz), its direct-path
    tap at index 0 and unit peak."""
    pra = pyroomacoustics()

    absorption, max_order = pra.inverse_sabine(room.sabine_rt60_s, room.size_m)
    shoebox = pra.ShoeBox(list(room.size_m), fs=SAMPLE_RATE, materials=pra.Material(absorption),
                          max_order=max_order)
    shoebox.add_source(list(room.talker_m))
    shoebox.add_microphone(list(room.mic_m))
    shoebox.compute_rir()
    rir = np.asarray(shoebox.rir[0][0], dtype=np.float64)
    # The direct sound is the first strong tap (the fractional-delay filter spreads it over a few taps).
    direct = int(np.argmax(np.abs(rir) >= 0.5 * np.max(np.abs(rir))))
    rir = rir[direct:]
    return rir / np.max(np.abs(rir))


def room_for(seed: int) -> Room:
    return ROOMS[seed % len(ROOMS)]


def in_room(audio: np.ndarray, seed: int) -> np.ndarray:
    """The clip as heard in room ``room_for(seed)``: same length, same RMS, int16 like the input."""
    from scipy.signal import fftconvolve

    dry = np.asarray(audio, dtype=np.float64)
    if dry.size == 0 or not np.any(dry):
        return np.asarray(audio).copy()
    wet = fftconvolve(dry, impulse_response(room_for(seed)))[: dry.size]
    wet *= np.sqrt(np.mean(dry ** 2) / max(np.mean(wet ** 2), 1e-12))
    return np.clip(np.round(wet), -32768, 32767).astype(np.int16)
