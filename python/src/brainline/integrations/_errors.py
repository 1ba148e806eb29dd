"""Which brainline errors are worth trying again: the one rule every adapter maps from.

Permanent: a ConfigError (bad call arguments) and an HTTP status of 4xx other than 408 and 429
(credentials, permissions, a malformed request or an unknown model fail the same way every time).
Everything else is transient: 408, 429, 5xx, timeouts, connection errors and failures mid-stream.
A FallbackLLM whose endpoints all failed is permanent only when every endpoint failed permanently.
typescript/src/integrations/livekit.ts mirrors it.
"""

from __future__ import annotations

from .._core.errors import AllEndpointsFailedError, APIStatusError, BrainlineError, ConfigError

TRANSIENT_STATUSES = frozenset({408, 429})


def is_permanent(error: BrainlineError) -> bool:
    """Whether the same request would fail the same way again."""
    if isinstance(error, ConfigError):
        return True
    if isinstance(error, APIStatusError):
        return 400 <= error.status < 500 and error.status not in TRANSIENT_STATUSES
    if isinstance(error, AllEndpointsFailedError):
        return bool(error.errors) and all(is_permanent(each) for each in error.errors)
    return False
