"""bench/wake_eval.py with the forced-score verifier ("+forced") and the onset proposer ("+onset").

Real components: the CTranslate2 tiny.en forced scorer, openWakeWord, espeak-ng/flite speech.
"""

from __future__ import annotations

import json

from bench.speech import tiny_wake_corpus


def test_parse_config_forced_and_onset():
    from bench.wake_eval import DEFAULT_CONFIGS, QUICK_CONFIGS, parse_config

    c = parse_config("oww@0.005+onset+forced+sure0.97")
    assert ((c["engine"], c["threshold"], c["verifier"], c["onset"], c["sure"])
            == ("openwakeword", 0.005, "forced", True, 0.97))
    c = parse_config("onset+forced")
    assert (c["engine"], c["verifier"], c["onset"], c["verify"]) == (None, "forced", True, True)
    c = parse_config("oww@0.05+verify+sure0.97")  # the old names keep their meaning
    assert (c["verifier"], c["onset"], c["sure"], c["threshold"]) == ("text", False, 0.97, 0.05)
    assert parse_config("oww@0.5+sure0.9")["sure"] is None and not parse_config("oww@0.5")["verify"]
    i = DEFAULT_CONFIGS.index("oww@0.05+verify+sure0.97")
    assert DEFAULT_CONFIGS[i + 1] == "oww@0.005+onset+forced"
    assert QUICK_CONFIGS == ("oww@0.5", "oww@0.005+onset+forced")


def test_coordinator_rules_ignore_proposals_while_busy():
    """With "+onset": a proposal before the previous verdict, or within 3 s of an accepted wake, is ignored."""
    from bench.wake_eval import accepted_wakes, parse_config

    def p(t, margin, ms=100.0, src="oww"):
        view = {"margin": margin, "wake_log10p": -1.0, "compute_ms": ms}  # far from a close call: one look
        return {"peak_end_s": t, "report_s": t, "score": 0.01, "source": src,
                "forced": {"raw": view, "denoised": view}}

    props = [p(1.0, -2.0, ms=500.0),   # rejected, verdict at 1.0 + 0.25 + 0.5 = 1.75
             p(1.5, 2.0),              # arrives while the first is verified: ignored
             p(2.0, 2.0, src="onset"),  # accepted
             p(4.0, 2.0),              # within 3 s of that wake: ignored
             p(5.5, 2.0)]              # accepted
    stats = {"verify_ms": [], "rejected": 0, "ignored": 0, "verified": 0}
    got = accepted_wakes(parse_config("oww@0.005+onset+forced"), props, None, (0.5, -6.0), stats)
    assert [a[0] for a in got] == [2.0, 5.5]
    assert (stats["ignored"], stats["rejected"], stats["verified"]) == (2, 1, 3)
    # without "+onset" the old rule: every proposal judged on its own
    got = accepted_wakes(parse_config("oww@0.005+forced"), props, None, (0.5, -6.0))
    assert [a[0] for a in got] == [1.5, 2.0, 4.0, 5.5]


def test_wake_eval_forced_onset_on_atiny_wake_corpus(tmp_path, models):
    from bench.wake_eval import MARGIN_GRID, run_wake_eval, summary_table

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    tiny_wake_corpus(corpus)
    name = "oww@0.005+onset+forced"
    report = run_wake_eval(corpus, tmp_path / "out", ["oww@0.5", name, "onset+forced"], forced_model=models.whisper_ct2)
    r = report["configs"][name]
    assert r["mode"] == "forced"
    assert r["conditions"]["clean"]["total"] == 2 and r["conditions"]["pink"]["total"] == 0
    # the flite kal "hey jarvis" (the held-out voice) is heard
    assert r["by_voice"]["flite-kal"]["clean"] == "1/1"
    assert r["heldout"]["clean"] == {"detected": 1, "total": 1, "rate": 1.0}
    assert r["false_wakes"]["near_miss"]["count"] == 0 and r["false_wakes"]["noise"]["count"] == 0
    assert r["double_wakes"] == 0
    assert r["proposals_by_source"]["onset"] >= 3  # each utterance starts after a pause
    assert r["verify_ms"]["n"] >= 3 and r["verify_ms"]["p50"] > 0
    assert r["proposer_cpu_ms_per_audio_s"] > report["configs"]["oww@0.5"]["proposer_cpu_ms_per_audio_s"] > 0
    sweep = r["margin_sweep"]
    assert [row["min_margin"] for row in sweep] == list(MARGIN_GRID)
    assert sweep[0]["totals"] == {"clean": 2, "pink": 0, "babble": 0, "room": 0}
    assert all(a["clean"] >= b["clean"] for a, b in zip(sweep, sweep[1:]))  # a stricter margin never detects more
    alone = report["configs"]["onset+forced"]
    assert alone["proposals_by_source"]["oww"] == 0 and alone["conditions"]["clean"]["detected"] >= 1
    assert report["forced_verifier"]["min_margin"] > 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "wake_proposals.jsonl").read_text().splitlines()]
    onset = [row for row in rows if row["source"] == "onset"]
    assert onset and all(row["engine"] == "onset" for row in onset)
    assert any(row["forced"] and row["stream"] == "positive:clean" for row in onset)
    assert all("forced" in row for row in rows if row["threshold"] == 0.005)
    assert {row["source"] for row in rows} == {"oww", "onset"}
    table = summary_table(report)
    assert name in table and "onset+forced" in table


def test_judge_forced_takes_the_denoised_look_only_after_a_close_call():
    from bench.wake_eval import judge_forced

    def p(raw_margin, raw_wake=-4.0):
        return {"forced": {"raw": {"margin": raw_margin, "wake_log10p": raw_wake, "compute_ms": 200.0},
                           "denoised": {"margin": 1.0, "wake_log10p": -4.0, "compute_ms": 210.0}}}

    assert judge_forced(p(0.8), 0.5, -7.0) == (True, 200.0)     # the raw look accepts: one pass
    assert judge_forced(p(0.0), 0.5, -7.0) == (True, 410.0)     # a close call: denoised, and it accepts
    assert judge_forced(p(-3.0), 0.5, -7.0) == (False, 200.0)   # far from the wake phrase: no second look
    assert judge_forced(p(0.0, raw_wake=-10.0), 0.5, -7.0) == (False, 200.0)
    assert judge_forced({"forced": None}, 0.5, -7.0) == (False, 0.0)
