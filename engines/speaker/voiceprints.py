"""Enrolled voices: one JSON file per speaker-ID engine under ``<state_dir>/voiceprints/``.

``<engine>.json`` = ``{"version": 1, "engine": "resemblyzer", "dim": 256, "speakers":
{"alice": {"embedding": [...256 floats], "utterances": 3, "enrolled_at": 1764000000.0}}}``.
Embeddings of one engine mean nothing to another, so a file (or an embedding) whose engine
or size differs from the store's is refused, never compared.  Every write goes to a
temporary file that is fsynced and renamed over the old one (and the directory fsynced), so
a crash leaves either the old or the new file, never a torn one; the speaker worker reloads
the file when its mtime/size changes, so enrolling while Vigil runs takes effect at once.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from engines.speaker import SpeakerError, unit_vector

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._'-]{0,31}$")
RESERVED = {"unknown"}
FORMAT_VERSION = 1


class VoiceprintError(ValueError):
    """A bad name, an embedding of the wrong engine/size, or an unreadable voiceprint file."""


def validate_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise VoiceprintError(f"bad name {name!r}: 1-32 characters, letters, digits, space, . _ ' - "
                              "(starting with a letter or digit)")
    if name.lower() in RESERVED:
        raise VoiceprintError(f"bad name {name!r}: reserved")
    return name


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
        return (st.st_mtime_ns, st.st_size)

    def reload(self) -> None:
        stamp = self._file_stamp()
        speakers: dict[str, dict] = {}
        if stamp is not None:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                raise VoiceprintError(f"{self.path}: unreadable voiceprint file ({exc})") from exc
            if not isinstance(data, dict) or not isinstance(data.get("speakers"), dict):
                raise VoiceprintError(f"{self.path}: not a voiceprint file")
            if data.get("engine") != self.engine or data.get("dim") != self.dim:
                raise VoiceprintError(f"{self.path}: voiceprints of engine {data.get('engine')!r} "
                                      f"(dim {data.get('dim')}), this store is {self.engine!r} (dim {self.dim}); "
                                      "re-enroll with this engine")
            for name, entry in data["speakers"].items():
                emb = np.asarray(entry.get("embedding", []), dtype=np.float64)
                if emb.shape != (self.dim,):
                    raise VoiceprintError(f"{self.path}: voiceprint {name!r} has {emb.size} values, "
                                          f"expected {self.dim}")
                speakers[name] = entry
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
        embs = [self._check(e) for e in (embeddings if isinstance(embeddings, list) else list(np.atleast_2d(embeddings)))]
        if not embs:
            raise VoiceprintError("no embeddings to enroll")
        self.refresh()
        mean = _unit(np.mean(embs, axis=0))
        speakers = dict(self._speakers)
        speakers[name] = {"embedding": [round(float(x), 7) for x in mean], "utterances": len(embs),
                          "enrolled_at": round(time.time(), 3)}
        self._write(speakers)

    def delete(self, name: str) -> bool:
        """Remove ``name``; False when no such voiceprint."""
        self.refresh()
        if name not in self._speakers:
            return False
        speakers = {n: e for n, e in self._speakers.items() if n != name}
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
