"""The bench's speaker figures count by what this run enrolled, whatever the corpus calls its speakers."""

from __future__ import annotations

from bench.speaker_bench import ENROLLED, expected_speaker, speaker_by, speaker_summary


def rec(voice: str, speaker_id: str, heard: str | None, condition: str = "clean", wake: bool = True) -> dict:
    return {"voice": voice, "voice_id": speaker_id, "speaker_heard": heard, "wake_expected": wake,
            "condition": condition}


def test_a_held_out_corpus_with_its_own_speaker_names():
    # three voices under names the default corpus does not use: two enrolled in this run, one stranger,
    # and the pipeline got every one right -> 100 %, not "37.5 %"
    records = [rec("flite:kal", "speaker-a", "kal"), rec("flite:kal", "speaker-a", "kal"),
               rec("flite:slt", "speaker-b", "slt"), rec("flite:slt", "speaker-b", "slt"),
               rec("flite:rms", "speaker-c", "unknown"), rec("flite:rms", "speaker-c", "unknown"),
               rec("piper:joe", "speaker-d", "unknown"), rec("espeak-ng:en-us:190", "speaker-e", "us")]
    s = speaker_summary(records, {"flite:kal": "kal", "flite:slt": "slt", "espeak-ng:en-us": "us"})
    assert s["accuracy"] == 1.0 and s["enrolled_identified"] == 1.0 and s["strangers_rejected"] == 1.0
    assert (s["n_enrolled"], s["n_strangers"]) == (5, 3)


def test_only_voices_enrolled_in_this_run_count_as_enrolled():
    only_kal = {"flite:kal": "kal"}
    assert expected_speaker(rec("flite:slt", "flite-slt", "slt"), only_kal) == "unknown"  # not enrolled here
    assert expected_speaker(rec("flite:kal", "x", None), only_kal) == "kal"
    assert expected_speaker(rec("", "flite-kal", None), only_kal) == "kal"  # by the default corpus's id
    assert expected_speaker(rec("", "kal", None), only_kal) == "kal"  # a corpus naming speakers as enrolled
    s = speaker_summary([rec("flite:slt", "flite-slt", "slt"), rec("flite:kal", "flite-kal", "kal")], only_kal)
    assert (s["enrolled_identified"], s["strangers_rejected"], s["accuracy"]) == (1.0, 0.0, 0.5)


def test_variants_of_an_enrolled_voice_are_left_out_and_unanswered_ones_too():
    records = [rec("espeak-ng:en-gb", "espeak-en-gb", "us"), rec("flite:kal", "flite-kal", None),
               rec("flite:kal", "flite-kal", "kal", wake=False), rec("flite:awb", "flite-awb", "awb")]
    s = speaker_summary(records, ENROLLED)
    assert s["n"] == 1 and s["accuracy"] == 1.0 and s["variants_excluded"] == ["espeak-ng:en-gb"]
    # without en-us enrolled, en-gb is simply a stranger
    assert expected_speaker(records[0], {"flite:kal": "kal"}) == "unknown"


def test_per_condition():
    records = [rec("flite:kal", "flite-kal", "kal"), rec("flite:kal", "flite-kal", "unknown", "room")]
    by = speaker_by(records, ENROLLED, "condition")
    assert by["clean"]["accuracy"] == 1.0 and by["room"]["accuracy"] == 0.0
