"""Heartbeats through shared memory: one row per worker, written by the worker's main loop.

A beat is a single aligned 8-byte store, so no lock is needed and a worker killed at any
moment cannot leave the table locked. The supervisor reads the age of each row; a worker
stuck in a C call or stopped by SIGSTOP stops beating and is restarted as hung.
"""

from __future__ import annotations

import time

import numpy as np

from shm.segments import attach_segment, create_segment

_COLUMNS = 3  # beat_ns, pid, beats


class HeartbeatTable:
    def __init__(self, shm, rows: int, owner: bool) -> None:
        self._shm = shm
        self._owner = owner
        self.rows = rows
        self._table = np.ndarray((rows, _COLUMNS), dtype=np.int64, buffer=shm.buf)

    @classmethod
    def create(cls, name: str, rows: int) -> HeartbeatTable:
        shm = create_segment(name, rows * _COLUMNS * 8)
        table = cls(shm, rows, owner=True)
        table._table[:] = 0
        return table

    @classmethod
    def attach(cls, name: str, rows: int) -> HeartbeatTable:
        return cls(attach_segment(name), rows, owner=False)

    def beat(self, row: int, pid: int) -> None:
        self._table[row, 1] = pid
        self._table[row, 2] += 1
        self._table[row, 0] = time.monotonic_ns()

    def clear(self, row: int) -> None:
        """Forget a row before (re)starting its worker, so an old beat is not taken as alive."""
        self._table[row, :] = 0

    def age_s(self, row: int) -> float | None:
        """Seconds since the last beat, or None if the worker has not beaten since its start."""
        last = int(self._table[row, 0])
        return None if last == 0 else (time.monotonic_ns() - last) / 1e9

    def beats(self, row: int) -> int:
        return int(self._table[row, 2])

    def close(self) -> None:
        del self._table
        self._shm.close()
        if self._owner:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass
