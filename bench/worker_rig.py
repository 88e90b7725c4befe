"""One real worker in a spawned process against real rings: messages in, messages out.

What the supervisor gives a worker, built for one worker alone, so tests and the bench can
drive it without the rest of the pipeline.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from core.audio import SAMPLE_RATE

WAKE_AT = 12  # frames (~1 s) from the start of the written audio to the wake frame


class WorkerRig:
    """The real speaker worker in a spawned process, fed through a real AudioRing and MessageRings."""

    def __init__(self, state_dir: Path, **speaker) -> None:
        from core.config import load_config
        from core.messages import decode
        from pipeline.supervisor import PipelineSupervisor
        from shm.audio_ring import AudioRing
        from shm.heartbeat import HeartbeatTable
        from shm.message_ring import MessageRing, Policy
        from shm.segments import segment_name
        from workers.base import WorkerSpec

        env = {"VIGIL_METRICS__STATE_DIR": str(state_dir)}
        env.update({f"VIGIL_SPEAKER__{k.upper()}": str(v) for k, v in speaker.items()})
        self.config = load_config(None, environ=env)
        pid = os.getpid()
        hb_name = segment_name(pid, "spk.hb")
        self.hb = HeartbeatTable.create(hb_name, 1)
        self.audio = AudioRing.create(sample_rate=SAMPLE_RATE, name=segment_name(pid, "spk.audio"),
                                      frame_samples=1280, capacity=375, max_readers=2)
        self.inbox = MessageRing.create(segment_name(pid, "spk.in"), slots=16, slot_size=1024,
                                        policy=Policy.DROP_OLDEST)
        self.outbox = MessageRing.create(segment_name(pid, "spk.out"), slots=16, slot_size=1024,
                                         policy=Policy.DROP_OLDEST, decoder=decode)
        spec = WorkerSpec("speaker", "workers.speaker:SpeakerWorker", row=0, heartbeat=hb_name, heartbeat_rows=1,
                          inbox=self.inbox.name, outbox=self.outbox.name, audio=self.audio.name, audio_slot=0)
        self.events: list[dict] = []  # the supervisor's events as the JSONL file has them
        self.sup = PipelineSupervisor(self.config, [spec], self.hb,
                                      on_event=lambda event: self.events.append(event.to_dict()))
        self.sup.start()

    def wait_running(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sup.poll()
            if self.sup.all_running() and self.hb.beats(0) > 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"speaker worker did not start: {self.sup.health()} {self.events}")

    def speak(self, audio: np.ndarray) -> int:
        """Write ``audio`` (plus silence) into the ring; return the seq of its first frame.
        Tests put the wake ~1 s later (WAKE_AT frames): the lead window then holds the "wake phrase"."""
        first = None
        x = np.concatenate([audio, np.zeros(1280 * 25, dtype=np.int16)])  # 2 s: > lead_s, no voice carries over
        x = np.pad(x, (0, -len(x) % 1280))
        for i in range(0, len(x), 1280):
            seq = self.audio.write(x[i : i + 1280])
            first = seq if first is None else first
        return first

    def send(self, message) -> None:
        from core.messages import encode

        assert self.inbox.put(encode(message))

    def result(self, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sup.poll()
            msg = self.outbox.get(0.05)
            if msg is not None:
                return msg
        return None

    def close(self) -> None:
        self.sup.stop()
        for ring in (self.audio, self.inbox, self.outbox):
            ring.unlink()
            ring.close()
        self.hb.close()
