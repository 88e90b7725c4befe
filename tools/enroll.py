"""Enrollment: turn a few utterances of a person into a voiceprint (``python -m pipeline enroll``).

* ``enroll NAME WAV...``   — from recordings (any PCM WAV: resampled to 16 kHz with soxr, stereo
  averaged to mono); each must hold at least 0.5 s of speech.
* ``enroll NAME --mic``    — prompts the person to read ``--phrases`` sentences and records each from
  the configured microphone (``[audio] device``) with PyAudio; a take with too little speech is
  asked for again. No audio for ``NO_AUDIO_S`` (no microphone, or it stopped): one line saying
  so, exit 2 — the person at the kiosk is waiting, so the command does not wait for a device.
* ``enroll --list`` / ``enroll --delete NAME``.

Voiceprints go to ``<[metrics] state_dir>/voiceprints/<engine>.json`` (see :mod:`engines.speaker.voiceprints`);
a running Vigil picks up the change without a restart. A damaged file is reported in one line
(exit 2) and left as it is, for a person to repair or remove.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from engines.speaker.voiceprints import VoiceprintError, VoiceprintStore, validate_name

PHRASES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please turn on the lights in the living room.",
    "What will the weather be like tomorrow morning?",
    "Set a timer for ten minutes and remind me to call home.",
    "My voice is my passport, verify me.",
)


NO_AUDIO_S = 5.0  # --mic: this long without a single frame means there is no microphone to record from
_MIC_HINT_FOR_RUN = "to run without a microphone use --input PATH.wav"  # the pipeline's advice, not enroll's


class EnrollError(ValueError):
    """A one-line reason enrollment cannot proceed (bad WAV, too little speech, bad name)."""


def open_store(config, engine_name: str, dim: int) -> VoiceprintStore:
    return VoiceprintStore(config.metrics.state_dir, engine=engine_name, dim=dim)


def engine_dims(config) -> tuple[str, int]:
    """The engine name and embedding size without loading a model when it can be avoided."""
    if config.speaker.engine == "resemblyzer":
        return "resemblyzer", 256
    engine = load_engine(config)
    return engine.name, engine.dim


def load_engine(config):
    from engines.speaker import SpeakerError, make_speaker_engine
    from models.provision import speaker_weights

    try:
        return make_speaker_engine(config.speaker, speaker_weights(config.speaker, config.models.dir))
    except SpeakerError as exc:
        raise EnrollError(f"speaker engine: {exc}") from None


def embed_wavs(engine, paths: Iterable[Path]) -> list[np.ndarray]:
    from core.audio import AudioFormatError, load_wav
    from engines.speaker import SpeakerError

    embeddings = []
    for path in paths:
        path = Path(path)
        try:
            audio = load_wav(path)
        except FileNotFoundError:
            raise EnrollError(f"{path}: no such file") from None
        except (AudioFormatError, OSError) as exc:
            msg = str(exc)
            raise EnrollError(msg if str(path) in msg else f"{path}: {msg}") from None
        try:
            embeddings.append(engine.embed(audio))
        except SpeakerError as exc:
            raise EnrollError(f"{path}: {exc}") from None
    return embeddings


def _say(text: str) -> None:
    print(text, flush=True)  # a prompt must reach the person (or a pipe) before recording starts


def _no_microphone(source, waited_s: float) -> EnrollError:
    """The one line for "no audio came": the source's own reason when it has one (no device, lost)."""
    detail = getattr(source, "detail", "") if getattr(source, "state", "") in ("no_device", "lost") else ""
    detail = detail.replace(_MIC_HINT_FOR_RUN, "").strip().rstrip(";").strip()
    return EnrollError(f"no microphone: {detail or f'no audio came for {waited_s:.0f} s'}")


def record_takes(config, phrases: int, seconds: float, say: Callable[[str], None] = _say,
                 source_factory=None, retries: int = 2, no_audio_s: float = NO_AUDIO_S) -> list[np.ndarray]:
    """Prompt for and record ``phrases`` takes; each take must hold enough speech (else asked again).

    EnrollError "no microphone: ..." when no audio comes for ``no_audio_s`` (none at all, or it stopped).
    """
    from engines.capture.mic import PyAudioSource
    from engines.speaker import SpeakerError, prepare

    device = config.audio.device or None
    source = (source_factory or (lambda: PyAudioSource(device=device, frame_samples=config.audio.frame_samples)))()
    takes: list[np.ndarray] = []
    frames = source.frames(idle_s=min(0.5, no_audio_s))  # None while no audio comes: we decide how long to wait
    mic_log = logging.getLogger("engines.capture.mic")
    mic_level = mic_log.level
    mic_log.setLevel(logging.ERROR)  # its state lines advise `run --input`; enroll says it in its own one line
    try:
        for i in range(phrases):
            for attempt in range(retries + 1):
                say(f"[{i + 1}/{phrases}] Please say: \"{PHRASES[i % len(PHRASES)]}\" (recording {seconds:.0f} s)")
                start = last_audio = time.monotonic()
                chunks = []
                for item in frames:
                    if item is None:
                        if time.monotonic() - last_audio >= no_audio_s:
                            raise _no_microphone(source, no_audio_s)
                        continue
                    last_audio = time.monotonic()
                    if not chunks:
                        start = last_audio  # count from the first audio, not from the device open
                    chunks.append(item[0])
                    if time.monotonic() - start >= seconds:
                        break
                audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
                try:
                    prepare(audio)
                except SpeakerError as exc:
                    if attempt == retries:
                        raise EnrollError(f"take {i + 1}: {exc} — check the microphone") from None
                    say(f"  not enough speech ({exc}); once more, please.")
                    continue
                takes.append(audio)
                break
    finally:
        mic_log.setLevel(mic_level)
        source.close()
    return takes


