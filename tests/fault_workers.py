"""Fault-injecting worker doubles for supervisor tests (named as such: they exist only to fail).

Each is a real worker module run in a real spawned process by the real supervisor.
"""

from __future__ import annotations

import os
import time

from workers.runtime import WorkerContext


def run(ctx: WorkerContext) -> None:
    """Behaviour chosen by ctx.extra["fault"]: crash at once, crash after N beats, or hang."""
    fault = ctx.extra.get("fault", "healthy")
    if fault == "crash":
        os._exit(3)
    if fault == "hang_after_start":
        ctx.beat()
        while True:  # stuck in a loop that never beats again (a deadlock, a C call that never returns)
            time.sleep(1)
    if fault == "leak":
        leak(ctx)
        return
    while not ctx.should_stop():
        ctx.beat()
        time.sleep(0.05)


def leak(ctx: WorkerContext) -> None:
    """LeakyWorker: beats like a healthy worker but keeps 10 MB more every 0.1 s (touched pages, so RSS grows),
    up to `leak_cap_mb`; a SIGTERM stops it cleanly, as the supervisor's recycle expects."""
    import numpy as np

    hoard = []
    cap_mb = int(ctx.extra.get("leak_cap_mb", 600))
    while not ctx.should_stop():
        ctx.beat()
        if len(hoard) * 10 < cap_mb:
            hoard.append(np.ones(10 * 2**20, dtype=np.uint8))
        time.sleep(0.1)
