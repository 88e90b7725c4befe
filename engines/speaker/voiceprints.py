"""Enrolled voices: one JSON file per speaker-ID engine under ``<state_dir>/voiceprints/``.

``<engine>.json`` = ``{"version": 1, "engine": "resemblyzer", "dim": 256, "speakers":
{"alice": {"embedding": [...256 floats], "utterances": 3, "enrolled_at": 1764000000.0}}}``.
Embeddings of one engine mean nothing to another, so a file (or an embedding) whose engine
or size differs from the store's is refused, never compared.  Every write goes to a
temporary file that is fsynced and renamed over the old one (and the directory fsynced), so
a crash leaves either the old or the new file, never a torn one; the speaker worker reloads
the file when its mtime/size changes, so enrolling while Vigil runs takes effect at once.

A damaged file (not JSON, wrong inner types, a non-finite embedding, two entries for one name)
is a one-line ``VoiceprintError`` on every read and every write: it is never overwritten, so a
person can repair it, and the speaker worker answers "unknown" for everyone until then. Names are
compared case-insensitively (``Carol`` and ``carol`` are one person) after Unicode NFC
normalisation, so ``José`` typed either way is one name too.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from engines.speaker import SpeakerError, unit_vector

NAME_RE = re.compile(r"^[^\W_][\w .'-]{0,31}$")  # Unicode letters and digits (\w), then also space . _ ' -
RESERVED = {"unknown"}
FORMAT_VERSION = 1
MAX_FILE_BYTES = 64 << 20  # ~20,000 voices; anything larger is not a voiceprint file


class VoiceprintError(ValueError):
    """A bad name, an embedding of the wrong engine/size, or an unreadable voiceprint file."""


def validate_name(name: str) -> str:
    """The name as stored (stripped, NFC); VoiceprintError if it is not a person's name."""
    name = unicodedata.normalize("NFC", name if isinstance(name, str) else "").strip()
    if not NAME_RE.match(name):
        raise VoiceprintError(f"bad name {name!r}: 1-32 characters, letters, digits, space, . _ ' - "
                              "(starting with a letter or digit)")
    if name.casefold() in RESERVED:
        raise VoiceprintError(f"bad name {name!r}: reserved")
    return name


def _checked_entry(where: str, name: Any, entry: Any, dim: int) -> dict:
    """One speaker's entry as read from the file, or VoiceprintError saying what is wrong with it."""
    try:
        stored = validate_name(name)
    except VoiceprintError as exc:
        raise VoiceprintError(f"{where}: {exc}") from None
    if stored != name:  # find() and enroll look names up in their stored form; this one could never be found
        raise VoiceprintError(f"{where}: name {name!r} is not as enroll writes it ({stored!r}: stripped, NFC)")
    if not isinstance(entry, dict):
        raise VoiceprintError(f"{where}: voiceprint {name!r} is a {type(entry).__name__}, not an object")
    emb = entry.get("embedding")
    if not isinstance(emb, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in emb):
        raise VoiceprintError(f"{where}: voiceprint {name!r}: 'embedding' must be a list of numbers")
    if len(emb) != dim:
        raise VoiceprintError(f"{where}: voiceprint {name!r} has {len(emb)} values, expected {dim}")
    norm = float(np.linalg.norm(np.asarray(emb, dtype=np.float64)))
    if not all(math.isfinite(x) for x in emb) or not math.isfinite(norm) or norm == 0:
        raise VoiceprintError(f"{where}: voiceprint {name!r}: the embedding is zero or not finite")
    utterances = entry.get("utterances", 1)
    if not isinstance(utterances, int) or isinstance(utterances, bool) or not 0 < utterances < 10**6:
        raise VoiceprintError(f"{where}: voiceprint {name!r}: 'utterances' must be a positive count")
    enrolled_at = entry.get("enrolled_at", 0.0)
    if not isinstance(enrolled_at, (int, float)) or isinstance(enrolled_at, bool) or not 0 <= enrolled_at < 1e11:
        raise VoiceprintError(f"{where}: voiceprint {name!r}: 'enrolled_at' must be a Unix time")
    return entry


def _unit(v: np.ndarray) -> np.ndarray:
    try:
        return unit_vector(v, dtype=np.float64)
    except SpeakerError as exc:
        raise VoiceprintError(str(exc)) from None


