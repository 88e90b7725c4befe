"""Speaker ID in the bench run: enroll some voices, then score who the pipeline named.

The pipeline replay is the real test: voices are enrolled (from sentences that are not in the
corpus) into the run's state dir before `pipeline run` starts, and each answered utterance's
`speaker` is compared with who spoke it.

Who counts as what is decided by *this run's* enrollment, whatever corpus is replayed (the
default one or a held-out ``--corpus DIR``): an utterance is by an enrolled voice when its
manifest ``voice`` (engine:name, any rate) or its ``speaker`` is a voice enrolled in this run —
then the right answer is that voice's name; every other voice is a stranger, and the right
answer is "unknown".  espeak-ng's en-gb and en+m3 are pitch/accent variants of en-us — one
synthetic speaker to this engine (bench/speaker_eval.py) — so while en-us is enrolled they count
neither as it nor as strangers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench.speaker_eval import ENROLL_N, SENTENCES
from bench.synth import tts_samples
from core.config import Config

# The voices a run enrolls: the TTS voice (engine:name) -> the name it is enrolled under.
ENROLLED = {"flite:kal": "kal", "flite:slt": "slt", "flite:awb": "awb", "espeak-ng:en-us": "us",
            "espeak-ng:en+f3": "f3"}
# The default corpus's speaker ids of those voices (a corpus without a "voice" field is matched by them).
SPEAKER_IDS = {"flite-kal": "flite:kal", "flite-slt": "flite:slt", "flite-awb": "flite:awb",
               "espeak-en-us": "espeak-ng:en-us", "espeak-en-f3": "espeak-ng:en+f3"}
# Voices this engine cannot tell from an enrolled one: left out of the figures while that one is enrolled.
VARIANT_OF = {"espeak-ng:en-gb": "espeak-ng:en-us", "espeak-ng:en+m3": "espeak-ng:en-us"}


def enroll_voices(config: Config, state_dir: Path, voices: dict[str, str] | None = None,
                  progress: bool = False) -> dict[str, str]:
    """Enroll ``voices`` (engine:name -> name; default ``ENROLLED``) into ``state_dir``, the replayed
    pipeline's; returns what was enrolled, for ``speaker_summary``."""
    from tqdm import tqdm

    from tools.enroll import enroll_from_audio, load_engine

    voices = dict(ENROLLED if voices is None else voices)
    config = dataclasses.replace(config, metrics=dataclasses.replace(config.metrics, state_dir=str(state_dir)))
    engine = load_engine(config)
    for spec, name in tqdm(voices.items(), desc="enrolling speakers", unit="voice", disable=not progress,
                           leave=False):
        tts_engine, voice = spec.split(":", 1)
        audios = [tts_samples(text, engine=tts_engine, voice=voice) for text in SENTENCES[:ENROLL_N]]
        enroll_from_audio(config, name, audios, engine=engine)
    return voices


def _base_spec(voice: str) -> str:
    """engine:name of a manifest voice ("espeak-ng:en-us:190" -> "espeak-ng:en-us")."""
    return ":".join(voice.split(":")[:2])


def expected_speaker(record: dict, enrolled: dict[str, str]) -> str | None:
    """The name the pipeline should give this utterance: an enrolled voice's name, "unknown" for a stranger,
    None for a variant of an enrolled voice (not counted)."""
    spec = _base_spec(record.get("voice") or "")
    who = record.get("voice_id") or ""
    names = set(enrolled.values())
    if spec in enrolled:
        return enrolled[spec]
    if SPEAKER_IDS.get(who) in enrolled:
        return enrolled[SPEAKER_IDS[who]]
    if who in names:  # a corpus that names its speakers as they were enrolled
        return who
    if VARIANT_OF.get(spec) in enrolled:
        return None
    return "unknown"


def speaker_summary(records: list[dict], enrolled: dict[str, str] | None = None) -> dict:
    """Accuracy over answered wake utterances: voices enrolled in this run (``enroll_voices``' answer; default
    ``ENROLLED``, what it enrolls by default) named right, strangers "unknown"."""
    enrolled = ENROLLED if enrolled is None else enrolled
    n_enrolled = strangers = right_enrolled = right_strangers = 0
    variants = set()
    for r in records:
        heard = r.get("speaker_heard")
        if not r["wake_expected"] or heard is None:
            continue
        expected = expected_speaker(r, enrolled)
        if expected is None:
            variants.add(r.get("voice") or r.get("voice_id"))
        elif expected == "unknown":
            strangers += 1
            right_strangers += heard == "unknown"
        else:
            n_enrolled += 1
            right_enrolled += heard == expected
    total = n_enrolled + strangers
    return {
        "accuracy": round((right_enrolled + right_strangers) / total, 4) if total else None,
        "enrolled_identified": round(right_enrolled / n_enrolled, 4) if n_enrolled else None,
        "strangers_rejected": round(right_strangers / strangers, 4) if strangers else None,
        "n": total, "n_enrolled": n_enrolled, "n_strangers": strangers,
        "enrolled": sorted(enrolled.values()), "variants_excluded": sorted(v for v in variants if v),
    }


def speaker_by(records: list[dict], enrolled: dict[str, str] | None, key: str) -> dict[str, dict]:
    """``speaker_summary`` per value of ``key`` (e.g. "condition"), in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(str(r.get(key) or "clean"), []).append(r)
    return {g: speaker_summary(rs, enrolled) for g, rs in groups.items()}
