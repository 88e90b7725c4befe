"""Responder worker: the kiosk's output. Streams answers to stdout, the full event stream to JSONL.

A separate process so a slow terminal or disk can never stall the coordinator: its inbox
blocks briefly and then drops (counted) instead of backing up into the pipeline.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from core.events import (
    DropEvent, ErrorEvent, Event, EventError, ResponseEvent, TokenEvent, TranscriptEvent, WakeEvent, WorkerEvent,
    parse_event,
)
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

    def show(self, event: Event) -> None:
        if isinstance(event, WakeEvent):
            self._line(f"[wake] session {event.session} ({event.engine} {event.score:.2f})")
        elif isinstance(event, TranscriptEvent) and event.final:
            self._line(f"you: {event.text or '(nothing heard)'}")
        elif isinstance(event, TokenEvent):
            if self.streaming != event.session:
                if self.streaming is not None:
                    self.out.write("\n")
                self.out.write("vigil: ")
                self.streaming = event.session
            self.out.write(event.text)
        elif isinstance(event, ResponseEvent):
            latency = event.latency_ms
            self._line(
                f"  [{event.route}{', degraded' if event.degraded else ''}] speech end → first token "
                f"{latency.get('speech_end_to_first_token', float('nan')):.0f} ms, wake → first token "
                f"{latency.get('wake_to_first_token', float('nan')):.0f} ms"
            )
        elif isinstance(event, WorkerEvent) and event.event != "started":
            self._line(f"[worker] {event.name} {event.event} (pid {event.pid}, exit {event.exitcode})")
        elif isinstance(event, (ErrorEvent, DropEvent)):
            body = {k: v for k, v in event.to_dict().items() if k not in ("type", "t")}
            self._line(f"[{event.type}] {json.dumps(body)}")
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
            try:
                event = parse_event(message.event)
            except EventError as exc:  # the file has it; the summary shows only what it knows
                self.log.warning("event not shown: %s", exc)
                return
            self.printer.show(event)

    def close(self) -> None:
        if getattr(self, "events", None) is not None:
            self.events.close()
