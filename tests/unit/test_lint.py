"""`make lint` inside `make test`: CI runs only the test command, so ruff and mypy are held here too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", [["ruff", "check", "--no-cache", "."], ["mypy"]], ids=["ruff", "mypy"])
def test_the_code_passes_the_linters(command, tmp_path):
    """The rules and the files checked are the project's own ([tool.ruff], [tool.mypy] in pyproject.toml)."""
    tool = BIN / command[0]
    assert tool.is_file(), f"{command[0]} is not installed in this venv (the dev extra pins it)"
    extra = ["--cache-dir", str(tmp_path / "mypy-cache")] if command[0] == "mypy" else []
    proc = subprocess.run([str(tool), *command[1:], *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
