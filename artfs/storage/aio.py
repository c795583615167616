"""The one place where worker threads meet trio.

Blocking work (store requests, reading blocks that are not verified yet, hashing, fsync) runs in
worker threads, at most `limit` at a time, so a burst of cold reads cannot start hundreds of
threads. Background work (read-ahead, fetching siblings or whole blobs) has a limiter of its own,
half that size: a read that waits never queues behind a hundred fetches it did not ask for. A
thread hop costs ≈87 µs here, so callers serve cache hits inline and come here only for misses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")


class Threads:
    def __init__(self, limit: int) -> None:
        self.limiter = trio.CapacityLimiter(limit)
        self.background = trio.CapacityLimiter(max(1, limit // 2))

    async def run(self, fn: Callable[..., T], *args: object, background: bool = False) -> T:
        limiter = self.background if background else self.limiter
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
