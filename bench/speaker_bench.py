"""Speaker ID in the bench run: enroll some corpus voices, then score who the pipeline named.

The pipeline replay is the real test: voices are enrolled (from sentences that are not in the
corpus) into the run's state dir before `pipeline run` starts, and each answered utterance's
`speaker` is compared with who spoke it. espeak-ng's en-gb and en+m3 are pitch/accent variants
of en-us — one synthetic speaker to this engine (bench/speaker_eval.py) — so they count neither
as the enrolled voice nor as strangers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench.speaker_eval import ENROLL_N, SENTENCES
from bench.synth import tts_samples
from core.config import Config

# corpus speaker id → enrolled name; the rest of the corpus voices are strangers or variants.
ENROLLED = {"flite-kal": "kal", "flite-slt": "slt", "flite-awb": "awb", "espeak-en-us": "us", "espeak-en-f3": "f3"}
VARIANTS = {"espeak-en-gb", "espeak-en-m3"}
_TTS = {"flite-kal": ("flite", "kal"), "flite-slt": ("flite", "slt"), "flite-awb": ("flite", "awb"),
        "espeak-en-us": ("espeak-ng", "en-us"), "espeak-en-f3": ("espeak-ng", "en+f3")}


def enroll_voices(config: Config, state_dir: Path) -> dict[str, str]:
    """Enroll the ENROLLED voices into `state_dir` (what the replayed pipeline will use)."""
    from tools.enroll import enroll_from_audio, load_engine

    config = dataclasses.replace(config, metrics=dataclasses.replace(config.metrics, state_dir=str(state_dir)))
    engine = load_engine(config)
    for speaker, name in ENROLLED.items():
        tts_engine, voice = _TTS[speaker]
        audios = [tts_samples(text, engine=tts_engine, voice=voice) for text in SENTENCES[:ENROLL_N]]
        enroll_from_audio(config, name, audios, engine=engine)
    return dict(ENROLLED)


def speaker_summary(records: list[dict]) -> dict:
    """Accuracy over answered wake utterances: enrolled voices named right, strangers "unknown"."""
    enrolled = strangers = right_enrolled = right_strangers = 0
    for r in records:
        heard, who = r.get("speaker_heard"), r.get("voice_id")
        if not r["wake_expected"] or heard is None or who in VARIANTS:
            continue
        if who in ENROLLED:
            enrolled += 1
            right_enrolled += heard == ENROLLED[who]
        else:
            strangers += 1
            right_strangers += heard == "unknown"
    total = enrolled + strangers
    return {
        "accuracy": round((right_enrolled + right_strangers) / total, 4) if total else None,
        "enrolled_identified": round(right_enrolled / enrolled, 4) if enrolled else None,
        "strangers_rejected": round(right_strangers / strangers, 4) if strangers else None,
        "n": total, "enrolled": sorted(ENROLLED.values()), "variants_excluded": sorted(VARIANTS),
    }
