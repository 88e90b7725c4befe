"""MetricsStore: one SQLite row per finished session, under the state dir.

WAL mode so `python -m pipeline report` can read while the pipeline writes. Retention is
bounded (oldest rows deleted) so the file cannot grow for months. A write that fails
(disk full, database locked) is counted and logged, never raised: metrics must not stop
answers.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("vigil.metrics")

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
    def __init__(self, state_dir: str | Path, run_id: str, retention: int = 10_000) -> None:
        self.path = Path(state_dir) / "metrics.db"
        self.run_id = run_id
        self.retention = retention
        self.write_errors = 0
        self._db: sqlite3.Connection | None = None
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
        """The newest `last` sessions (all when None), oldest first."""
        query = "SELECT run_id, session, finished_unix, transcript, speaker, route, degraded, response," \
                " spans_json, marks_json FROM sessions ORDER BY id DESC"
        try:
            db = self._connect()
        except (sqlite3.Error, OSError):
            return []
        rows = db.execute(query + (" LIMIT ?" if last else ""), (last,) if last else ()).fetchall()
        return [
            {
                "run_id": r[0], "session": r[1], "finished_unix": r[2], "transcript": r[3], "speaker": r[4],
                "route": r[5], "degraded": bool(r[6]), "response": r[7],
                "spans": json.loads(r[8]), "marks": json.loads(r[9]),
            }
            for r in reversed(rows)
        ]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
