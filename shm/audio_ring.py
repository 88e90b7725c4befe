"""AudioRing: one writer, many readers, fixed int16 frames in shared memory.

Capture must never wait for anyone (docs/architecture.md, "Rings"), so the writer overwrites
the oldest frame unconditionally and each reader detects, on its own, that it
fell behind and by exactly how much.  Readers keep private cursors; a reader
that is given a header slot also publishes its cursor there so a writer in
"fast" (file replay) mode can pace itself to the slowest *active* reader and
the supervisor can export lags.

Consistency works like a seqlock, with no locks and no atomics beyond aligned
8-byte loads and stores:

    writer:  seq_begin=n, capture_ns, samples, seq_end=n, then write_seq=n+1
    reader:  check seq_end==s, copy, check seq_begin==s (and seq_end==s again)

Memory ordering: this relies on x86-64 TSO (stores become visible in program
order; loads are not reordered with older loads) and on numpy scalar stores to
aligned uint64 being single 8-byte moves.  CPython cannot reorder the stores
across the interpreter's opaque calls.  On a weakly ordered CPU (ARM64) the
protocol would need explicit barriers.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from shm.segments import MappedSegment, create_segment, unlink_quietly

__all__ = ["AudioRing", "AudioReader", "Frame"]

log = logging.getLogger("vigil.shm")

MAGIC = int.from_bytes(b"VIGILAUD", "little")
VERSION = 1
EMPTY = np.uint64(2**64 - 1)  # seq marker of a never-written slot
_U64_MAX = 2**64 - 1

# Header: one cache line of geometry + writer state, then one line per reader
# slot so readers never false-share with each other or with the writer.
H_MAGIC, H_VERSION, H_FRAME_SAMPLES, H_CAPACITY, H_MAX_READERS, H_RATE, H_WRITE_SEQ = range(7)  # word 7 reserved
HEADER_WORDS = 8
SLOT_WORDS = 8
S_CURSOR, S_ACTIVE, S_LOST, S_MAX_LAG, S_PID = range(5)
MAX_READERS_LIMIT = 64


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame; ``samples`` is a private copy, safe to keep."""

    seq: int
    capture_ns: int
    samples: np.ndarray


class _Layout:
    """Byte offsets of one ring geometry; shared by create, attach and sizing."""

    def __init__(self, frame_samples: int, capacity: int, max_readers: int) -> None:
        self.frame_samples = frame_samples
        self.capacity = capacity
        self.max_readers = max_readers
        self.header_bytes = _round_up(8 * (HEADER_WORDS + SLOT_WORDS * max_readers), 64)
        self.samples_bytes = _round_up(2 * frame_samples, 8)
        # seq_begin, capture_ns, samples, seq_end; 64-byte stride keeps every
        # frame's seq words in cache lines of their own frame.
        self.stride = _round_up(16 + self.samples_bytes + 8, 64)
        self.size = self.header_bytes + self.stride * capacity


def _initialise(buf: memoryview, lay: _Layout, sample_rate: int) -> None:
    """Write a fresh header; the magic goes last so an attach never sees a
    half-initialised ring."""
    hdr = np.ndarray((HEADER_WORDS,), dtype=np.uint64, buffer=buf)
    hdr[H_VERSION] = VERSION
    hdr[H_FRAME_SAMPLES] = lay.frame_samples
    hdr[H_CAPACITY] = lay.capacity
    hdr[H_MAX_READERS] = lay.max_readers
    hdr[H_RATE] = sample_rate
    hdr[H_WRITE_SEQ] = 0
    for offset in (lay.header_bytes, lay.header_bytes + 16 + lay.samples_bytes):
        np.ndarray((lay.capacity,), np.uint64, buf, offset, (lay.stride,))[:] = EMPTY
    hdr[H_MAGIC] = MAGIC


