"""One logging set-up for the supervisor and every worker: stderr, one line per record, named process."""

from __future__ import annotations

import logging
import os
import sys


def configure_logging(process: str) -> None:
    """Level from VIGIL_LOG_LEVEL (default INFO); `process` prefixes each line (e.g. "vigil-stt")."""
    level = os.environ.get("VIGIL_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format=f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("pywhispercpp").setLevel(logging.WARNING)  # it logs every transcription at INFO