def enroll_from_audio(config, name: str, audios: list[np.ndarray], engine=None) -> int:
    from engines.speaker import SpeakerError

    engine = engine or load_engine(config)
    try:
        embeddings = [engine.embed(a) for a in audios]
    except SpeakerError as exc:
        raise EnrollError(str(exc)) from None
    store = open_store(config, engine.name, engine.dim)
    store.enroll(name, embeddings)
    return len(embeddings)


def cmd_enroll(args, config) -> int:
    """The CLI command; returns the exit code (2 with a one-line reason on bad input)."""

    def fail(msg: str) -> int:
        sys.stderr.write(f"vigil: error: enroll: {msg}\n")
        return 2

    modes = sum(bool(x) for x in (args.list, args.delete is not None, args.mic, bool(args.wavs)))
    try:
        if args.list:
            if args.name or args.wavs or args.mic or args.delete is not None:
                return fail("--list takes no other arguments")
            name, dim = engine_dims(config)
            store = open_store(config, name, dim)
            info = store.info()
            if not info:
                print(f"no voiceprints enrolled ({store.path})")
            for who, entry in info.items():
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.get("enrolled_at", 0)))
                print(f"{who}\t{entry.get('utterances', '?')} utterance(s)\tenrolled {when}")
            return 0
        if args.delete is not None:
            if args.name or args.wavs or args.mic:
                return fail("--delete NAME takes no other arguments")
            name, dim = engine_dims(config)
            store = open_store(config, name, dim)
            stored = store.find(args.delete)
            if not store.delete(args.delete):
                return fail(f"no voiceprint named {args.delete!r} (see enroll --list)")
            print(f"deleted {stored}")
            return 0
        if not args.name:
            return fail("give NAME and WAV files, NAME --mic, --list or --delete NAME")
        validate_name(args.name)
        if args.mic and args.wavs:
            return fail("give WAV files or --mic, not both")
        if modes == 0:
            return fail(f"no audio for {args.name!r}: give WAV files or --mic")
        if args.phrases is not None and not 1 <= args.phrases <= 10:
            return fail("--phrases must be between 1 and 10")
        if args.seconds is not None and not 1.0 <= args.seconds <= 30.0:
            return fail("--seconds must be between 1 and 30")
        engine = load_engine(config)
        if args.mic:
            audios = record_takes(config, args.phrases or 3, args.seconds or 4.0)
            n = enroll_from_audio(config, args.name, audios, engine)
        else:
            embeddings = embed_wavs(engine, args.wavs)
            open_store(config, engine.name, engine.dim).enroll(args.name, embeddings)
            n = len(embeddings)
        print(f"enrolled {args.name} from {n} utterance(s) ({engine.name})")
        return 0
    except (EnrollError, VoiceprintError) as exc:
        return fail(str(exc).splitlines()[0])
    except OSError as exc:  # the voiceprint folder cannot be written (read-only, full, a file in the way)
        return fail(f"cannot write voiceprints: {exc.strerror or exc} ({exc.filename or config.metrics.state_dir})")


def add_arguments(parser) -> None:
    parser.add_argument("name", nargs="?", help="who is enrolling (1-32 letters, digits, space . _ ' -; "
                        "any case: Carol and carol are one person)")
    parser.add_argument("wavs", nargs="*", type=Path, metavar="WAV", help="recordings of NAME (any PCM WAV)")
    parser.add_argument("--mic", action="store_true", help="record NAME from the microphone instead")
    parser.add_argument("--phrases", type=int, help="--mic: how many phrases to record (default 3)")
    parser.add_argument("--seconds", type=float, help="--mic: seconds per phrase (default 4)")
    parser.add_argument("--list", action="store_true", help="list enrolled voices")
    parser.add_argument("--delete", metavar="NAME", help="delete NAME's voiceprint")
