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
    while not ctx.should_stop():
        ctx.beat()
        time.sleep(0.05)
