"""The benchmark corpus: a folder of WAV files plus ``manifest.jsonl`` (DESIGN.md "Contracts").

Two halves:

* ``load_corpus(folder)`` reads and validates *any* folder in the contract's
  format, including corpora we never made, and says exactly which line is
  wrong and why — a benchmark that silently skips a bad line measures
  something else than its user thinks.
* ``build_default_corpus(out_dir)`` synthesizes the default corpus with the
  offline TTS engines (espeak-ng, flite, the Piper neural voice): wake-phrase
  commands (answered by skills), wake-phrase questions (answered by the LLM),
  the hesitation set (a request with a 0.4–0.8 s pause in the middle: "set a
  timer for … ten minutes"), negatives without the wake phrase (near misses
  included) and noise-only clips.  The ground truth ``speech_end_s`` is
  measured from the synthesized samples with ``bench.synth.speech_bounds``.

Every spoken file is made under a *condition* (``CONDITIONS``: how the clean
synthesis is changed before it is written, e.g. a room or a noise; "clean" is
the default).  A new condition is one entry there and its name in
``build_default_corpus(conditions=...)``: the plan, the file names, the
manifest's ``condition`` and the build stamp follow.

``python -m bench.corpus OUT [--quick]`` builds it from the shell.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any

import numpy as np

from bench import synth
from bench.rooms import in_room
from bench.synth import engine_available, pink_noise, speech_bounds, tts_samples, write_wav16
from core.audio import SAMPLE_RATE, AudioFormatError, read_wav_info

MANIFEST = "manifest.jsonl"
STAMP = "corpus_version"
KINDS = ("command", "question", "negative")

# Bump when anything about how the default corpus is made changes (texts are hashed in anyway).
CORPUS_VERSION = 3  # 2: the Piper voice, the hesitation set, conditions; 3: the room condition


# =============================================================================
# The format
# =============================================================================

class CorpusError(ValueError):
    """A corpus folder or one of its manifest lines is unusable; the message says where and why."""


@dataclass(frozen=True)
class Utterance:
    """One manifest line, validated: a WAV file and what is true about it."""
    wav: Path              # absolute
    wake: bool             # the file starts with the wake phrase
    transcript: str        # the request after the wake phrase (wake) or the whole sentence (negative)
    speaker: str           # who speaks ("" for noise-only clips)
    speech_end_s: float    # where speech ends, seconds from the file's start
    kind: str              # "command" | "question" | "negative"
    voice: str = ""        # how it was made (e.g. "espeak-ng:en-us:190"); optional, informative
    condition: str = ""    # the recording condition ("clean", "room", ...); optional
    # A hesitation: where the mid-request pause starts and ends (seconds); optional. The words
    # after it must be in the final transcript, or the answer started too early (a cut-off).
    pause_s: tuple[float, float] | None = None

    @property
    def hesitation(self) -> bool:
        return self.pause_s is not None

    @property
    def duration_s(self) -> float:
        """The file's length from its WAV header (no samples are read)."""
        info = read_wav_info(self.wav)
        return info.frames / info.rate


# key -> (accepted JSON types, description for the error message)
_REQUIRED: dict[str, tuple[tuple[type, ...], str]] = {
    "wav": ((str,), "a string (a path)"),
    "wake": ((bool,), "true or false"),
    "transcript": ((str,), "a string"),
    "speaker": ((str,), "a string"),
    "speech_end_s": ((int, float), "a number of seconds"),
    "kind": ((str,), f"one of {', '.join(KINDS)}"),
}


