"""Responder worker: the kiosk's output. Streams answers to stdout, the full event stream to JSONL.

A separate process so a slow terminal or disk can never stall the coordinator: its inbox
blocks briefly and then drops (counted) instead of backing up into the pipeline.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from core.messages import Emit
from workers.base import Worker


class HumanPrinter:
    """A short, readable stdout summary: wake, what was heard, the streamed answer, its latency."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.streaming: int | None = None

    def _line(self, text: str) -> None:
        if self.streaming is not None:
            self.out.write("\n")
            self.streaming = None
        self.out.write(text + "\n")

    def show(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "wake":
            self._line(f"[wake] session {event['session']} ({event['engine']} {event['score']:.2f})")
        elif kind == "transcript" and event.get("final"):
            self._line(f"you: {event['text'] or '(nothing heard)'}")
        elif kind == "token":
            if self.streaming != event["session"]:
                if self.streaming is not None:
                    self.out.write("\n")
                self.out.write("vigil: ")
                self.streaming = event["session"]
            self.out.write(event["text"])
        elif kind == "response":
            latency = event.get("latency_ms", {})
            self._line(
                f"  [{event['route']}{', degraded' if event['degraded'] else ''}] speech end → first token "
                f"{latency.get('speech_end_to_first_token', float('nan')):.0f} ms, wake → first token "
                f"{latency.get('wake_to_first_token', float('nan')):.0f} ms"
            )
        elif kind == "worker" and event["event"] != "started":
            self._line(f"[worker] {event['name']} {event['event']} (pid {event['pid']}, exit {event['exitcode']})")
        elif kind in ("error", "drop"):
            self._line(f"[{kind}] {json.dumps({k: v for k, v in event.items() if k not in ('type', 't')})}")
        self.out.flush()


class ResponderWorker(Worker):
    """Writes each `Emit` to the JSONL file and the human summary on stdout."""

    def setup(self) -> None:
        self.ctx.inbox.poll_interval = 0.01  # output may trail by 10 ms; polling at 2 ms costs ~1.5 % of a core idle
        path = self.ctx.spec.events_path
        self.events = open(path, "a", buffering=1, encoding="utf-8") if path else None
        self.printer = HumanPrinter(sys.stdout) if self.ctx.spec.stdout else None

    def handle(self, message: Any) -> None:
        if not isinstance(message, Emit):
            return
        if self.events is not None:
            self.events.write(json.dumps(message.event, ensure_ascii=False) + "\n")
        if self.printer is not None:
            self.printer.show(message.event)

    def close(self) -> None:
        if getattr(self, "events", None) is not None:
            self.events.close()
