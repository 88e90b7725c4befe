"""MessageRing: a bounded single-producer single-consumer ring of small messages.

Every queue between Vigil's processes is one of these, so a slow or dead peer
can only ever cost a bounded amount of memory, and what happens when the ring
is full is an explicit per-ring ``Policy`` rather than an accident.

Slot layout: ``seq_begin u64, length u32, crc32 u32, payload[slot_size], seq_end
u64``.  The producer writes seq_begin, length, crc, payload, seq_end and only
then publishes ``write_idx``; the consumer checks seq_end, copies, then checks
seq_begin (a seqlock), and verifies the crc.  A producer SIGKILLed mid-write
therefore never publishes its torn slot, and its successor, which continues
from ``write_idx``, overwrites it.  Anything that still fails the checks
(memory scribbled on, a bug elsewhere) is skipped and counted as corrupt: a bad
slot costs one message, never the ring.

Counters live in the header so the parent can export them without asking
either side.  Each counter has exactly one writing side (puts/drops/high_water:
producer; lost/corrupt/read_idx: consumer), so plain stores suffice.  Producer
and consumer fields sit on different cache lines.

Memory ordering: relies on x86-64 TSO and aligned 8-byte numpy stores, like
AudioRing (see shm/audio_ring.py).
"""

from __future__ import annotations

import enum
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shm.segments import MappedSegment, create_segment, unlink_quietly

__all__ = ["MessageRing", "MessageTooLarge", "Policy", "RingStats"]

log = logging.getLogger("vigil.shm")

MAGIC = int.from_bytes(b"VIGILMSG", "little")
VERSION = 1
EMPTY = np.uint64(2**64 - 1)
HEADER_BYTES = 192
# line 0: geometry
H_MAGIC, H_VERSION, H_SLOTS, H_SLOT_SIZE, H_POLICY, H_BLOCK_TIMEOUT_NS = range(6)
# line 1: producer-owned
H_WRITE_IDX, H_PUTS, H_DROPS, H_HIGH_WATER = range(8, 12)
# line 2: consumer-owned
H_READ_IDX, H_LOST, H_CORRUPT = range(16, 19)
LOG_INTERVAL_S = 1.0


class Policy(enum.Enum):
    """What put() does when the ring is full."""

    BLOCK = "block"  # wait up to block_timeout_s, then drop the new message
    DROP_OLDEST = "drop_oldest"  # overwrite the oldest unread message
    DROP_NEWEST = "drop_newest"  # refuse the new message at once


_POLICY_CODE = {Policy.BLOCK: 0, Policy.DROP_OLDEST: 1, Policy.DROP_NEWEST: 2}
_CODE_POLICY = {v: k for k, v in _POLICY_CODE.items()}


class MessageTooLarge(ValueError):
    """The payload does not fit a slot; the sender's bug, so the sender sees it."""


@dataclass(frozen=True, slots=True)
class RingStats:
    name: str
    puts: int
    drops: int
    lost: int
    corrupt: int
    high_water: int
    occupancy: int
    capacity: int


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _stride(slot_size: int) -> int:
    return _round_up(16 + _round_up(slot_size, 8) + 8, 64)


_NOTHING = object()
# An empty payload's crc is stored as this instead of crc32(b"") == 0, so that a slot header
# zeroed by a stray write (length 0, crc 0) is corrupt rather than a valid empty message.
_EMPTY_CRC = 0xFFFFFFFF


