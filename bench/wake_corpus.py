"""The wake-word corpus: voices × requests × conditions, near misses, and long negatives.

Made by the bench itself with the offline TTS engines (flite, espeak-ng, the Piper neural voice
when it is installed) and cached
(a stamp with a hash of the plan, like ``bench.corpus``).  One folder with WAV files and
``manifest.jsonl`` in the corpus contract's format (docs/architecture.md, "Contracts") plus wake keys:

* ``set``: "positive" (starts with "hey jarvis"), "near_miss" (sounds like it, must not
  wake), "ordinary" (household talk), "noise" (pink noise at several levels, babble alone);
* ``condition``: "clean", "pink" (pink noise at 10 dB SNR), "babble" (several other
  TTS voices talking at once, 10 dB SNR) or "room" (a far-field room: the voice 1-2 m away
  between hard walls, ``bench.rooms``) for positives; "clean" for negatives, and "room" for a
  room copy of the near misses and of one ordinary paragraph per voice (a room must not add
  false wakes);
* ``wake_start_s`` / ``wake_end_s``: where "hey jarvis" starts and ends in the file.  The
  end is measured by synthesizing the wake phrase alone with the same voice
  (``speech_bounds`` of "Hey Jarvis"), so it is ground truth from the samples, not from a
  detector; it is what "phrase end → accepted wake" is measured from;
* ``split``: "tune" or "heldout" — half the voices each, so a verifier tuned on one half
  is reported on the other.

``python -m bench.wake_corpus OUT [--quick]`` builds it from the shell.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import synth
from bench.corpus import MANIFEST, _slug, build_locked
from bench.rooms import in_room
from bench.synth import engine_available, mix_at_snr, pink_noise, speech_bounds, tts_samples, write_wav16
from core.audio import SAMPLE_RATE

WAKE_CORPUS_VERSION = 2  # 2: the room condition, the Piper voice
WAKE_PHRASE = "Hey Jarvis"
SNR_DB = 10.0
LEAD_S = 0.5
TAIL_S = 1.0
NOISE_CLIP_S = 60.0
QUICK_NOISE_CLIP_S = 15.0
PARALLEL = 2  # TTS subprocesses at once (the box has two cores, shared)


@dataclass(frozen=True)
class WakeVoice:
    id: str
    engine: str
    name: str
    rate: int | None = None
    split: str = "tune"

    @property
    def spec(self) -> str:
        return f"{self.engine}:{self.name}" + (f":{self.rate}" if self.rate else "")


# Alternating tune/heldout so each half has flite and espeak, slow and fast, high and low.
VOICES: tuple[WakeVoice, ...] = (
    WakeVoice("flite-kal", "flite", "kal", split="tune"),
    WakeVoice("flite-slt", "flite", "slt", split="heldout"),
    WakeVoice("flite-awb", "flite", "awb", split="tune"),
    WakeVoice("flite-rms", "flite", "rms", split="heldout"),
    WakeVoice("flite-kal16", "flite", "kal16", split="heldout"),
    WakeVoice("espeak-en-us", "espeak-ng", "en-us", split="heldout"),
    WakeVoice("espeak-en-gb", "espeak-ng", "en-gb", split="tune"),
    WakeVoice("espeak-en-m3", "espeak-ng", "en+m3", split="tune"),
    WakeVoice("espeak-en-f3", "espeak-ng", "en+f3", split="heldout"),
    WakeVoice("espeak-en-m7-fast", "espeak-ng", "en+m7", rate=220, split="tune"),
    WakeVoice("espeak-en-f4-slow", "espeak-ng", "en+f4", rate=140, split="heldout"),
    WakeVoice("espeak-en-scot", "espeak-ng", "en-gb-scotland", rate=190, split="tune"),
    # the neural voice (natural prosody), at its own pace and faster
    WakeVoice("piper-joe", "piper", "joe", split="tune"),
    WakeVoice("piper-joe-fast", "piper", "joe", rate=200, split="heldout"),
)
CONDITIONS = ("clean", "pink", "babble", "room")
QUICK_VOICES = ("flite-kal", "espeak-en-us", "espeak-en-m7-fast", "piper-joe")

REQUESTS = ("what time is it", "set a timer for five minutes", "what is the weather like today",
            "turn on the kitchen light", "who wrote Romeo and Juliet")
QUICK_REQUESTS = REQUESTS[:2]

NEAR_MISSES = (
    "hey marvin, what is the weather",
    "I bought jars of honey",
    "hey, jars of honey are on sale",
    "hey travis, can you pass the salt",
    "ask mister jarvis about the report",
    "we talked to jarvis yesterday about the garden",
    "hey harvey, is dinner ready",
    "the jars with the lids are in the garage",
    "harvest season starts in September",
    "hey, service is slow today",
)
QUICK_NEAR_MISSES = NEAR_MISSES[:3]

ORDINARY = (
    "The bus leaves at half past seven, so we should get going soon.",
    "Please remember to water the plants on Sunday.",
    "My sister is visiting us next week with her two children.",
    "The library closes early on Fridays during the summer.",
    "We need more milk, eggs and bread from the shop.",
    "The meeting was moved to the afternoon because of the train strike.",
    "Turn left at the second traffic light and park behind the bakery.",
    "It has been raining all morning and the garden is soaked.",
    "The children are playing football in the park.",
    "I think the soup needs a little more salt and some pepper.",
    "Did anyone see where I left my reading glasses?",
    "The dentist called to confirm the appointment on Tuesday.",
    "Our neighbours painted their front door bright yellow.",
    "Can you pick up the parcel from the post office tomorrow?",
    "The heating makes a strange noise every night around midnight.",
    "We could go hiking if the weather stays dry this weekend.",
    "The new cafe on the corner sells very good croissants.",
    "I forgot to charge my phone again last night.",
    "The cat has been sleeping on the sofa all afternoon.",
    "Let's have pasta for dinner and a salad on the side.",
    "The train was twenty minutes late this morning.",
    "She started learning the piano when she was six years old.",
    "There is a small leak under the kitchen sink.",
    "The museum has a new exhibition about ancient Egypt.",
    "He always reads the newspaper before breakfast.",
    "We should book the holiday flights before the prices go up.",
    "The printer is out of paper again.",
    "My brother fixed the bicycle chain in ten minutes.",
    "The football match starts at eight tonight.",
    "Could you close the window, it is getting cold in here.",
    "The baker on Main Street opens at six every morning.",
    "I need to return these books to the library by Thursday.",
)
PARAGRAPH_SENTENCES = 8


@dataclass(frozen=True)
class WakeItem:
    file: str
    set: str                 # positive | near_miss | ordinary | noise
    condition: str           # clean | pink | babble | room
    text: str                # what is spoken ("" for noise)
    transcript: str          # the request (positives) or the whole text
    voice: WakeVoice | None = None
    seed: int = 0
    noise: str = ""          # for set == noise: "pink:-40" or "babble"
    seconds: float = NOISE_CLIP_S  # length of a noise clip


def _voices(quick: bool) -> list[WakeVoice]:
    vs = [v for v in VOICES if engine_available(v.engine)]
    return [v for v in vs if v.id in QUICK_VOICES] if quick else vs


def plan(quick: bool = False) -> list[WakeItem]:
    """Every file of the wake corpus (deterministic order)."""
    voices = _voices(quick)
    requests = QUICK_REQUESTS if quick else REQUESTS
    near = QUICK_NEAR_MISSES if quick else NEAR_MISSES
    items: list[WakeItem] = []
    seed = 0
    for v in voices:
        for r in requests:
            for c in CONDITIONS:
                seed += 1
                items.append(WakeItem(f"pos_{v.id}_{_slug(r)}_{c}.wav", "positive", c,
                                      f"{WAKE_PHRASE}, {r}", r, v, seed))
    for c in ("clean", "room"):
        tag = "" if c == "clean" else f"{c}_"
        for v in voices:
            for s in near:
                seed += 1
                items.append(WakeItem(f"{tag}near_{v.id}_{_slug(s)}.wav", "near_miss", c, s, s, v, seed))
    n_par = 1 if quick else len(ORDINARY) // PARAGRAPH_SENTENCES
    for i, v in enumerate(voices):
        for p in range(n_par):
            # each voice speaks every paragraph, in a rotated sentence order so no two are alike
            start = (p * PARAGRAPH_SENTENCES + 3 * i) % len(ORDINARY)
            sents = [ORDINARY[(start + k) % len(ORDINARY)] for k in range(PARAGRAPH_SENTENCES)]
            if quick:
                sents = sents[:3]
            text = " ".join(sents)
            items.append(WakeItem(f"ord_{v.id}_p{p}.wav", "ordinary", "clean", text, text, v))
            if p == 0:  # one paragraph per voice in the room as well
                items.append(WakeItem(f"room_ord_{v.id}_p{p}.wav", "ordinary", "room", text, text, v, 7000 + i))
    levels = [-40] if quick else [-50, -45, -40, -35, -30, -25]
    secs = QUICK_NOISE_CLIP_S if quick else NOISE_CLIP_S
    for k, db in enumerate(levels):
        items.append(WakeItem(f"noise_pink_minus{-db}dBFS.wav", "noise", "clean", "", "", seed=5000 + k,
                              noise=f"pink:{db}", seconds=secs))
    for k in range(1 if quick else 4):
        items.append(WakeItem(f"noise_babble_{k}.wav", "noise", "clean", "", "", seed=6000 + k, noise="babble",
                              seconds=secs))
    return items


def _stamp(items: list[WakeItem], quick: bool) -> str:
    rule = (synth.FRAME_S, synth.REL_THRESHOLD_DB, synth.ABS_FLOOR_DBFS, synth.BLIP_MAX_S, synth.BLIP_GAP_S)
    h = hashlib.sha256(json.dumps([WAKE_CORPUS_VERSION, repr(items), rule, SNR_DB, LEAD_S, TAIL_S,
                                   NOISE_CLIP_S]).encode()).hexdigest()[:16]
    return f"vigil-wake-corpus v{WAKE_CORPUS_VERSION} {'quick' if quick else 'full'} {h}"


def default_wake_corpus_dir(corpus_cache_dir: Path, quick: bool) -> Path:
    """Beside the bench corpus: ``<models dir's parent>/wake-corpus[-quick]``."""
    return Path(corpus_cache_dir) / ("wake-corpus-quick" if quick else "wake-corpus-full")


