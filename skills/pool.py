"""A bounded thread pool that can abandon hung calls without ever making a caller wait.

Python cannot kill a thread, so a skill stuck in a C call or an endless loop keeps its thread.
concurrent.futures would queue new work behind it; this pool instead:

* runs at most `size` calls at once (slots); a call that finds no idle worker and no free slot
  fails at once ("busy") — nothing ever queues;
* when a call passes its deadline the caller stops waiting and *gives up* on it: the call is
  marked stuck, and its thread is abandoned — it leaves its slot (a fresh worker may take the
  slot) and exits whenever the call finally returns. At most `max_abandoned` threads may be
  abandoned at once; beyond that a stuck call keeps its slot, so the total number of threads
  never exceeds size + max_abandoned;
* a skill with `max_stuck_per_skill` calls still stuck is refused at once ("unavailable"),
  so one broken skill cannot eat the pool by being asked again and again, while the healthy
  skills keep their capacity. It becomes available again when its stuck call returns.

Workers are daemon threads named vigil-skill-N: an abandoned one never delays interpreter exit.
Idle workers exit after `idle_s`.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any


class Job:
    """One call: the caller waits on `done`, then reads `result` or `error`."""

    __slots__ = ("skill", "fn", "args", "done", "result", "error", "finished", "stuck", "worker")

    def __init__(self, skill: str, fn: Callable[[Any], Any], args: Any) -> None:
        self.skill = skill
        self.fn = fn
        self.args = args
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False  # set under the pool lock, before `done`
        self.stuck = False
        self.worker: _Worker | None = None


class _Worker:
    __slots__ = ("inbox", "abandoned", "thread")

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.abandoned = False
        self.thread: threading.Thread | None = None


class BoundedPool:
    _names = itertools.count(1)

    def __init__(self, size: int, *, max_abandoned: int, max_stuck_per_skill: int = 1,
                 idle_s: float = 30.0) -> None:
        if size < 1:
            raise ValueError("pool size must be >= 1")
        self.size = size
        self.max_abandoned = max(0, max_abandoned)
        self.max_stuck_per_skill = max(1, max_stuck_per_skill)
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._active = 0  # workers holding a slot: idle or running a call nobody gave up on
        self._abandoned = 0  # threads given up on that have not returned yet
        self._stuck: dict[str, int] = {}
        self._closed = False
        self.abandoned_total = 0

    # -- caller side ---------------------------------------------------------------------
    def submit(self, skill: str, fn: Callable[[Any], Any], args: Any) -> tuple[Job | None, str]:
        """Start a call now, or say why not: (job, "") | (None, "busy" | "unavailable" | "closed")."""
        job = Job(skill, fn, args)
        with self._lock:
            if self._closed:
                return None, "closed"
            if self._stuck.get(skill, 0) >= self.max_stuck_per_skill:
                return None, "unavailable"
            if self._idle:
                worker = self._idle.pop()
                job.worker = worker
                worker.inbox.put(job)
                return job, ""
            if self._active >= self.size:
                return None, "busy"
            self._active += 1
            worker = _Worker()
            job.worker = worker
            worker.thread = threading.Thread(target=self._work, args=(worker, job), daemon=True,
                                             name=f"vigil-skill-{next(self._names)}")
        try:
            worker.thread.start()
        except RuntimeError:  # can't start new thread: the OS limit, not ours
            with self._lock:
                self._active -= 1
            return None, "busy"
        return job, ""

    def give_up(self, job: Job) -> bool:
        """The caller's deadline passed: mark the call stuck and abandon its thread if allowed.

        Returns False if the call had finished after all (its result is valid)."""
        with self._lock:
            if job.finished:
                return False
            job.stuck = True
            self._stuck[job.skill] = self._stuck.get(job.skill, 0) + 1
            worker = job.worker
            if worker is not None and not worker.abandoned and self._abandoned < self.max_abandoned:
                worker.abandoned = True
                self._abandoned += 1
                self.abandoned_total += 1
                self._active -= 1  # its slot is free for a fresh worker
            return True

    def close(self) -> None:
        """Stop idle workers; never waits for running or stuck calls."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._active -= len(idle)
        for worker in idle:
            worker.inbox.put(None)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"size": self.size, "slots_used": self._active - len(self._idle), "idle": len(self._idle),
                    "abandoned": self._abandoned, "abandoned_total": self.abandoned_total,
                    "threads": self._active + self._abandoned,
                    "stuck": {k: v for k, v in self._stuck.items() if v}}

    def stuck_skills(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in self._stuck.items() if v}

    # -- worker side ---------------------------------------------------------------------
    def _work(self, worker: _Worker, job: Job | None) -> None:
        while job is not None:
            try:
                job.result = job.fn(job.args)
            except BaseException as exc:  # a skill's failure is reported, never raised here
                job.error = exc
            with self._lock:
                job.finished = True
                if job.stuck:
                    self._stuck[job.skill] -= 1
                if worker.abandoned:
                    self._abandoned -= 1
                    keep = False
                elif self._closed:
                    self._active -= 1
                    keep = False
                else:
                    self._idle.append(worker)
                    keep = True
            job.done.set()
            if not keep:
                return
            try:
                job = worker.inbox.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    if worker in self._idle:
                        self._idle.remove(worker)
                        self._active -= 1
                        return
                job = worker.inbox.get()  # handed a job just as the idle time ran out
