"""Retrying store requests: the one retry policy every remote backend uses.

Only StoreUnavailableError is retried (unreachable, 5xx, throttling, timeouts); anything else is
permanent and raised at once. Waits grow exponentially with jitter, and the whole thing is bounded
in attempts and in time, so a store that stays down gives an error, not a hang.

Each retry is logged at INFO (`-v`); a store that keeps failing for ANNOUNCE seconds gets one
WARNING line (once per process), so nobody waits half a minute in silence. A caller's
cancellation (`workers.checkpoint`) is honoured between attempts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import tenacity

from .. import workers
from ..errors import PreconditionFailedError, StoreUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")
ATTEMPTS = 10
DEADLINE = 30.0  # seconds, over all attempts
ANNOUNCE = 3.0  # seconds of failing before a warning says what is going on
_announced = threading.Event()


def _before_sleep(what: str, state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.info("%s (%s); retrying in %.1f s, attempt %d", error, what, wait, state.attempt_number)
    if (state.seconds_since_start or 0.0) >= ANNOUNCE and not _announced.is_set():
        _announced.set()
        log.warning("%s; retrying for up to %.0f s (-v shows each attempt)", error, DEADLINE)
    workers.checkpoint()


def call(what: str, fn: Callable[[], T]) -> T:
    """`fn()`, retried while it raises StoreUnavailableError (whose message names the store and
    the key); `what` names the request in the log."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(StoreUnavailableError),
        stop=tenacity.stop_after_attempt(ATTEMPTS) | tenacity.stop_after_delay(DEADLINE),
        wait=tenacity.wait_exponential_jitter(multiplier=0.1, max=5.0),
        before_sleep=lambda state: _before_sleep(what, state),
        reraise=True,
    )
    return retrying(fn)


def put_once(what: str, send: Callable[[], str], landed: Callable[[], str | None], conditional: bool) -> str:
    """A write, retried like `call`. A conditional write that had to be retried and then fails
    its precondition may have landed on an earlier attempt whose answer was lost: `landed()`
    returns the etag when the store holds exactly our bytes, and then the write counts as done."""
    attempts = 0

    def attempt() -> str:
        nonlocal attempts
        attempts += 1
        return send()

    try:
        return call(what, attempt)
    except PreconditionFailedError:
        if conditional and attempts > 1 and (etag := landed()) is not None:
            return etag
        raise