def load_corpus(folder: str | os.PathLike) -> list[Utterance]:
    """Read and validate ``folder/manifest.jsonl``; every problem names the line number.

    Each line is one JSON object with ``wav`` (relative to the folder, or
    absolute), ``wake``, ``transcript``, ``speaker``, ``speech_end_s``,
    ``kind``.  Extra keys are allowed and ignored, except ``voice`` (kept when
    it is a string).  Blank lines are skipped.  The WAV must exist, be a
    readable WAV, and ``speech_end_s`` must lie within it.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CorpusError(f"{root}: not a folder")
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise CorpusError(f"{root}: no {MANIFEST} (a corpus is a folder of WAV files plus {MANIFEST})")
    root = root.resolve()
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CorpusError(f"{manifest}: cannot read ({e})") from e
    out = [_parse_line(root, manifest, n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not out:
        raise CorpusError(f"{manifest}: no utterances")
    return out


def _parse_line(root: Path, manifest: Path, lineno: int, line: str) -> Utterance:
    def bad(problem: str) -> CorpusError:
        return CorpusError(f"{manifest}, line {lineno}: {problem}")

    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise bad(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise bad(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise bad(f"missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
    for key, (types, what) in _REQUIRED.items():
        value = obj[key]
        # bool is an int in Python; a JSON true is not a number of seconds, and 1 is not a wake flag
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise bad(f"{key!r} must be {what}, got {json.dumps(value)}")
    if obj["kind"] not in KINDS:
        raise bad(f"unknown kind {obj['kind']!r} (expected one of {', '.join(KINDS)})")
    voice = obj.get("voice", "")
    if not isinstance(voice, str):
        raise bad(f"'voice' must be a string when present, got {json.dumps(voice)}")
    condition = obj.get("condition", "")
    if not isinstance(condition, str):
        raise bad(f"'condition' must be a string when present, got {json.dumps(condition)}")
    pause = obj.get("pause_s")
    if pause is not None and not (isinstance(pause, list) and len(pause) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in pause)
            and 0 <= pause[0] < pause[1]):
        raise bad(f"'pause_s' must be [start, end] seconds with start < end when present, got {json.dumps(pause)}")
    if not obj["wav"].strip():
        raise bad("'wav' is empty")

    wav = Path(obj["wav"]).expanduser()
    wav = wav if wav.is_absolute() else root / wav
    wav = Path(os.path.abspath(wav))
    if not wav.is_file():
        raise bad(f"wav {obj['wav']!r} does not exist ({wav})")
    try:
        info = read_wav_info(wav)
    except AudioFormatError as e:
        raise bad(f"wav {obj['wav']!r} is not usable audio: {e}") from None
    duration = info.frames / info.rate
    end = float(obj["speech_end_s"])
    if not math.isfinite(end) or not 0.0 <= end <= duration:
        raise bad(f"speech_end_s {obj['speech_end_s']} lies outside the file (0 to {duration:.3f} s)")
    if pause is not None and pause[1] > end:
        raise bad(f"pause_s {json.dumps(pause)} ends after speech_end_s {end}")
    return Utterance(wav=wav, wake=obj["wake"], transcript=obj["transcript"], speaker=obj["speaker"],
                     speech_end_s=end, kind=obj["kind"], voice=voice, condition=condition,
                     pause_s=(float(pause[0]), float(pause[1])) if pause is not None else None)


# =============================================================================
# The default corpus: what it says and who says it
# =============================================================================

WAKE_PHRASE = "Hey Jarvis"
LEAD_S = 0.5    # silence before the TTS output (synth pad)
TAIL_S = 1.2    # at least this much silence after speech_end_s (the endpointer needs it)
NOISE_S = 10.0  # length of each noise-only clip


@dataclass(frozen=True)
class Voice:
    id: str               # the manifest's "speaker"
    engine: str
    name: str             # the engine's voice name
    rate: int | None = None

    @property
    def spec(self) -> str:
        """The manifest's "voice": engine:name[:rate]."""
        return f"{self.engine}:{self.name}" + (f":{self.rate}" if self.rate else "")

    @property
    def slug(self) -> str:
        return self.id + (f"-{self.rate}" if self.rate else "")


