"""doctor's STT pick by the numbers: the hearing study's WER decides between models that are fast enough."""

from __future__ import annotations

import json

from core.config import Config
from tools.doctor import recommend, stt_accuracy


def stt(name: str, decode_ms: float, size_mb: float) -> dict:
    return {"kind": "stt", "name": name, "path": f"/models/{name}.bin", "size_mb": size_mb, "valid": True,
            "measured": {"decode_ms": decode_ms}}


MODELS = [stt("tiny.en", 180.0, 75.0), stt("base", 320.0, 142.0)]


def pick(accuracy, models=MODELS) -> dict:
    return recommend(models, {}, Config(), accuracy=accuracy)


def test_the_bigger_model_only_when_it_hears_clearly_better():
    r = pick({"tiny.en": {"wer": 0.09, "files": 300}, "base": {"wer": 0.05, "files": 300}})
    assert r["stt"] == "base" and r["settings"]["stt"]["model"] == "/models/base.bin"
    assert any("WER 0.050" in line for line in r["reasons"])
    assert pick({"tiny.en": {"wer": 0.055, "files": 300}, "base": {"wer": 0.05, "files": 300}})["stt"] == "tiny.en"
    assert pick({"tiny.en": {"wer": 0.04, "files": 300}, "base": {"wer": 0.05, "files": 300}})["stt"] == "tiny.en"


def test_speed_first_then_accuracy_and_no_numbers_is_said():
    slow_base = [stt("tiny.en", 180.0, 75.0), stt("base", 420.0, 142.0)]  # 150 ms pause + 420 > 500 ms
    assert pick({"tiny.en": {"wer": 0.09, "files": 9}, "base": {"wer": 0.02, "files": 9}}, slow_base)["stt"] == "tiny.en"
    r = pick({})
    assert r["stt"] == "base" and any("no hearing-study figures" in line for line in r["reasons"])


def test_accuracy_is_read_from_the_hearing_study(tmp_path):
    path = tmp_path / "hearing.json"
    path.write_text(json.dumps({"summary": {"chosen": {"wer": 0.061, "files": 252, "decode_ms_p50": 210.0},
                                            "base (multilingual)": {"wer": float("nan"), "files": 252}}}))
    assert stt_accuracy(path) == {"tiny.en": {"wer": 0.061, "files": 252, "decode_ms_p50": 210.0,
                                              "source": str(path)}}
    assert stt_accuracy(tmp_path / "missing.json") == {}
