"""Retrying store requests: the one retry policy every remote backend uses.

Only StoreUnavailableError is retried (unreachable, 5xx, throttling, timeouts); anything else is
permanent and raised at once. Waits grow exponentially with jitter, and the whole thing is bounded
in attempts and in time, so a store that stays down gives an error, not a hang.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import tenacity

from ..errors import StoreUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")
ATTEMPTS = 6
DEADLINE = 30.0  # seconds, over all attempts


def call(what: str, fn: Callable[[], T]) -> T:
    """`fn()`, retried while it raises StoreUnavailableError; `what` names it in the log."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(StoreUnavailableError),
        stop=tenacity.stop_after_attempt(ATTEMPTS) | tenacity.stop_after_delay(DEADLINE),
        wait=tenacity.wait_exponential_jitter(multiplier=0.1, max=5.0),
        before_sleep=lambda state: log.warning(
            "%s: %s; retrying (attempt %d)",
            what,
            state.outcome.exception() if state.outcome else "?",
            state.attempt_number,
        ),
        reraise=True,
    )
    return retrying(fn)