class AudioRing(MappedSegment):
    """Shared ring of fixed-size int16 mono 16 kHz frames (see module doc)."""

    _views = ("_hdr", "_slots", "_seq_begin", "_capture", "_samples", "_seq_end")

    def __init__(self, shm, name: str, owner: bool) -> None:  # use create()/attach()
        self._shm = shm
        self._name = name
        self._owner = owner
        # A copy, not a view: a failed check must not leave a buffer export
        # behind that would make shm.close() raise BufferError.
        words = [int(x) for x in np.frombuffer(bytes(shm.buf[: 8 * HEADER_WORDS]), dtype=np.uint64)]
        if words[H_MAGIC] != MAGIC or words[H_VERSION] != VERSION:
            raise ValueError(f"segment {name!r} is not a version-{VERSION} AudioRing")
        lay = _Layout(words[H_FRAME_SAMPLES], words[H_CAPACITY], words[H_MAX_READERS])
        if lay.frame_samples <= 0 or lay.capacity < 2 or lay.size > shm.size:
            raise ValueError(f"segment {name!r} has an inconsistent AudioRing header")
        self._lay = lay
        self._fs = lay.frame_samples
        self._cap = lay.capacity
        buf = shm.buf
        self._hdr = np.ndarray((HEADER_WORDS,), dtype=np.uint64, buffer=buf)
        self._slots = np.ndarray(
            (lay.max_readers, SLOT_WORDS), dtype=np.uint64, buffer=buf, offset=8 * HEADER_WORDS
        )
        base, st = lay.header_bytes, lay.stride
        self._seq_begin = np.ndarray((self._cap,), np.uint64, buf, base, (st,))
        self._capture = np.ndarray((self._cap,), np.uint64, buf, base + 8, (st,))
        self._samples = np.ndarray((self._cap, self._fs), np.int16, buf, base + 16, (st, 2))
        self._seq_end = np.ndarray((self._cap,), np.uint64, buf, base + 16 + lay.samples_bytes, (st,))

    # -- construction -------------------------------------------------------

    @staticmethod
    def segment_size(frame_samples: int = 1280, capacity: int = 375, max_readers: int = 8) -> int:
        """Bytes a ring of this geometry occupies (for budget checks)."""
        return _Layout(frame_samples, capacity, max_readers).size

    @classmethod
    def create(
        cls, name: str, *, sample_rate: int, frame_samples: int = 1280, capacity: int = 375, max_readers: int = 8
    ) -> AudioRing:
        """Create the segment and initialise the header (owner side); readers learn the rate from it."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if frame_samples <= 0:
            raise ValueError(f"frame_samples must be positive, got {frame_samples}")
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2 frames, got {capacity}")
        if not 0 <= max_readers <= MAX_READERS_LIMIT:
            raise ValueError(f"max_readers must be in [0, {MAX_READERS_LIMIT}], got {max_readers}")
        lay = _Layout(frame_samples, capacity, max_readers)
        shm = create_segment(name, lay.size)
        try:
            assert shm.buf is not None  # a fresh mapping (only close() clears it)
            _initialise(shm.buf, lay, sample_rate)
            return cls(shm, name, owner=True)
        except BaseException:
            shm.close()
            unlink_quietly(name)
            raise

    @classmethod
    def attach(cls, name: str) -> AudioRing:
        """Map an existing ring (worker side); never registers for cleanup."""
        return cls._attach(name, owner=False)

    # -- properties ---------------------------------------------------------

    @property
    def frame_samples(self) -> int:
        return self._fs

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def max_readers(self) -> int:
        return self._lay.max_readers

    @property
    def sample_rate(self) -> int:
        return int(self._hdr[H_RATE])

    @property
    def frame_duration_s(self) -> float:
        return self._fs / self.sample_rate

    @property
    def write_seq(self) -> int:
        """Count of frames completely written (the next seq to be written)."""
        return int(self._hdr[H_WRITE_SEQ])

    @property
    def oldest_seq(self) -> int:
        """Oldest frame that cannot be in the middle of being overwritten."""
        return max(0, int(self._hdr[H_WRITE_SEQ]) - self._cap + 1)

    # -- writer -------------------------------------------------------------

    def write(self, samples: np.ndarray, capture_ns: int | None = None) -> int:
        """Publish one frame and return its seq; never blocks.

        Validation happens before the first store so a bad call can never
        leave a half-written slot behind.  The seq comes from the header, so a
        restarted writer simply continues (and rewrites any frame torn by its
        predecessor, which was never published).
        """
        if not isinstance(samples, np.ndarray) or samples.dtype != np.int16:
            raise ValueError(f"samples must be an int16 numpy array, got {getattr(samples, 'dtype', type(samples))}")
        if samples.shape != (self._fs,):
            raise ValueError(f"samples must have shape ({self._fs},), got {samples.shape}")
        if capture_ns is None:
            capture_ns = time.monotonic_ns()
        elif not 0 <= capture_ns < 2**64:
            raise ValueError(f"capture_ns out of range: {capture_ns}")
        hdr = self._hdr
        n = int(hdr[H_WRITE_SEQ])
        i = n % self._cap
        self._seq_begin[i] = n
        self._capture[i] = capture_ns
        self._samples[i] = samples
        self._seq_end[i] = n
        hdr[H_WRITE_SEQ] = n + 1
        return n

    def min_active_cursor(self) -> int | None:
        """Cursor of the slowest active reader, or None when none is active."""
        active = self._slots[:, S_ACTIVE] != 0
        if not active.any():
            return None
        return int(self._slots[active, S_CURSOR].min())

    def headroom(self) -> int | None:
        """Frames a pacing writer may still write before the slowest active
        reader would lose one (None: no active reader, write freely)."""
        low = self.min_active_cursor()
        if low is None:
            return None
        return max(0, self._cap - 1 - (self.write_seq - low))

    def reader_lags(self) -> dict[int, int]:
        """Lag in frames of every active reader slot."""
        w = self.write_seq
        return {
            int(k): max(0, w - int(self._slots[k, S_CURSOR]))
            for k in np.flatnonzero(self._slots[:, S_ACTIVE])
        }

    def reader_stats(self) -> dict[int, dict[str, int]]:
        """Per used slot: cursor, active, lost, max_lag, pid (for metrics)."""
        w = self.write_seq
        out: dict[int, dict[str, int]] = {}
        for k in range(self._lay.max_readers):
            row = [int(x) for x in self._slots[k]]
            if row[S_PID] == 0 and row[S_ACTIVE] == 0 and row[S_LOST] == 0:
                continue
            out[k] = {
                "cursor": row[S_CURSOR],
                "active": row[S_ACTIVE],
                "lost": row[S_LOST],
                "max_lag": row[S_MAX_LAG],
                "lag": max(0, w - row[S_CURSOR]),
                "pid": row[S_PID],
            }
        return out

    def total_lost(self) -> int:
        """Frames lost to overrun by all slotted readers since creation
        (cumulative across reader restarts)."""
        return int(self._slots[:, S_LOST].sum())

    # -- readers ------------------------------------------------------------

    def reader(self, start: int | None = None, slot: int | None = None) -> AudioReader:
        """A new reader; ``start`` defaults to write_seq (only new audio)."""
        return AudioReader(self, start, slot)


class AudioReader:
    """A private cursor into an AudioRing (see module doc for the protocol)."""

    def __init__(self, ring: AudioRing, start: int | None, slot: int | None) -> None:
        if slot is not None and not 0 <= slot < ring.max_readers:
            raise ValueError(f"reader slot {slot} out of range [0, {ring.max_readers})")
        self._ring = ring
        self._slot = slot
        self._lost = 0
        self.torn = 0  # copies discarded because the writer overwrote them mid-copy
        self._cursor = ring.write_seq if start is None else self._clamp(start)
        self._poll = max(0.001, ring.frame_duration_s / 4)
        # The slot's lost/max_lag are cumulative across reader restarts (they
        # feed counters that must never go backwards); ``lost`` is this reader's.
        self._slot_lost_base = 0
        if slot is not None:
            row = ring._slots[slot]
            self._slot_lost_base = int(row[S_LOST])
            row[S_CURSOR] = self._cursor
            row[S_PID] = os.getpid()
            row[S_ACTIVE] = 1  # after the cursor: a pacing writer never sees a stale one

    def _clamp(self, seq: int) -> int:
        return max(int(seq), self._ring.oldest_seq, 0)

    @property
    def cursor(self) -> int:
        """Seq of the next frame this reader will return."""
        return self._cursor

    @property
    def lost(self) -> int:
        """Frames skipped because the writer overwrote them first (exact)."""
        return self._lost

    @property
    def lag(self) -> int:
        return max(0, self._ring.write_seq - self._cursor)

    @property
    def slot(self) -> int | None:
        return self._slot

    def set_active(self, active: bool) -> None:
        """Whether a pacing writer should wait for this reader."""
        if self._slot is not None:
            row = self._ring._slots[self._slot]
            row[S_CURSOR] = self._cursor
            row[S_ACTIVE] = 1 if active else 0

    def seek(self, seq: int) -> None:
        """Jump (e.g. back for a pre-roll); deliberate, so not counted as lost."""
        self._cursor = self._clamp(seq)
        self._publish()

    def close(self) -> None:
        """Release the header slot so it no longer holds a pacing writer back."""
        if self._slot is not None and self._ring._slots is not None:
            row = self._ring._slots[self._slot]
            row[S_ACTIVE] = 0
            row[S_PID] = 0

    def _publish(self) -> None:
        if self._slot is not None:
            self._ring._slots[self._slot, S_CURSOR] = self._cursor

    def _skip_to(self, seq: int) -> None:
        self._lost += seq - self._cursor
        self._cursor = seq
        if self._slot is not None:
            row = self._ring._slots[self._slot]
            # min(): a slot scribbled to near 2**64 must not make this store raise OverflowError
            row[S_LOST] = min(self._slot_lost_base + self._lost, _U64_MAX)
            row[S_CURSOR] = seq

    def read(self) -> Frame | None:
        """Next frame, or None if none is available yet; never blocks."""
        ring = self._ring
        cap = ring._cap
        while True:
            w = int(ring._hdr[H_WRITE_SEQ])
            s = self._cursor
            if s >= w:
                return None
            oldest = w - cap + 1
            if s < oldest:
                self._skip_to(oldest)
                continue
            i = s % cap
            if int(ring._seq_end[i]) != s:
                self._resync(s)
                continue
            capture_ns = int(ring._capture[i])
            samples = ring._samples[i].copy()
            if int(ring._seq_begin[i]) != s or int(ring._seq_end[i]) != s:
                self.torn += 1
                self._resync(s)
                continue
            self._cursor = s + 1
            if self._slot is not None:
                row = ring._slots[self._slot]
                row[S_CURSOR] = s + 1
                lag = w - s
                if lag > row[S_MAX_LAG]:
                    row[S_MAX_LAG] = lag
            return Frame(s, capture_ns, samples)

    def _resync(self, s: int) -> None:
        """Frame ``s`` was not intact: skip at least it, counting it lost.

        With a correct writer this only happens when the writer has lapped us,
        and then ``oldest`` is already past ``s``; the +1 floor guarantees
        progress even on a damaged segment.
        """
        oldest = int(self._ring._hdr[H_WRITE_SEQ]) - self._ring._cap + 1
        self._skip_to(max(s + 1, oldest))

    def read_wait(self, timeout: float) -> Frame | None:
        """Next frame, waiting up to ``timeout`` seconds.

        Sleeps a quarter frame period between checks: at most that much added
        latency, at a cost of a few dozen wake-ups per second when idle.
        """
        frame = self.read()
        if frame is not None or timeout <= 0:
            return frame
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self.read()
            time.sleep(min(self._poll, remaining))
            frame = self.read()
            if frame is not None:
                return frame
