"""Logging set-up for the command line and daemons (libraries only call getLogger)."""

from __future__ import annotations

import logging
import os


def setup(verbosity: int = 0) -> None:
    level = os.environ.get("ARTFS_LOG") or ("DEBUG" if verbosity > 1 else "INFO" if verbosity else "WARNING")
    logging.basicConfig(level=level.upper(), format="artfs: %(levelname)s %(name)s: %(message)s")
