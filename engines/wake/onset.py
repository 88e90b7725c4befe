"""A second wake proposer that needs no wake model: "someone started speaking after a pause".

openWakeWord misses some voices whatever its threshold (fast, low espeak ``en+m7`` peaks
below 0.005 on "hey jarvis") and, in noise, scores real wakes under its proposal
threshold.  A kiosk user nearly always says the wake phrase after a pause, at the start
of what they say.  So the start of each utterance is proposed too: once
``ONSET_PROPOSE_S`` of audio after a speech onset is in, that window goes to the
verifier exactly like an openWakeWord proposal.  Ordinary speech costs one verification
per utterance, silence costs nothing but this energy tracker.

Speech is a frame whose energy stands ``ONSET_DB`` over a noise floor that follows the
quietest frames (fast down, slow up), so stationary noise and steady babble raise the
floor instead of firing.  An onset is a speech frame after at least ``ONSET_GAP_S`` of
non-speech, or a sharp rise (``RISE_DB`` over the last half second's median: a voice
starting over babble, which leaves no pause); two speech frames within the first three are
required (a click is not an utterance).  Measured on the wake corpus, the verifier's window
after an onset proposal holds the whole wake phrase in 60/60 clean, 59/60 pink and 55/60
babble positives, at about 1 ms CPU per audio second.
"""

from __future__ import annotations

import numpy as np

from core.audio import SAMPLE_RATE

ONSET_DB = 9.0          # speech: frame energy this far above the noise floor
ONSET_GAP_S = 0.3       # non-speech before an onset
ONSET_PROPOSE_S = 1.2   # propose this long after the onset ("hey jarvis" is inside by then)
FLOOR_RISE_DB_PER_S = 3.0
SILENCE_DBFS = -75.0    # digital silence: never an onset
RISE_DB = 8.0           # ... or a frame this far over the median of the last RISE_CONTEXT frames
RISE_CONTEXT = 6        # (0.48 s): someone starting to speak over babble, with no pause before


def frame_dbfs(frame: np.ndarray) -> float:
    raw = np.asarray(frame)
    a = raw.astype(np.float32) / (32768.0 if np.issubdtype(raw.dtype, np.integer) else 1.0)
    return float(10.0 * np.log10(np.mean(a * a) + 1e-12))


class OnsetProposer:
    """``feed(frame) -> True`` on the frame where an utterance onset's proposal is due."""

    name = "onset"

    def __init__(self, frame_samples: int, onset_db: float = ONSET_DB, gap_s: float = ONSET_GAP_S,
                 propose_s: float = ONSET_PROPOSE_S) -> None:
        self.frame_s = frame_samples / SAMPLE_RATE
        self.onset_db = onset_db
        self.gap_frames = max(1, int(round(gap_s / self.frame_s)))
        self.propose_frames = max(1, int(round(propose_s / self.frame_s)))
        self.reset()

    def reset(self) -> None:
        self.floor: float | None = None
        self.quiet_run = 0
        self.since_onset: int | None = None
        self.voiced_since_onset = 0
        self.recent: list[float] = []
        self.since_proposal = 10 ** 9

    def feed(self, frame: np.ndarray) -> bool:
        db = frame_dbfs(frame)
        if self.floor is None:
            self.floor = db
        elif db < self.floor:
            self.floor = db
        else:
            self.floor += min(db - self.floor, FLOOR_RISE_DB_PER_S * self.frame_s)
        speech = db > SILENCE_DBFS and db - self.floor >= self.onset_db
        context = float(np.median(self.recent)) if len(self.recent) >= RISE_CONTEXT else None
        self.recent = (self.recent + [db])[-RISE_CONTEXT:]
        rise = (context is not None and db > SILENCE_DBFS and db - context >= RISE_DB
                and self.since_proposal >= self.propose_frames)
        self.since_proposal += 1
        due = False
        if self.since_onset is not None:
            self.since_onset += 1
            self.voiced_since_onset += int(speech)
            if self.since_onset == 3 and self.voiced_since_onset < 2:
                self.since_onset = None  # a click, not an utterance
            elif self.since_onset is not None and self.since_onset >= self.propose_frames:
                due = True
                self.since_onset, self.since_proposal = None, 0
        elif (speech and self.quiet_run >= self.gap_frames) or rise:
            self.since_onset, self.voiced_since_onset = 0, 1
        self.quiet_run = 0 if speech else self.quiet_run + 1
        return due
