"""The one ``edgetool`` logger: every module logs to a child of it (``logging.getLogger(__name__)``).

The root command's ``-v`` / ``-q`` set its level; messages go to stderr, so command output on
stdout stays machine-readable.
"""

from __future__ import annotations

import logging
import sys

NAME = "edgetool"
logger = logging.getLogger(NAME)


def level_for(verbosity: int) -> int:
    """-q -> ERROR, default -> WARNING, -v -> INFO, -vv -> DEBUG."""
    return {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        verbosity, logging.DEBUG if verbosity > 1 else logging.ERROR
    )


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when it emits (not the one it was made
    with, which a caller may since have replaced or closed)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure(verbosity: int = 0) -> None:
    """Send the edgetool logger to stderr at the level of *verbosity* (idempotent)."""
    logger.setLevel(level_for(verbosity))
    if not any(getattr(h, "_edgetool", False) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        handler._edgetool = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
