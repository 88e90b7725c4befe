"""BackpressureController: the one place where ring sizes and policies live.

Every buffer between Vigil's processes is a fixed-size shared-memory ring
declared here, so "how much memory can the pipeline hold back, and what
happens when a consumer is slow" has a single, reviewable answer.  Validation
refuses anything unbounded (non-positive or absurd sizes, a total above the
budget) at start-up rather than letting memory grow over months of uptime.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from core.audio import SAMPLE_RATE
from shm.audio_ring import AudioRing
from shm.message_ring import MessageRing, Policy
from shm.segments import segment_name, unlink_quietly

__all__ = ["BackpressureController", "RingSpec", "Policy"]

Ring = AudioRing | MessageRing

MAX_SLOTS = 1 << 20  # per ring; far above any sane queue, still bounded
MAX_SLOT_SIZE = 1 << 24  # bytes per message slot / samples per audio frame
MAX_BLOCK_TIMEOUT_S = 60.0
AUDIO_MAX_READERS = 8
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True)
class RingSpec:
    """Declaration of one ring.

    For ``kind="audio"``: ``slot_size`` is samples per frame and ``slots`` the
    capacity in frames; ``policy``/``block_timeout_s`` do not apply, because
    the audio writer never blocks and lagging readers always lose the oldest
    audio (docs/architecture.md, "Rings").
    """

    name: str
    kind: Literal["audio", "message"]
    slots: int
    slot_size: int
    policy: Policy = Policy.BLOCK
    block_timeout_s: float = 1.0

    def segment_bytes(self) -> int:
        if self.kind == "audio":
            return AudioRing.segment_size(self.slot_size, self.slots, AUDIO_MAX_READERS)
        return MessageRing.segment_size(self.slots, self.slot_size)


def _validate(spec: RingSpec) -> None:
    where = f"ring {spec.name!r}"
    if not isinstance(spec.name, str) or not _NAME_RE.match(spec.name):
        raise ValueError(f"{where}: name must be 1-64 characters of [A-Za-z0-9_.-]")
    if spec.kind not in ("audio", "message"):
        raise ValueError(f"{where}: kind must be 'audio' or 'message', got {spec.kind!r}")
    for field, value in (("slots", spec.slots), ("slot_size", spec.slot_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: {field} must be an int, got {value!r}")
    low = 2 if spec.kind == "audio" else 1
    if not low <= spec.slots <= MAX_SLOTS:
        raise ValueError(f"{where}: slots={spec.slots} outside [{low}, {MAX_SLOTS}]; rings must be bounded")
    if not 1 <= spec.slot_size <= MAX_SLOT_SIZE:
        raise ValueError(f"{where}: slot_size={spec.slot_size} outside [1, {MAX_SLOT_SIZE}]")
    if not isinstance(spec.policy, Policy):
        raise ValueError(f"{where}: policy must be a Policy, got {spec.policy!r}")
    t = spec.block_timeout_s
    if not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 < t <= MAX_BLOCK_TIMEOUT_S:
        raise ValueError(
            f"{where}: block_timeout_s={t!r} must be in (0, {MAX_BLOCK_TIMEOUT_S}]; waiting forever is unbounded"
        )


class BackpressureController:
    """Validates ring specs, creates their segments, and reports their health."""

    def __init__(self, owner_pid: int, specs: list[RingSpec], max_total_bytes: int = 64 * 2**20) -> None:
        if not isinstance(owner_pid, int) or owner_pid <= 0:
            raise ValueError(f"owner_pid must be a positive int, got {owner_pid!r}")
        if not isinstance(max_total_bytes, int) or max_total_bytes <= 0:
            raise ValueError(f"max_total_bytes must be a positive int, got {max_total_bytes!r}")
        seen: set[str] = set()
        for spec in specs:
            _validate(spec)
            if spec.name in seen:
                raise ValueError(f"ring {spec.name!r} declared twice; ring names must be unique")
            seen.add(spec.name)
        total = sum(spec.segment_bytes() for spec in specs)
        if total > max_total_bytes:
            sizes = ", ".join(f"{s.name}={s.segment_bytes()}" for s in specs)
            raise ValueError(
                f"rings need {total} bytes of shared memory, over the {max_total_bytes}-byte budget "
                f"({sizes}); refusing unbounded growth: shrink slots/slot_size or raise the budget"
            )
        self.owner_pid = owner_pid
        self.specs: dict[str, RingSpec] = {s.name: s for s in specs}
        self.total_bytes = total
        self.max_total_bytes = max_total_bytes
        self._rings: dict[str, Ring] = {}

    def segment_name(self, name: str) -> str:
        """Segment name of ring ``name``; workers attach with this."""
        if name not in self.specs:
            raise KeyError(f"no ring named {name!r}")
        return segment_name(self.owner_pid, name)

    def create_all(self) -> dict[str, Ring]:
        """Create every declared segment; all or nothing."""
        try:
            for spec in self.specs.values():
                if spec.name in self._rings:
                    continue
                seg = self.segment_name(spec.name)
                if spec.kind == "audio":
                    ring: Ring = AudioRing.create(
                        seg, sample_rate=SAMPLE_RATE, frame_samples=spec.slot_size, capacity=spec.slots,
                        max_readers=AUDIO_MAX_READERS
                    )
                else:
                    ring = MessageRing.create(
                        seg,
                        slots=spec.slots,
                        slot_size=spec.slot_size,
                        policy=spec.policy,
                        block_timeout_s=spec.block_timeout_s,
                    )
                self._rings[spec.name] = ring
        except BaseException:
            self.unlink_all()
            raise
        return dict(self._rings)

    @property
    def rings(self) -> dict[str, Ring]:
        return dict(self._rings)

    def stats(self) -> dict[str, dict]:
        """Per ring: drops, lost, corrupt, high_water (+ kind-specific detail).

        Audio rings: ``lost`` sums the frames lost by slotted readers,
        ``high_water`` is the largest lag any reader had when it read a frame
        (how close it came to losing audio), and ``reader_lags`` the lags now.
        """
        out: dict[str, dict] = {}
        for name, ring in self._rings.items():
            if isinstance(ring, AudioRing):
                readers = ring.reader_stats()
                out[name] = {
                    "kind": "audio",
                    "drops": 0,
                    "lost": ring.total_lost(),
                    "corrupt": 0,
                    "high_water": max((r["max_lag"] for r in readers.values()), default=0),
                    "capacity": ring.capacity,
                    "write_seq": ring.write_seq,
                    "reader_lags": ring.reader_lags(),
                    "readers": readers,
                }
            else:
                s = ring.stats()
                out[name] = {
                    "kind": "message",
                    "drops": s.drops,
                    "lost": s.lost,
                    "corrupt": s.corrupt,
                    "high_water": s.high_water,
                    "capacity": s.capacity,
                    "puts": s.puts,
                    "occupancy": s.occupancy,
                    "policy": ring.policy.value,
                }
        return out

    def unlink_all(self) -> None:
        """Close and remove every declared segment; idempotent."""
        for ring in self._rings.values():
            ring.close()
        self._rings.clear()
        for name in self.specs:
            unlink_quietly(segment_name(self.owner_pid, name))

    def __enter__(self) -> BackpressureController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlink_all()
