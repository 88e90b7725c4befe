"""The real LLM worker under the real supervisor: a model llama.cpp cannot load is reported once as "cannot
start" and left down; an Ollama server that is not there is not a failure (the worker runs and answers each
request with the friendly fallback until the server comes)."""

from __future__ import annotations

import dataclasses
import os
import socket
import time

from core.config import load_config
from pipeline.supervisor import PipelineSupervisor
from shm.heartbeat import HeartbeatTable
from workers.base import EXIT_CANNOT_START, WorkerSpec


def supervise(environ: dict[str, str]) -> tuple[PipelineSupervisor, HeartbeatTable, list[dict]]:
    name = f"vigil-{os.getpid()}-test-llm-heartbeat"
    table = HeartbeatTable.create(name, 1)
    config = load_config(None, environ=environ)
    config = dataclasses.replace(config, supervisor=dataclasses.replace(config.supervisor, backoff_initial_s=0.1))
    spec = WorkerSpec("llm", "workers.llm:LlmWorker", row=0, heartbeat=name, heartbeat_rows=1)
    events: list[dict] = []
    sup = PipelineSupervisor(config, [spec], table, on_event=lambda e: events.append(e.to_dict()))
    sup.start()
    return sup, table, events


def settle(sup: PipelineSupervisor, seconds: float) -> None:
    """Poll for a while: with a 0.1 s backoff, a worker that is restarted would be restarted many times."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        sup.poll()
        time.sleep(0.05)


def test_a_model_llama_cpp_cannot_load_is_reported_once_and_not_restarted(tmp_path):
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 4096)  # the header passes, llama.cpp refuses the rest
    sup, table, events = supervise({"VIGIL_LLM__MODEL": str(damaged)})
    try:
        assert not sup.wait_running(["llm"], 60, lambda: True)
        assert "could not load" in sup.cannot_start()["llm"] and str(damaged) in sup.cannot_start()["llm"]
        settle(sup, 2.0)
        health = sup.health()["workers"]["llm"]
        assert health["state"] == "failed" and health["restarts"] == 0 and "cannot start" in health["reason"]
        kinds = [e.get("event", e["type"]) for e in events]
        assert kinds == ["started", "exited", "error"], events
        assert events[1]["exitcode"] == EXIT_CANNOT_START
    finally:
        sup.stop()
        table.close()


def test_an_absent_ollama_server_is_not_a_failure(tmp_path):
    with socket.socket() as sock:  # a loopback port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sup, table, events = supervise({"VIGIL_LLM__ENGINE": "ollama", "VIGIL_LLM__HOST": f"http://127.0.0.1:{port}",
                                    "VIGIL_LLM__MODEL": "smollm2"})
    try:
        assert sup.wait_running(["llm"], 60, lambda: True), (sup.health(), events)
        settle(sup, 2.0)
        health = sup.health()["workers"]["llm"]
        assert health["state"] == "running" and health["restarts"] == 0 and not sup.cannot_start(), health
        assert not [e for e in events if e["type"] == "error"], events
    finally:
        sup.stop()
        table.close()
