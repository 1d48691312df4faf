"""Log many like lines as a few: the first ones, then a count.

At 40,000 real servers one event can name thousands of them (a table read back, a
config's services); a line each held the event loop for a second and buried the log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

SHOWN = 5  # lines logged one by one before the rest is counted


def log_capped(logger: logging.Logger, level: int, lines: Sequence[str],
               shown: int = SHOWN) -> None:
    """Log the first ``shown`` of ``lines``, then one line saying how many more."""
    for line in lines[:shown]:
        logger.log(level, "%s", line)
    if len(lines) > shown:
        logger.log(level, "... and %d more like these", len(lines) - shown)