def build_wake_corpus(out_dir: str | os.PathLike, *, quick: bool = False, progress: bool = True) -> Path:
    """Synthesize the wake corpus into ``out_dir`` (idempotent, locked, atomic); return the manifest path."""
    items = plan(quick)
    engines = sorted({i.voice.engine for i in items if i.voice})
    return build_locked(out_dir, [i.file for i in items], _stamp(items, quick), engines,
                        lambda out: _make_all(out, items, quick, progress), "the wake corpus")


def _tts(v: WakeVoice, text: str) -> np.ndarray:
    return tts_samples(text, v.engine, v.name, v.rate)


def _make_all(out: Path, items: list[WakeItem], quick: bool, progress: bool) -> list[dict[str, Any]]:
    from tqdm import tqdm

    voices = _voices(quick)
    # Speech first (parallel TTS subprocesses), then the mixes that need it.
    texts: set[tuple[WakeVoice, str]] = {(i.voice, i.text) for i in items if i.voice}
    texts |= {(v, WAKE_PHRASE) for v in voices}
    texts |= {(v, " ".join(ORDINARY[k::4][:4])) for v in voices for k in range(4)}  # babble material
    texts_l = sorted(texts, key=lambda t: (t[0].id, t[1]))
    speech: dict[tuple[WakeVoice, str], np.ndarray] = {}
    with ThreadPoolExecutor(PARALLEL) as pool, \
            tqdm(total=len(texts_l) + len(items), desc="wake corpus", unit="clip", disable=not progress,
                 leave=False) as bar:
        for key, s in zip(texts_l, pool.map(lambda t: _tts(*t), texts_l)):
            speech[key] = s
            bar.update(1)
        babble_src = {v: [speech[(v, " ".join(ORDINARY[k::4][:4]))] for k in range(4)] for v in voices}
        rows = []
        for it in items:
            rows.append(_make(out, it, speech, babble_src))
            bar.update(1)
    return rows


