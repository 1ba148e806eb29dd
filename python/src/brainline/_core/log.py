"""Debug logs on the standard `brainline` logger; typescript/src/core/log.ts mirrors them.

BRAINLINE_LOG=debug|info|warning (spec constant LOG_ENV) gives the logger that level and, when it
has no handler yet, one on stderr, as OPENAI_LOG does for openai-python; without it the logger is
left to the application's logging configuration. Lines name the method, the URL without its
query, statuses, request ids, attempts and times: never a header, a key, a session key or a caller.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from .._generated.constants import LOG_ENV

__all__ = ["logger", "outcome_line", "setup_from_env"]

logger = logging.getLogger("brainline")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_configured = False


def setup_from_env() -> None:
    """Apply BRAINLINE_LOG once per process (the first client constructed reads it)."""
    global _configured
    if _configured:
        return
    _configured = True
    level = _LEVELS.get(os.environ.get(LOG_ENV, "").strip().lower())
    if level is None:
        return
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s brainline %(levelname)s] %(message)s"))
        logger.addHandler(handler)


def _value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def outcome_line(record: Mapping[str, object]) -> str:
    """`turn finished provider=... duration_ms=...`: one line per turn, the same in both languages."""
    if record["error_code"] is not None:
        outcome = "failed"
    elif record["cancelled"]:
        outcome = "cancelled"
    else:
        outcome = "finished"
    fields = " ".join(f"{key}={_value(value)}" for key, value in record.items())
    return f"turn {outcome} {fields}"
