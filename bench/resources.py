"""CPU and memory of a running pipeline, per worker, sampled with psutil.

Workers are found by their process titles (`vigil-<name>`), so a restarted worker keeps
its name; the supervisor itself is reported as "supervisor". CPU is in percent of one core.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil


def _worker_name(proc: psutil.Process, root_pid: int) -> str | None:
    if proc.pid == root_pid:
        return "supervisor"
    try:
        title = proc.cmdline()
    except psutil.Error:
        return None
    if title and title[0].startswith("vigil-"):
        return title[0].split()[0][len("vigil-"):]
    return None


class ResourceSampler:
    """Samples every `interval` seconds in a background thread until stop()."""

    def __init__(self, root_pid: int, interval: float = 1.0) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.samples: list[dict] = []
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._t0 = time.monotonic()

    def _current(self) -> dict[str, psutil.Process]:
        try:
            root = psutil.Process(self.root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return {}
        found = {}
        for proc in procs:
            known = self._procs.setdefault(proc.pid, proc)  # keep the object: cpu_percent needs its history
            name = _worker_name(known, self.root_pid)
            if name:
                found[name] = known
        return found

    def sample(self) -> dict | None:
        cpu, rss = {}, {}
        for name, proc in self._current().items():
            try:
                cpu[name] = round(proc.cpu_percent(None), 2)
                rss[name] = round(proc.memory_info().rss / 2**20, 2)
            except psutil.Error:
                continue
        if not rss:
            return None
        return {"t": round(time.monotonic() - self._t0, 2), "cpu": cpu, "rss_mb": rss}

    def _run(self) -> None:
        self.sample()  # primes cpu_percent
        while not self._stop.wait(self.interval):
            row = self.sample()
            if row is not None:
                self.samples.append(row)

    def start(self) -> ResourceSampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join(5)
        return self.samples


def summarize(samples: list[dict], skip_s: float = 0.0) -> dict:
    """Mean CPU per worker and in total, median RSS per worker and their sum, and each worker's RSS slope (MB/h)

    over the second half of the samples (the first half includes the warm-up growth)."""
    kept = [s for s in samples if s["t"] >= skip_s]
    workers = sorted({name for s in kept for name in s["rss_mb"]})
    cpu = {w: round(float(np.mean([s["cpu"].get(w, 0.0) for s in kept])), 2) for w in workers} if kept else {}
    rss = {w: round(float(np.median([s["rss_mb"][w] for s in kept if w in s["rss_mb"]])), 2) for w in workers}
    slopes = {}
    for w in workers:
        points = [(s["t"], s["rss_mb"][w]) for s in kept if w in s["rss_mb"]]
        points = points[len(points) // 2:]  # the first half is warm-up (arenas, caches filling), not drift
        if len(points) >= 3 and points[-1][0] > points[0][0]:
            t, mb = np.array(points).T
            slopes[w] = round(float(np.polyfit(t / 3600.0, mb, 1)[0]), 2)
    return {
        "cpu_percent_total": round(sum(cpu.values()), 2),
        "cpu_percent_by_worker": cpu,
        "rss_mb_by_worker": rss,
        "rss_mb_total": round(sum(rss.values()), 2),
        "rss_slope_mb_per_h": slopes,
        "seconds": round(kept[-1]["t"] - kept[0]["t"], 1) if len(kept) > 1 else 0.0,
    }
