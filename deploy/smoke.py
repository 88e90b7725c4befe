"""Does a freshly installed release come up? `python deploy/smoke.py /path/to/venv/bin/vigil [vigil.toml]`.

deploy/install.sh runs this before it switches the service to a new release: the new `vigil run`
starts with its own NOTIFY_SOCKET (as systemd would give it), listening to a few seconds of silence,
and must send READY=1 — every worker has loaded its models and beats — within the start-up limit;
then SIGTERM must stop it cleanly. Exit 0 when both hold; 1, with the log's tail, when not. The HTTP
endpoints stay off (the running service holds the port) and metrics go to a temporary folder.
Standard library only: it runs on the release's own interpreter before anything else has.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

START_LIMIT_S = 180.0  # the unit's TimeoutStartSec
STOP_LIMIT_S = 15.0  # the unit's TimeoutStopSec


def smoke(vigil: str, config: str | None) -> int:
    with tempfile.TemporaryDirectory(prefix="vigil-smoke-") as tmp:
        silence = Path(tmp) / "silence.wav"
        with wave.open(str(silence), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16_000)
            out.writeframes(b"\0\0" * 16_000 * 3)
        address = str(Path(tmp) / "notify")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(address)
        listener.settimeout(0.5)
        env = dict(os.environ, NOTIFY_SOCKET=address, VIGIL_HTTP__ENABLED="false",
                   VIGIL_METRICS__STATE_DIR=str(Path(tmp) / "state"))
        env.pop("WATCHDOG_USEC", None)
        command = [vigil] + (["--config", config] if config else []) + ["run", "--input", str(silence), "--loop"]
        log_path = Path(tmp) / "run.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        ready, started = False, time.monotonic()
        try:
            while not ready and proc.poll() is None and time.monotonic() - started < START_LIMIT_S:
                try:
                    ready = b"READY=1" in listener.recv(4096).split(b"\n")
                except TimeoutError:
                    continue
            if ready:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            listener.close()
        took = time.monotonic() - started
        if ready and code == 0:
            print(f"smoke: the new release came up in {took:.0f} s (READY=1) and stopped cleanly")
            return 0
        if not ready:
            why = (f"no READY=1 within {START_LIMIT_S:.0f} s" if took >= START_LIMIT_S
                   else f"it exited (code {proc.returncode}) before READY=1")
        else:
            why = (f"it did not stop within {STOP_LIMIT_S:.0f} s" if code is None
                   else f"it stopped with exit code {code}")
        sys.stderr.write(f"smoke: the new release did not come up cleanly: {why}\n")
        sys.stderr.write(log_path.read_text(errors="replace")[-4000:])
        return 1


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.splitlines()[0])
    sys.exit(smoke(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None))
