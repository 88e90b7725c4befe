"""Entry point: `python -m pipeline ...`, the same program as the installed `vigil` command."""

import sys

from pipeline.cli import main

sys.exit(main())
