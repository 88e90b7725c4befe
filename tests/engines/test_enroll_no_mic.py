"""`enroll NAME --mic` without a microphone: one line that says so and exit 2, after a short wait, not silence.

Real PyAudio against a private PulseAudio server (bench.pulse.VirtualMic) whose server is gone, or which is
up with no source (the microphone unplugged).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.pulse import VirtualMic, pulse_available
from tools.enroll import NO_AUDIO_S

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("unplug, reason", [("kill_server", "no audio input device found"),
                                            ("remove_source", "PulseAudio has no input source")])
def test_enroll_from_a_missing_microphone_says_so_in_one_line(tmp_path, unplug, reason):
    if not pulse_available():
        pytest.fail("needs pulseaudio and pulseaudio-utils (the Makefile's APT_RUNTIME)")
    with VirtualMic() as mic:
        getattr(mic, unplug)()
        env = {**mic.child_env(), "VIGIL_METRICS__STATE_DIR": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"}
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pipeline", "enroll", "Bob", "--mic", "--phrases", "1"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
    errors = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(errors) == 1, (proc.returncode, proc.stderr)
    assert errors[0].startswith("vigil: error: enroll: no microphone: ") and reason in errors[0], errors
    assert "--input" not in errors[0]  # the pipeline's advice is no help to enroll
    assert proc.stdout.count("Please say") == 1 and "enrolled" not in proc.stdout, proc.stdout
    assert NO_AUDIO_S <= took < NO_AUDIO_S + 30, took  # it waited a little, not forever
    assert not (tmp_path / "state" / "voiceprints").exists() or not any((tmp_path / "state" / "voiceprints").iterdir())
