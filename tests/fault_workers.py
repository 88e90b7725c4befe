"""Fault-injecting worker doubles for supervisor tests (named as such: they exist only to fail).

Each is a real worker function run in a real spawned process by the real supervisor; a spec
names one as ``"tests.fault_workers:crash"``.
"""

from __future__ import annotations

import os
import time

from workers.base import WorkerContext

LEAK_CAP_MB = 600


def healthy(ctx: WorkerContext) -> None:
    while not ctx.should_stop():
        ctx.beat()
        time.sleep(0.05)


def crash(ctx: WorkerContext) -> None:
    os._exit(3)


def hang_after_start(ctx: WorkerContext) -> None:
    ctx.beat()
    while True:  # stuck in a loop that never beats again (a deadlock, a C call that never returns)
        time.sleep(1)


def leak(ctx: WorkerContext) -> None:
    """LeakyWorker: beats like a healthy worker but keeps 10 MB more every 0.1 s (touched pages, so RSS grows),
    up to LEAK_CAP_MB; a SIGTERM stops it cleanly, as the supervisor's recycle expects."""
    import numpy as np

    hoard = []
    while not ctx.should_stop():
        ctx.beat()
        if len(hoard) * 10 < LEAK_CAP_MB:
            hoard.append(np.ones(10 * 2**20, dtype=np.uint8))
        time.sleep(0.1)
