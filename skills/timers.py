"""Countdown timers that announce themselves when they end.

One scheduler thread (started with the first timer, named vigil-skill-timers) sleeps until the
next timer is due and calls `announce(text)` from that thread: "Your 5 minute timer is done."
`announce` must not block for long (hand the text to a queue); an exception from it is logged
and the other timers carry on. The number of timers is bounded (max_timers). Timers live in
the process that owns the SkillRunner: a worker restart loses them.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from skills.text import duration_label

log = logging.getLogger("vigil.skills.timers")


class TimerLimit(Exception):
    """Too many timers, or a duration out of range; the message is speakable."""


@dataclass(frozen=True)
class Timer:
    id: int
    seconds: float
    due: float  # monotonic
    label: str = ""

    @property
    def name(self) -> str:
        """'5 minute timer', '10 second timer for the eggs'."""
        base = f"{duration_label(self.seconds)} timer"
        return f"{base} for the {self.label}" if self.label else base


class TimerManager:
    def __init__(self, announce: Callable[[str], None] | None, *, max_timers: int = 5,
                 max_seconds: float = 24 * 3600, clock: Callable[[], float] = time.monotonic) -> None:
        self._announce = announce
        self.max_timers = max_timers
        self.max_seconds = max_seconds
        self._clock = clock
        self._cond = threading.Condition()
        self._timers: dict[int, Timer] = {}
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._closed = False
        self.fired = 0

    def set(self, seconds: float, label: str = "") -> Timer:
        if not 1 <= seconds <= self.max_seconds:
            raise TimerLimit(f"I can set timers from 1 second up to {int(self.max_seconds // 3600)} hours.")
        with self._cond:
            if self._closed:
                raise TimerLimit("Timers aren't available right now.")
            if len(self._timers) >= self.max_timers:
                raise TimerLimit(f"You already have {len(self._timers)} timers running. Cancel one first.")
            timer = Timer(next(self._ids), float(seconds), self._clock() + seconds, label)
            self._timers[timer.id] = timer
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="vigil-skill-timers", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return timer

    def active(self) -> list[Timer]:
        """Running timers, soonest first."""
        with self._cond:
            return sorted(self._timers.values(), key=lambda t: t.due)

    def remaining(self, timer: Timer) -> float:
        return max(0.0, timer.due - self._clock())

    def cancel(self, timer_id: int) -> Timer | None:
        with self._cond:
            timer = self._timers.pop(timer_id, None)
            self._cond.notify_all()
            return timer

    def cancel_all(self) -> list[Timer]:
        with self._cond:
            gone = sorted(self._timers.values(), key=lambda t: t.due)
            self._timers.clear()
            self._cond.notify_all()
            return gone

    def close(self, timeout: float = 0.5) -> None:
        """Cancel every timer and stop the scheduler thread (it never runs skill code)."""
        with self._cond:
            self._closed = True
            self._timers.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = self._clock()
                    due = [t for t in self._timers.values() if t.due <= now]
                    if due:
                        break
                    nxt = min((t.due for t in self._timers.values()), default=None)
                    self._cond.wait(None if nxt is None else max(0.0, nxt - now))
                if self._closed:
                    return
                for timer in due:
                    del self._timers[timer.id]
            for timer in sorted(due, key=lambda t: t.due):
                if self._closed:
                    return
                self.fired += 1
                text = f"Your {timer.name} is done."
                log.info("timer %d done: %s", timer.id, text)
                if self._announce is None:
                    continue
                try:
                    self._announce(text)
                except Exception:  # the announcer is the lead's code: never let it kill the timers
                    log.exception("announce(%r) failed", text)
