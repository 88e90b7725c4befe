"""doctor's STT pick by the numbers: the hearing study's WER decides between models that are fast enough."""

from __future__ import annotations

import json

from core.config import Config
from tools.doctor import recommend, stt_accuracy


def stt(name: str, decode_ms: float, size_mb: float) -> dict:
    return {"kind": "stt", "name": name, "path": f"/models/{name}.bin", "size_mb": size_mb, "valid": True,
            "measured": {"decode_ms": decode_ms}}


MODELS = [stt("tiny.en", 180.0, 75.0), stt("base", 280.0, 142.0)]  # both fit: 80 ms frame + decode <= 400


def pick(accuracy, models=MODELS) -> dict:
    return recommend(models, {}, Config(), accuracy=accuracy)


def test_the_bigger_model_only_when_it_hears_clearly_better():
    r = pick({"tiny.en": {"wer": 0.09, "files": 300}, "base": {"wer": 0.05, "files": 300}})
    assert r["stt"] == "base" and r["settings"]["stt"]["model"] == "/models/base.bin"
    assert any("WER 0.050" in line for line in r["reasons"])
    assert pick({"tiny.en": {"wer": 0.055, "files": 300}, "base": {"wer": 0.05, "files": 300}})["stt"] == "tiny.en"
    assert pick({"tiny.en": {"wer": 0.04, "files": 300}, "base": {"wer": 0.05, "files": 300}})["stt"] == "tiny.en"


def test_speed_first_then_accuracy_and_no_numbers_is_said():
    slow_base = [stt("tiny.en", 180.0, 75.0), stt("base", 420.0, 142.0)]  # 80 ms frame + 420 > 400 ms
    wer = {"tiny.en": {"wer": 0.09, "files": 9}, "base": {"wer": 0.02, "files": 9}}
    assert pick(wer, slow_base)["stt"] == "tiny.en"
    r = pick({})
    assert r["stt"] == "base" and any("no hearing-study figures" in line for line in r["reasons"])


def test_two_files_of_one_model_share_its_figures():
    """A models dir that holds tiny.en twice (the provisioned q8_0 and an f16 converted by hand): the pick is
    still by the numbers, the faster file of the model that hears about as well."""
    models = [stt("tiny.en", 180.0, 42.0), stt("tiny.en", 240.0, 75.0), stt("base", 280.0, 82.0)]
    wer = {"tiny.en": {"wer": 0.09, "files": 300}, "base": {"wer": 0.05, "files": 300}}
    r = pick(wer, models)
    assert r["stt"] == "base" and not any("no hearing-study figures" in line for line in r["reasons"])
    r = pick({"tiny.en": {"wer": 0.052, "files": 300}, "base": {"wer": 0.05, "files": 300}}, models)
    assert r["stt"] == "tiny.en" and r["settings"]["stt"]["model"] == ""
    assert any("180 ms decode" in line for line in r["reasons"])


def test_accuracy_is_read_from_the_hearing_study(tmp_path):
    path = tmp_path / "hearing.json"
    path.write_text(json.dumps({"summary": {"chosen": {"wer": 0.061, "files": 252, "decode_ms_p50": 210.0},
                                            "base (multilingual)": {"wer": float("nan"), "files": 252}}}))
    assert stt_accuracy(path) == {"tiny.en": {"wer": 0.061, "files": 252, "decode_ms_p50": 210.0,
                                              "source": str(path)}}
    assert stt_accuracy(tmp_path / "missing.json") == {}


def test_the_timing_rule_follows_the_configured_endpoint():
    from dataclasses import replace

    from tools.doctor import endpoint_timing

    turn = endpoint_timing(Config())  # the default: the decode from the pause's first frame ends the request
    assert turn == {"mode": "turn", "end_wait_ms": 100, "pause_ms": 80, "stt_window_ms": 400.0}
    llm = {"kind": "llm", "name": "small", "path": "/models/small.gguf", "size_mb": 100.0,
           "measured": {"first_token_ms": 100.0, "tokens_per_s": 30.0}}
    r = pick({"tiny.en": {"wer": 0.09, "files": 9}, "base": {"wer": 0.05, "files": 9}},
             [stt("tiny.en", 180.0, 75.0), stt("base", 350.0, 142.0), llm])
    assert r["stt"] == "tiny.en" and "turn endpoint" in r["rule"]  # 80 + 350 > 400: base is too slow
    assert r["estimate_ms"] == 80 + 180 + 100 + 50 and r["fits_budget"]
    config = Config()
    silence = replace(config, stt=replace(config.stt, endpoint="silence"))
    assert endpoint_timing(silence) == {"mode": "silence", "end_wait_ms": 500, "pause_ms": 150, "stt_window_ms": 500}
    r = recommend([stt("tiny.en", 180.0, 75.0), stt("base", 350.0, 142.0)], {}, silence,
                  accuracy={"tiny.en": {"wer": 0.09, "files": 9}, "base": {"wer": 0.05, "files": 9}})
    assert r["stt"] == "base"  # 150 + 350 <= 500: the silence hides the decode