# en-us at 190 wpm is the same timbre as en-us, so it is the same speaker (a person talking faster);
# its "voice" field tells the two apart.
VOICES: tuple[Voice, ...] = (
    Voice("espeak-en-us", "espeak-ng", "en-us"),
    Voice("espeak-en-gb", "espeak-ng", "en-gb"),
    Voice("espeak-en-f3", "espeak-ng", "en+f3"),
    Voice("espeak-en-m3", "espeak-ng", "en+m3"),
    Voice("espeak-en-us", "espeak-ng", "en-us", rate=190),
    Voice("flite-kal", "flite", "kal"),
    Voice("flite-slt", "flite", "slt"),
    Voice("flite-rms", "flite", "rms"),
    Voice("flite-awb", "flite", "awb"),
    # The neural voice: natural prosody (the turn detector listens to it), at three speaking rates.
    Voice("piper-joe", "piper", "joe"),
    Voice("piper-joe", "piper", "joe", rate=140),
    Voice("piper-joe", "piper", "joe", rate=200),
)

# Commands: things a skill answers in code (time, date, timers, capabilities) — a 135M model invents them.
COMMANDS = ("what time is it", "set a timer for five minutes", "what is the date today", "what can you do")
# Questions: short general-knowledge facts with one-line answers, so the LLM route is exercised.
QUESTIONS = ("what is the capital of France", "how many legs does a spider have",
             "who wrote Romeo and Juliet", "what is the boiling point of water")
# Negatives: no wake phrase.  Near misses sound like it; ordinary sentences are household talk.
NEAR_MISSES = ("hey marvin, what is the weather", "I bought jars of honey", "hey travis, can you pass the salt",
               "did you see the jars in the garage", "harvest season starts in September")
ORDINARY = ("the bus leaves at half past seven", "please remember to water the plants on Sunday",
            "my sister is visiting us next week", "the library closes early on Fridays",
            "we need more milk, eggs and bread", "the meeting was moved to the afternoon",
            "turn left at the second traffic light", "it has been raining all morning",
            "the children are playing in the garden", "I think the soup needs a little more salt")
NOISE_DBFS = (-50, -45, -40, -35, -30, -25)   # pink-noise levels of the noise-only clips (RMS)

# The hesitation set: a request with a pause in the middle, where a person looks for the word.
# (before the pause, after it); the pause lengths cycle through HESITATION_PAUSES_S.
HESITATIONS = (("set a timer for", "ten minutes"), ("what is the capital of", "Australia"),
               ("what is the boiling point of", "water"), ("how many legs does", "a spider have"),
               ("tell me something about", "the moon"), ("who wrote", "Romeo and Juliet"))
HESITATION_PAUSES_S = (0.4, 0.5, 0.6, 0.7, 0.8)
HESITATION_VOICES = ("piper:joe", "piper:joe:140", "piper:joe:200", "flite:slt", "flite:kal", "espeak-ng:en-us",
                     "espeak-ng:en-gb")

QUICK_VOICES = ("espeak-ng:en-us", "flite:slt", "piper:joe")
QUICK_REQUESTS = ("what time is it", "set a timer for five minutes", "what is the capital of France")
QUICK_NEGATIVES = ("hey marvin, what is the weather", "I bought jars of honey")
QUICK_HESITATIONS = (("piper:joe", HESITATIONS[0]), ("flite:slt", HESITATIONS[1]))


def _clean(audio: np.ndarray, seed: int) -> np.ndarray:
    return audio


# How a spoken file is recorded: name -> (clean 16 kHz int16 audio, seed) -> audio of the same rate.
# The condition may lengthen the audio (a reverberation tail) but must keep the speech where it was,
# since the ground truth (speech_end_s, pause_s) is measured on the clean synthesis.
# "room": a far-field room, the voice 1-2 m away between hard walls (bench/rooms.py).
CONDITIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"clean": _clean, "room": in_room}
DEFAULT_CONDITIONS = ("clean", "room")
QUICK_CONDITIONS = ("clean",)
# A condition other than "clean" records the wake requests again; the hesitation set and the negatives
# stay clean only (the wake corpus's room sets measure false wakes in a room).
CONDITION_KINDS = ("command", "question")


