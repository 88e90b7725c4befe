"""The offline pvporcupine 1.9.5 build, unpacked from its PyPI wheel (no AccessKey needed).

Both pvporcupine releases share one import name, so 1.9.5 is never installed: its wheel is
fetched with ``pip download --no-deps`` into ``<models>/wheels``, checked against its pinned
SHA-256, and only the Linux x86_64 library, the model and the Linux keyword files are unpacked
into ``<models>/pvporcupine-1.9.5/``."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from models.wheels import ModelError, default_models_dir, download_wheel, sha256_file

PORCUPINE_LEGACY_VERSION = "1.9.5"
PORCUPINE_LEGACY_WHEEL = "pvporcupine-1.9.5-py3-none-any.whl"
PORCUPINE_LEGACY_SHA256 = "8f4e95c966f72258b417743e13e8c571d2fb79cdf2fe59571e6766638787481d"
_LEGACY_MEMBERS = {  # wheel member -> name in the unpacked folder
    "pvporcupine/lib/linux/x86_64/libpv_porcupine.so": "libpv_porcupine.so",
    "pvporcupine/lib/common/porcupine_params.pv": "porcupine_params.pv",
    "pvporcupine/LICENSE": "LICENSE",
}
_LEGACY_KEYWORDS = "pvporcupine/resources/keyword_files/linux/"


def ensure_porcupine_legacy(models_dir: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The offline porcupine 1.9.5 build unpacked in ``<models>/pvporcupine-1.9.5/``; idempotent.

    Raises ``ModelError`` when that cannot be done here (another platform, no wheel, a bad download).
    """
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise ModelError(
            f"the offline pvporcupine {PORCUPINE_LEGACY_VERSION} build is wired up for Linux x86_64 only "
            f"(this is {sys.platform}/{platform.machine()})")
    models = Path(models_dir).expanduser() if models_dir else default_models_dir()
    dest = models / f"pvporcupine-{PORCUPINE_LEGACY_VERSION}"
    marker = dest / ".complete"
    if marker.is_file() and marker.read_text().strip() == PORCUPINE_LEGACY_SHA256:
        return dest
    wheels = models / "wheels"
    if not download and not (wheels / PORCUPINE_LEGACY_WHEEL).is_file():
        raise ModelError(f"the offline pvporcupine {PORCUPINE_LEGACY_VERSION} build is not in {dest} "
                         "(run: python -m pipeline models --porcupine)")
    wheel = download_wheel("pvporcupine", PORCUPINE_LEGACY_VERSION, wheels)
    digest = sha256_file(wheel)
    if digest != PORCUPINE_LEGACY_SHA256:
        wheel.unlink(missing_ok=True)
        raise ModelError(f"{wheel}: sha256 {digest} is not the pinned {PORCUPINE_LEGACY_SHA256}; removed it")
    models.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=models, prefix=".extract-pvporcupine-"))
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member, name in _LEGACY_MEMBERS.items():
                (tmp / name).write_bytes(zf.read(member))
            (tmp / "keywords").mkdir()
            for member in zf.namelist():
                if member.startswith(_LEGACY_KEYWORDS) and member.endswith("_linux.ppn"):
                    (tmp / "keywords" / Path(member).name).write_bytes(zf.read(member))
        (tmp / ".complete").write_text(PORCUPINE_LEGACY_SHA256 + "\n")
        if dest.exists():  # stale or partial: replace it whole
            shutil.rmtree(dest, ignore_errors=True)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process won the race: take its copy if complete
            if not (marker.is_file() and marker.read_text().strip() == PORCUPINE_LEGACY_SHA256):
                raise
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelError(f"could not unpack {wheel}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