def _crc(payload: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(payload) if len(payload) else _EMPTY_CRC


class MessageRing(MappedSegment):
    """See module doc.  Create on the owner side, attach in the workers."""

    _views = ("_buf", "_hdr", "_seq_begin", "_length", "_crc", "_seq_end")

    #: Sleep between checks while get() waits.  Each wake-up costs ~35 us of
    #: CPU here (mostly the sleep syscall), so 2 ms means ~1.8 % of a core per
    #: idle waiting consumer; the first ``fast_poll_window_s`` of a wait polls
    #: at ``fast_poll_interval`` because a reply is most likely to come then.
    poll_interval: float = 0.002
    fast_poll_interval: float = 0.001
    fast_poll_window_s: float = 0.02
    #: Sleep between checks while a BLOCK put() waits for space.
    block_poll_interval: float = 0.001

    def __init__(self, shm, name: str, decoder: Callable[[bytes], Any] | None) -> None:
        words = [int(x) for x in np.frombuffer(bytes(shm.buf[:HEADER_BYTES]), dtype=np.uint64)]
        if words[H_MAGIC] != MAGIC or words[H_VERSION] != VERSION:
            raise ValueError(f"segment {name!r} is not a version-{VERSION} MessageRing")
        slots, slot_size = words[H_SLOTS], words[H_SLOT_SIZE]
        stride = _stride(slot_size)
        if HEADER_BYTES + slots * stride > shm.size or words[H_POLICY] not in _CODE_POLICY:
            raise ValueError(f"segment {name!r} has an inconsistent MessageRing header")
        self._shm = shm
        self._name = name
        self._decoder = decoder
        self._slots_n = slots
        self._slot_size = slot_size
        self._stride = stride
        self._policy = _CODE_POLICY[words[H_POLICY]]
        self._block_timeout_s = words[H_BLOCK_TIMEOUT_NS] / 1e9
        buf = shm.buf
        self._buf = buf
        self._hdr = np.ndarray((HEADER_BYTES // 8,), np.uint64, buf)
        base = HEADER_BYTES
        self._seq_begin = np.ndarray((slots,), np.uint64, buf, base, (stride,))
        self._length = np.ndarray((slots,), np.uint32, buf, base + 8, (stride,))
        self._crc = np.ndarray((slots,), np.uint32, buf, base + 12, (stride,))
        self._seq_end = np.ndarray((slots,), np.uint64, buf, base + 16 + _round_up(slot_size, 8), (stride,))
        self._log_last = -LOG_INTERVAL_S
        self._log_suppressed = 0

    # -- construction -------------------------------------------------------

    @staticmethod
    def segment_size(slots: int = 64, slot_size: int = 4096) -> int:
        """Bytes a ring of this geometry occupies (for budget checks)."""
        return HEADER_BYTES + slots * _stride(slot_size)

    @classmethod
    def create(
        cls,
        name: str,
        slots: int = 64,
        slot_size: int = 4096,
        policy: Policy = Policy.BLOCK,
        block_timeout_s: float = 1.0,
        *,
        decoder: Callable[[bytes], Any] | None = None,
    ) -> MessageRing:
        """Create the segment and initialise the header (owner side)."""
        if slots < 1:
            raise ValueError(f"slots must be positive, got {slots}")
        if not 1 <= slot_size < 2**32:
            raise ValueError(f"slot_size must be in [1, 2**32), got {slot_size}")
        if not isinstance(policy, Policy):
            raise ValueError(f"policy must be a Policy, got {policy!r}")
        if not 0 <= block_timeout_s <= 3600:
            raise ValueError(f"block_timeout_s must be in [0, 3600], got {block_timeout_s}")
        shm = create_segment(name, cls.segment_size(slots, slot_size))
        try:
            assert shm.buf is not None  # a fresh mapping (only close() clears it)
            _initialise(shm.buf, slots, slot_size, policy, block_timeout_s)
            return cls(shm, name, decoder)
        except BaseException:
            shm.close()
            unlink_quietly(name)
            raise

    @classmethod
    def attach(cls, name: str, decoder: Callable[[bytes], Any] | None = None) -> MessageRing:
        """Map an existing ring (worker side); never registers for cleanup."""
        return cls._attach(name, decoder=decoder)

    # -- properties ---------------------------------------------------------

    @property
    def slots(self) -> int:
        return self._slots_n

    @property
    def slot_size(self) -> int:
        return self._slot_size

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def block_timeout_s(self) -> float:
        return self._block_timeout_s

    def slot_offset(self, index: int) -> int:
        """Byte offset of the slot that message ``index`` occupies (tests, tools)."""
        return HEADER_BYTES + (index % self._slots_n) * self._stride

    # -- producer -----------------------------------------------------------

    def put(self, payload: bytes | bytearray | memoryview) -> bool:
        """Write one message; False when the policy dropped it (counted)."""
        n = len(payload)
        if n > self._slot_size:
            raise MessageTooLarge(f"message of {n} bytes exceeds slot size {self._slot_size} of ring {self._name}")
        hdr = self._hdr
        slots = self._slots_n
        w = int(hdr[H_WRITE_IDX])
        r = int(hdr[H_READ_IDX])
        if w - r >= slots:
            if self._policy is Policy.DROP_NEWEST:
                hdr[H_DROPS] = int(hdr[H_DROPS]) + 1
                return False
            if self._policy is Policy.BLOCK:
                freed = self._wait_for_space(w)
                if freed is None:
                    hdr[H_DROPS] = int(hdr[H_DROPS]) + 1
                    return False
                r = freed
            else:  # DROP_OLDEST: the oldest unread message is about to go
                hdr[H_DROPS] = int(hdr[H_DROPS]) + 1
        i = w % slots
        off = HEADER_BYTES + i * self._stride + 16
        self._seq_begin[i] = w
        self._length[i] = n
        self._crc[i] = _crc(payload)
        self._buf[off : off + n] = payload
        self._seq_end[i] = w
        hdr[H_WRITE_IDX] = w + 1
        hdr[H_PUTS] = int(hdr[H_PUTS]) + 1
        occupancy = min(w + 1 - r, slots)
        if occupancy > int(hdr[H_HIGH_WATER]):
            hdr[H_HIGH_WATER] = occupancy
        return True

    def _wait_for_space(self, w: int) -> int | None:
        """Sleep-poll until the consumer frees a slot; None on timeout."""
        deadline = time.monotonic() + self._block_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(self.block_poll_interval, remaining))
            r = int(self._hdr[H_READ_IDX])
            if w - r < self._slots_n:
                return r

    # -- consumer -----------------------------------------------------------

    def get(self, timeout: float = 0.0) -> Any:
        """Next message (decoded if a decoder was given) or None after ``timeout``.

        Never raises for bad data: damaged slots and decoder failures are
        skipped and counted.  A decoder should not return None (it would read
        as "nothing arrived").
        """
        item = self._try_get()
        if item is not _NOTHING or timeout <= 0:
            return None if item is _NOTHING else item
        start = time.monotonic()
        deadline = start + timeout
        fast_until = start + self.fast_poll_window_s
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return None
            interval = self.fast_poll_interval if now < fast_until else self.poll_interval
            time.sleep(min(interval, remaining))
            item = self._try_get()
            if item is not _NOTHING:
                return item

    def _try_get(self) -> Any:
        hdr = self._hdr
        slots = self._slots_n
        while True:
            w = int(hdr[H_WRITE_IDX])
            r = int(hdr[H_READ_IDX])
            if r >= w:
                if r > w:  # header scribbled on: follow the producer, never wedge
                    self._corrupt(r, f"read_idx {r} ahead of write_idx {w}")
                    hdr[H_READ_IDX] = w
                return _NOTHING
            if w - r > slots:  # overrun under DROP_OLDEST: skip what was overwritten
                hdr[H_LOST] = int(hdr[H_LOST]) + (w - slots - r)
                r = w - slots
                hdr[H_READ_IDX] = r
            i = r % slots
            if int(self._seq_end[i]) != r:
                self._bad_slot(r, "seq_end mismatch")
                continue
            n = int(self._length[i])
            crc = int(self._crc[i])
            if n > self._slot_size:
                self._bad_slot(r, f"length {n} > slot size {self._slot_size}")
                continue
            off = HEADER_BYTES + i * self._stride + 16
            data = bytes(self._buf[off : off + n])
            if int(self._seq_begin[i]) != r:
                self._bad_slot(r, "seq_begin mismatch")
                continue
            if _crc(data) != crc:
                self._bad_slot(r, "crc mismatch")
                continue
            hdr[H_READ_IDX] = r + 1  # the slot is free as soon as it is copied
            if self._decoder is None:
                return data
            try:
                return self._decoder(data)
            except Exception as exc:  # one bad message must not stop the consumer
                hdr[H_CORRUPT] = int(hdr[H_CORRUPT]) + 1
                self._warn(f"undecodable message {r}: {type(exc).__name__}: {exc}")

    def _bad_slot(self, r: int, why: str) -> None:
        """Skip slot ``r``: lost if the producer lapped us during the copy, else corrupt.

        The producer only touches slot ``r`` while writing message r+slots,
        which it starts only once write_idx >= r+slots; so a smaller write_idx
        now proves the damage was not a legitimate overwrite.
        """
        hdr = self._hdr
        if int(hdr[H_WRITE_IDX]) >= r + self._slots_n:
            hdr[H_LOST] = int(hdr[H_LOST]) + 1
        else:
            self._corrupt(r, why)
        if int(hdr[H_READ_IDX]) == r:
            hdr[H_READ_IDX] = r + 1

    def _corrupt(self, r: int, why: str) -> None:
        self._hdr[H_CORRUPT] = int(self._hdr[H_CORRUPT]) + 1
        self._warn(f"corrupt slot for message {r}: {why}")

    def _warn(self, what: str) -> None:
        """Log at most one line per second per ring; count what was held back."""
        now = time.monotonic()
        if now - self._log_last < LOG_INTERVAL_S:
            self._log_suppressed += 1
            return
        extra = f" ({self._log_suppressed} more since last report)" if self._log_suppressed else ""
        log.warning("ring %s: %s, skipped%s", self._name, what, extra)
        self._log_last = now
        self._log_suppressed = 0

    # -- metrics ------------------------------------------------------------

    def stats(self) -> RingStats:
        """Snapshot of the shared counters; readable from any attached process."""
        h = [int(x) for x in self._hdr]
        occupancy = max(0, min(h[H_WRITE_IDX] - h[H_READ_IDX], self._slots_n))
        return RingStats(
            name=self._name,
            puts=h[H_PUTS],
            drops=h[H_DROPS],
            lost=h[H_LOST],
            corrupt=h[H_CORRUPT],
            high_water=h[H_HIGH_WATER],
            occupancy=occupancy,
            capacity=self._slots_n,
        )


def _initialise(buf: memoryview, slots: int, slot_size: int, policy: Policy, block_timeout_s: float) -> None:
    """Write a fresh header; magic last so an attach never sees half of it."""
    hdr = np.ndarray((HEADER_BYTES // 8,), np.uint64, buf)
    hdr[H_VERSION] = VERSION
    hdr[H_SLOTS] = slots
    hdr[H_SLOT_SIZE] = slot_size
    hdr[H_POLICY] = _POLICY_CODE[policy]
    hdr[H_BLOCK_TIMEOUT_NS] = int(block_timeout_s * 1e9)
    stride = _stride(slot_size)
    for offset in (HEADER_BYTES, HEADER_BYTES + 16 + _round_up(slot_size, 8)):
        np.ndarray((slots,), np.uint64, buf, offset, (stride,))[:] = EMPTY
    hdr[H_MAGIC] = MAGIC