@dataclass(frozen=True)
class Item:
    """One file to make: either speech (voice set) or noise-only (noise_dbfs set)."""
    file: str
    kind: str
    transcript: str
    spoken: str = ""
    voice: Voice | None = None
    noise_dbfs: float | None = None
    seed: int = 0
    condition: str = "clean"
    after_pause: str = ""  # a hesitation: spoken after a pause of pause_s
    pause_s: float = 0.0


def _voice(spec: str) -> Voice:
    return next(v for v in VOICES if v.spec == spec)


def plan(quick: bool = False, conditions: Iterable[str] | None = None) -> list[Item]:
    """Every file of the default corpus, in manifest order (deterministic); ``conditions`` default to
    ``DEFAULT_CONDITIONS`` (``QUICK_CONDITIONS`` for the quick corpus)."""
    conditions = list((QUICK_CONDITIONS if quick else DEFAULT_CONDITIONS) if conditions is None else conditions)
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown or not conditions:
        raise ValueError(f"unknown condition(s) {unknown}; known: {sorted(CONDITIONS)}")
    items: list[Item] = []
    for i, condition in enumerate(conditions):
        tag = "" if condition == "clean" else f"{condition}_"
        items += [dataclass_replace(item, file=tag + item.file, condition=condition,
                                    seed=item.seed + 100_000 * i + k)  # each file its own room, noise...
                  for k, item in enumerate(_spoken_plan(quick))
                  if condition == "clean" or (item.kind in CONDITION_KINDS and not item.after_pause)]
    return items + _noise_plan(quick)


def _spoken_plan(quick: bool) -> list[Item]:
    """The spoken files of one condition."""
    voices = [v for v in VOICES if v.spec in QUICK_VOICES] if quick else list(VOICES)
    requests = [(r, "command" if r in COMMANDS else "question") for r in
                (QUICK_REQUESTS if quick else COMMANDS + QUESTIONS)]
    items: list[Item] = []
    for v in voices:
        for r, kind in requests:
            items.append(Item(f"{v.slug}_{kind}_{_slug(r)}.wav", kind, r, f"{WAKE_PHRASE}, {r}", v))
    hesitations = QUICK_HESITATIONS if quick else [(spec, h) for spec in HESITATION_VOICES for h in HESITATIONS]
    for n, (spec, (before, after)) in enumerate(hesitations):
        v, pause = _voice(spec), HESITATION_PAUSES_S[n % len(HESITATION_PAUSES_S)]
        kind = "command" if before.startswith("set a timer") else "question"
        items.append(Item(f"{v.slug}_hesitation_{_slug(before + ' ' + after)}.wav", kind, f"{before} {after}",
                          f"{WAKE_PHRASE}, {before},", v, after_pause=f"{after}.", pause_s=pause, seed=n))
    if quick:
        negatives = [(voices[i % len(voices)], s) for i, s in enumerate(QUICK_NEGATIVES)]
    else:
        # each voice: one near miss and two ordinary sentences, rotating so every sentence is used
        negatives = []
        for i, v in enumerate(voices):
            negatives.append((v, NEAR_MISSES[i % len(NEAR_MISSES)]))
            negatives += [(v, ORDINARY[(2 * i + j) % len(ORDINARY)]) for j in range(2)]
    for v, s in negatives:
        items.append(Item(f"{v.slug}_negative_{_slug(s)}.wav", "negative", s, s, v))
    return items


def _noise_plan(quick: bool) -> list[Item]:
    """Noise-only clips: there is nothing to record under a condition, so they are made once."""
    levels = [-40] if quick else list(NOISE_DBFS)
    return [Item(f"noise_pink_minus{-db}dBFS.wav", "negative", "", noise_dbfs=db, seed=1000 + i)
            for i, db in enumerate(levels)]


def _slug(text: str) -> str:
    words = "".join(c if c.isalnum() else " " for c in text.lower()).split()
    return "-".join(words)[:48]