class VoiceprintStore:
    """The voiceprints of one engine; ``identify`` answers a name or ``"unknown"``."""

    def __init__(self, state_dir: str | os.PathLike, engine: str, dim: int) -> None:
        if not re.match(r"^[a-z0-9_-]+$", engine or ""):
            raise VoiceprintError(f"bad engine name {engine!r}")
        self.engine = engine
        self.dim = int(dim)
        self.dir = Path(state_dir).expanduser() / "voiceprints"
        self.path = self.dir / f"{engine}.json"
        self._speakers: dict[str, dict] = {}
        self._matrix = np.zeros((0, self.dim))
        self._names: list[str] = []
        self._stamp: tuple[int, int] | None = None
        self.reload()

    # -- reading
    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:  # the state dir is a file (NotADirectoryError), no permission, ...
            raise VoiceprintError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        return (st.st_mtime_ns, st.st_size)

    def _read(self) -> dict[str, dict]:
        """The speakers of the file, every field checked; VoiceprintError (one line) if anything is off."""
        where = str(self.path)
        try:
            if self.path.stat().st_size > MAX_FILE_BYTES:
                raise VoiceprintError(f"{where}: unreadable voiceprint file (larger than {MAX_FILE_BYTES >> 20} MB)")
            data = json.loads(self.path.read_bytes().decode("utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            if isinstance(exc, VoiceprintError):
                raise
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:200]
            raise VoiceprintError(f"{where}: unreadable voiceprint file ({reason})") from None
        if not isinstance(data, dict) or not isinstance(data.get("speakers"), dict):
            raise VoiceprintError(f"{where}: not a voiceprint file (no 'speakers' object)")
        if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise VoiceprintError(f"{where}: format version {data.get('version')!r}, this Vigil reads {FORMAT_VERSION}")
        if data.get("engine") != self.engine or data.get("dim") != self.dim:
            raise VoiceprintError(f"{where}: voiceprints of engine {data.get('engine')!r} "
                                  f"(dim {data.get('dim')!r}), this store is {self.engine!r} (dim {self.dim}); "
                                  "re-enroll with this engine")
        speakers: dict[str, dict] = {}
        seen: dict[str, str] = {}
        for name, entry in data["speakers"].items():
            speakers[name] = _checked_entry(where, name, entry, self.dim)
            key = validate_name(name).casefold()
            if key in seen:
                raise VoiceprintError(f"{where}: {seen[key]!r} and {name!r} are one name; keep one of them")
            seen[key] = name
        return speakers

    def reload(self) -> None:
        stamp = self._file_stamp()
        speakers = self._read() if stamp is not None else {}
        self._speakers = speakers
        self._names = sorted(speakers)
        self._matrix = (np.array([_unit(speakers[n]["embedding"]) for n in self._names])
                        if self._names else np.zeros((0, self.dim)))
        self._stamp = stamp

    def refresh(self) -> bool:
        """Reload when the file changed on disk (another process enrolled); True if it did."""
        if self._file_stamp() == self._stamp:
            return False
        self.reload()
        return True

    def names(self) -> list[str]:
        return list(self._names)

    def find(self, name: str) -> str | None:
        """The stored spelling of ``name`` (``carol`` finds ``Carol``), or None."""
        key = unicodedata.normalize("NFC", name if isinstance(name, str) else "").strip().casefold()
        return next((n for n in self._speakers if n.casefold() == key), None)

    def info(self) -> dict[str, dict]:
        return {n: {k: v for k, v in self._speakers[n].items() if k != "embedding"} for n in self._names}

    def _check(self, embedding: np.ndarray) -> np.ndarray:
        emb = np.asarray(embedding, dtype=np.float64).reshape(-1)
        if emb.shape != (self.dim,):
            raise VoiceprintError(f"embedding has {emb.size} values, the {self.engine} store expects {self.dim}")
        return _unit(emb)

    def identify(self, embedding: np.ndarray, threshold: float) -> tuple[str, float]:
        """(best enrolled name, cosine) when the best reaches ``threshold``, else ("unknown", cosine)."""
        emb = self._check(embedding)
        if not self._names:
            return "unknown", 0.0
        scores = self._matrix @ emb
        best = int(np.argmax(scores))
        score = float(scores[best])
        return (self._names[best] if score >= threshold else "unknown"), score

    # -- writing
    def enroll(self, name: str, embeddings: list[np.ndarray] | np.ndarray) -> None:
        """Store ``name``'s voiceprint: the normalised mean of the utterance embeddings (replaces an old one)."""
        name = validate_name(name)
        rows = embeddings if isinstance(embeddings, list) else list(np.atleast_2d(embeddings))
        embs = [self._check(e) for e in rows]
        if not embs:
            raise VoiceprintError("no embeddings to enroll")
        self.refresh()  # a damaged file raises here: it is never overwritten
        mean = _unit(np.mean(embs, axis=0))
        speakers = {n: e for n, e in self._speakers.items() if n != self.find(name)}  # one person, any case
        speakers[name] = {"embedding": [round(float(x), 7) for x in mean], "utterances": len(embs),
                          "enrolled_at": round(time.time(), 3)}
        self._write(speakers)

    def delete(self, name: str) -> bool:
        """Remove ``name`` (any case); False when no such voiceprint."""
        self.refresh()
        stored = self.find(name)
        if stored is None:
            return False
        speakers = {n: e for n, e in self._speakers.items() if n != stored}
        self._write(speakers)
        return True

    def _write(self, speakers: dict[str, dict]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {"version": FORMAT_VERSION, "engine": self.engine, "dim": self.dim, "speakers": speakers}
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{self.engine}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.reload()