def babble(seconds: float, sources: dict[WakeVoice, list[np.ndarray]], seed: int, exclude: str = "",
           talkers: int = 4) -> np.ndarray:
    """``talkers`` voices (not ``exclude``) talking at once for ``seconds``: their sentences summed with random
    offsets."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    pool = [v for v in sorted(sources, key=lambda v: v.id) if v.id != exclude] or list(sources)
    chosen = rng.choice(len(pool), size=min(talkers, len(pool)), replace=False)
    mix = np.zeros(n, dtype=np.float64)
    for idx in chosen:
        clips = sources[pool[int(idx)]]
        stream = np.concatenate([clips[int(k)] for k in rng.permutation(len(clips))])
        stream = stream.astype(np.float64)
        stream /= max(1.0, float(np.sqrt(np.mean(stream ** 2))))  # each talker at the same level
        stream = np.resize(np.roll(stream, int(rng.integers(0, len(stream)))), n)
        mix += stream
    mix *= 1500.0 / max(1e-9, float(np.sqrt(np.mean(mix ** 2))))
    return np.clip(np.round(mix), -32768, 32767).astype(np.int16)


def _make(out: Path, it: WakeItem, speech: dict, babble_src: dict) -> dict[str, Any]:
    row: dict[str, Any] = {"wav": it.file, "set": it.set, "condition": it.condition}
    if it.voice is None:
        if it.noise.startswith("pink:"):
            db = float(it.noise.split(":")[1])
            audio = pink_noise(it.seconds, rms=32768.0 * 10.0 ** (db / 20.0), seed=it.seed)
            voice = f"pink-noise:{db:g}dBFS"
        else:
            audio = babble(it.seconds, babble_src, it.seed)
            voice = "babble"
        write_wav16(out / it.file, audio)
        row.update(wake=False, transcript="", speaker="", speech_end_s=0.0, kind="negative", voice=voice,
                   split="all")
        return row
    v = it.voice
    s = speech[(v, it.text)]
    lead = np.zeros(int(round(LEAD_S * SAMPLE_RATE)), dtype=np.int16)
    clean = np.concatenate([lead, s])
    start, end = speech_bounds(clean)
    if end <= start:
        raise RuntimeError(f"{v.spec} produced no audible speech for {it.text!r}")
    tail = int(math.ceil((end + TAIL_S) * SAMPLE_RATE)) - len(clean)
    if tail > 0:
        clean = np.concatenate([clean, np.zeros(tail, dtype=np.int16)])
    audio = clean
    if it.condition == "pink":
        audio = mix_at_snr(clean, pink_noise(len(clean) / SAMPLE_RATE + 0.1, seed=it.seed), SNR_DB)
    elif it.condition == "babble":
        audio = mix_at_snr(clean, babble(len(clean) / SAMPLE_RATE + 0.1, babble_src, it.seed, exclude=v.id),
                           SNR_DB)
    elif it.condition == "room":
        audio = in_room(clean, it.seed)
    write_wav16(out / it.file, audio)
    row.update(wake=it.set == "positive", transcript=it.transcript, speaker=v.id, speech_end_s=round(end, 3),
               kind="command" if it.set == "positive" else "negative", voice=v.spec, split=v.split,
               speech_start_s=round(start, 3), text=it.text)
    if it.set == "positive":
        w_start, w_end = speech_bounds(speech[(v, WAKE_PHRASE)])
        # the phrase alone starts where the sentence starts (same voice, same engine lead-in)
        offset = start - w_start
        row["wake_start_s"] = round(start, 3)
        row["wake_end_s"] = round(min(end, offset + w_end), 3)
    return row


def load_wake_corpus(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The manifest rows with absolute ``path`` and ``duration_s`` added (no validation beyond existence)."""
    root = Path(folder).expanduser().resolve()
    rows = []
    for line in (root / MANIFEST).read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        p = Path(r["wav"])
        r["path"] = str(p if p.is_absolute() else root / p)
        if not Path(r["path"]).is_file():
            raise FileNotFoundError(r["path"])
        rows.append(r)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.wake_corpus", description="Build the wake-word corpus into OUT.")
    ap.add_argument("out", metavar="OUT")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    manifest = build_wake_corpus(args.out, quick=args.quick, progress=not args.no_progress)
    rows = load_wake_corpus(manifest.parent)
    from collections import Counter

    from core.audio import read_wav_info

    secs = Counter()
    for r in rows:
        info = read_wav_info(Path(r["path"]))
        secs[r["set"]] += info.frames / info.rate
    print(f"{manifest} ({time.monotonic() - t0:.1f} s): {len(rows)} files; "
          + ", ".join(f"{k} {v / 60:.1f} min" for k, v in secs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