def _stamp(items: list[Item], quick: bool) -> str:
    """What must match for an existing build to be reused: version, size and a hash of the plan."""
    rule = (synth.FRAME_S, synth.REL_THRESHOLD_DB, synth.ABS_FLOOR_DBFS, synth.BLIP_MAX_S, synth.BLIP_GAP_S)
    h = hashlib.sha256(json.dumps([CORPUS_VERSION, repr(items), rule, LEAD_S, TAIL_S, NOISE_S]).encode())
    h = h.hexdigest()[:16]
    return f"vigil-corpus v{CORPUS_VERSION} {'quick' if quick else 'full'} {h}"


# =============================================================================
# Building
# =============================================================================

def build_default_corpus(out_dir: str | os.PathLike, *, quick: bool = False, progress: bool = True,
                         conditions: Iterable[str] | None = None) -> Path:
    """Synthesize the default corpus into ``out_dir`` and return its manifest path.

    Idempotent: when ``out_dir/manifest.jsonl`` exists, the ``corpus_version``
    stamp matches this plan and every listed WAV is there, it returns at once.
    Otherwise it (re)builds: WAVs first, then the manifest (atomically), then
    the stamp — so an interrupted build is never taken for a finished one.
    A lock file keeps two concurrent builders (e.g. parallel test workers)
    from writing the same files at once.
    """
    items = plan(quick, conditions)
    engines = sorted({i.voice.engine for i in items if i.voice})
    return build_locked(out_dir, [i.file for i in items], _stamp(items, quick), engines,
                        lambda out: _make_all(out, items, progress), "the default corpus")


def build_locked(out_dir: str | os.PathLike, files: list[str], stamp: str, engines: list[str],
                 make_rows: Callable[[Path], list[dict[str, Any]]], what: str) -> Path:
    """Build a corpus folder once: idempotent (stamp + files), locked against concurrent builders,
    WAVs then manifest then stamp (so an interrupted build is never taken for a finished one)."""
    out = Path(out_dir).expanduser().resolve()
    if _is_built(out, files, stamp):
        return out / MANIFEST
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_built(out, files, stamp):  # another process finished it while we waited
            return out / MANIFEST
        for engine in engines:
            if not engine_available(engine):
                raise FileNotFoundError(f"{engine} is not installed; {what} needs it (apt-get install {engine})")
        (out / STAMP).unlink(missing_ok=True)
        stale = _listed_wavs(out) - {out / f for f in files}
        rows = make_rows(out)
        _write_atomic(out / MANIFEST, "".join(json.dumps(r) + "\n" for r in rows))
        for p in stale:
            p.unlink(missing_ok=True)
        _write_atomic(out / STAMP, stamp + "\n")
    return out / MANIFEST


def _is_built(out: Path, files: list[str], stamp: str) -> bool:
    try:
        if (out / STAMP).read_text().strip() != stamp or not (out / MANIFEST).is_file():
            return False
    except OSError:
        return False
    return all((out / f).is_file() for f in files)


def _listed_wavs(out: Path) -> set[Path]:
    """WAVs the previous manifest in ``out`` listed inside ``out`` (to clean up after a rebuild)."""
    found: set[Path] = set()
    try:
        lines = (out / MANIFEST).read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        try:
            p = Path(os.path.abspath(out / json.loads(line)["wav"]))
        except (ValueError, KeyError, TypeError):
            continue
        if p.parent == out and p.suffix == ".wav":
            found.add(p)
    return found


def _make_all(out: Path, items: list[Item], progress: bool) -> list[dict[str, Any]]:
    """Make every file (TTS runs in subprocesses, so two threads keep both cores busy)."""
    from tqdm import tqdm

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool, \
            tqdm(total=len(items), desc="corpus", unit="file", disable=not progress, leave=False) as bar:
        rows = []
        for row in pool.map(lambda it: _make(out, it), items):
            rows.append(row)
            bar.update(1)
    return rows


