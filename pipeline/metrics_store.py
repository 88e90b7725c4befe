"""MetricsStore: one SQLite row per finished session, under the state dir.

WAL mode so `python -m pipeline report` can read while the pipeline writes. Retention is
bounded (oldest rows deleted) so the file cannot grow for months. A write that fails
(disk full, database locked) is counted and logged, never raised: metrics must not stop
answers. Reading is stricter: a database that is corrupt (or not a database) raises
`MetricsStoreError`, so `report` can say so instead of "0 sessions"; a single row whose JSON is
broken is skipped and counted (`skipped_rows`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("vigil.metrics")


class MetricsStoreError(RuntimeError):
    """The metrics database exists but cannot be read (corrupt, not a database, an I/O error)."""


def _corrupt(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    session INTEGER NOT NULL,
    finished_unix REAL NOT NULL,
    transcript TEXT,
    speaker TEXT,
    route TEXT,
    degraded INTEGER NOT NULL DEFAULT 0,
    response TEXT,
    spans_json TEXT NOT NULL,
    marks_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_finished ON sessions(finished_unix);
"""


class MetricsStore:
    def __init__(self, state_dir: str | Path, run_id: str, retention: int = 10_000, *, open_now: bool = True) -> None:
        """`open_now=False` (a reader such as `report`): open on first use, where a failure is the caller's."""
        self.path = Path(state_dir) / "metrics.db"
        self.run_id = run_id
        self.retention = retention
        self.write_errors = 0
        self.skipped_rows = 0  # rows the last recent() skipped: their JSON was broken
        self._db: sqlite3.Connection | None = None
        if not open_now:
            return
        try:  # an unwritable state dir (read-only filesystem...) must not stop the pipeline from starting
            self._connect()
        except (sqlite3.Error, OSError) as exc:
            log.warning("metrics store %s unavailable; metrics are dropped until it opens: %s", self.path, exc)

    def _connect(self) -> sqlite3.Connection:
        """The connection, opened (and the schema made) on first use; retried after a failure."""
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=0.5, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def record(self, session: int, *, transcript: str, speaker: str, route: str, degraded: bool,
               response: str, spans: dict[str, float], marks: dict[str, int]) -> bool:
        """Store one finished session; False (counted, logged) if the database refused it."""
        try:
            db = self._connect()
            db.execute(
                "INSERT INTO sessions (run_id, session, finished_unix, transcript, speaker, route, degraded,"
                " response, spans_json, marks_json) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (self.run_id, session, time.time(), transcript, speaker, route, int(degraded), response,
                 json.dumps(spans), json.dumps(marks)),
            )
            db.execute(
                "DELETE FROM sessions WHERE id <= (SELECT MAX(id) FROM sessions) - ?", (self.retention,)
            )
            return True
        except (sqlite3.Error, OSError) as exc:
            self.write_errors += 1
            log.warning("metrics write dropped (%d so far): %s", self.write_errors, exc)
            return False

    def recent(self, last: int | None = None) -> list[dict[str, Any]]:
        """The newest `last` sessions (all when None), oldest first.

        [] when there is no database (nothing recorded yet, or it cannot be created); MetricsStoreError
        when it exists but cannot be read. Rows with broken JSON are skipped, counted in `skipped_rows`.
        """
        query = "SELECT run_id, session, finished_unix, transcript, speaker, route, degraded, response," \
                " spans_json, marks_json FROM sessions ORDER BY id DESC"
        try:
            db = self._connect()
        except (sqlite3.Error, OSError) as exc:
            if _corrupt(exc):
                raise MetricsStoreError(f"{self.path} is corrupt ({exc})") from None
            return []
        try:
            rows = db.execute(query + (" LIMIT ?" if last else ""), (last,) if last else ()).fetchall()
        except sqlite3.Error as exc:
            raise MetricsStoreError(f"{self.path} {'is corrupt' if _corrupt(exc) else 'cannot be read'} ({exc})") \
                from None
        sessions, self.skipped_rows = [], 0
        for r in reversed(rows):
            try:
                spans, marks = json.loads(r[8]), json.loads(r[9])
            except (TypeError, ValueError, RecursionError):
                spans = marks = None
            if not isinstance(spans, dict) or not isinstance(marks, dict):
                self.skipped_rows += 1
                continue
            sessions.append({
                "run_id": r[0], "session": r[1], "finished_unix": r[2], "transcript": r[3], "speaker": r[4],
                "route": r[5], "degraded": bool(r[6]), "response": r[7], "spans": spans, "marks": marks,
            })
        return sessions

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