def _make(out: Path, item: Item) -> dict[str, Any]:
    """Write one WAV and return its manifest row."""
    if item.voice is None:
        assert item.noise_dbfs is not None
        samples = pink_noise(NOISE_S, rms=32768.0 * 10.0 ** (item.noise_dbfs / 20.0), seed=item.seed)
        write_wav16(out / item.file, samples)
        return {"wav": item.file, "wake": False, "transcript": "", "speaker": "", "speech_end_s": 0.0,
                "kind": "negative", "voice": f"pink-noise:{item.noise_dbfs:g}dBFS"}
    v = item.voice
    lead = np.zeros(int(round(LEAD_S * SAMPLE_RATE)), dtype=np.int16)
    audio = np.concatenate([lead, _spoken(v, item.spoken)])
    start, end = speech_bounds(audio)
    if end <= start:
        raise RuntimeError(f"{v.spec} produced no audible speech for {item.spoken!r}")
    extra: dict[str, Any] = {}
    if item.after_pause:  # a hesitation: cut at the end of the first part, the pause, the rest
        rest = _spoken(v, item.after_pause)
        rest_start, _ = speech_bounds(rest)
        pause_end = end + item.pause_s
        audio = np.concatenate([audio[: int(round(end * SAMPLE_RATE))],
                                np.zeros(int(round(item.pause_s * SAMPLE_RATE)), dtype=np.int16),
                                rest[int(round(rest_start * SAMPLE_RATE)):]])
        extra = {"pause_s": [round(end, 3), round(pause_end, 3)], "after_pause": item.after_pause.rstrip(".")}
        _, end = speech_bounds(audio)
    tail = int(math.ceil((end + TAIL_S) * SAMPLE_RATE)) - len(audio)
    if tail > 0:
        audio = np.concatenate([audio, np.zeros(tail, dtype=np.int16)])
    audio = CONDITIONS[item.condition](audio, item.seed)
    write_wav16(out / item.file, audio)
    return {"wav": item.file, "wake": item.kind != "negative", "transcript": item.transcript,
            "speaker": v.id, "speech_end_s": round(end, 3), "kind": item.kind, "voice": v.spec,
            "condition": item.condition, "speech_start_s": round(start, 3),
            "text": item.spoken + (" " + item.after_pause if item.after_pause else ""), **extra}


def _spoken(voice: Voice, text: str) -> np.ndarray:
    return tts_samples(text, voice.engine, voice.name, voice.rate)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# =============================================================================
# Summary and CLI
# =============================================================================

def summarize(utterances: Iterable[Utterance]) -> str:
    """Counts per kind, speaker and voice, and total duration — what a person wants to see after a build."""
    utts = list(utterances)
    durations = [u.duration_s for u in utts]
    kinds = Counter(u.kind for u in utts)
    speakers = Counter(u.speaker or "(noise)" for u in utts)
    voices = Counter(u.voice or "(none)" for u in utts)
    neg_s = sum(d for u, d in zip(utts, durations) if u.kind == "negative")
    lines = [f"{len(utts)} files, {sum(durations) / 60:.1f} min "
             f"({neg_s / 60:.1f} min of negatives)",
             "by kind:    " + ", ".join(f"{k} {kinds[k]}" for k in KINDS if kinds[k]),
             "by speaker: " + ", ".join(f"{s} {n}" for s, n in sorted(speakers.items())),
             "by voice:   " + ", ".join(f"{v} {n}" for v, n in sorted(voices.items())),
             f"hesitations: {sum(1 for u in utts if u.hesitation)}; conditions: "
             + ", ".join(f"{c} {n}" for c, n in sorted(Counter(u.condition or "clean" for u in utts).items()))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.corpus",
                                 description="Build the default benchmark corpus (offline TTS) into OUT.")
    ap.add_argument("out", metavar="OUT", help="output folder (manifest.jsonl + WAV files)")
    ap.add_argument("--quick", action="store_true", help="a small corpus for CI (a few seconds)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    try:
        manifest = build_default_corpus(args.out, quick=args.quick, progress=not args.no_progress)
        utts = load_corpus(manifest.parent)
    except (CorpusError, FileNotFoundError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{manifest} ({time.monotonic() - t0:.1f} s)")
    print(summarize(utts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
