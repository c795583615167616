"""Worker threads for batch work (hashing, uploading, downloading), and stopping them in time.

Ctrl-C raises KeyboardInterrupt in the main thread only; threads working for it would carry on
to the end. A `Pool` runs each task in a copy of the caller's context that carries the pool's
stop flag, so code anywhere below a task calls `checkpoint()` between pieces of work (a block
hashed, written or sent; a retry's wait) and raises `Cancelled` once the caller was interrupted
or another task failed. Leaving the pool with an exception sets the flag, drops the tasks not
started yet and waits (at most GRACE seconds) for the running ones, which clean up after
themselves (temp files) on the way out: when the caller's own cleanup runs, no task is still
writing. A pool opened inside a task shares its flag, so one interrupt stops them all.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

GRACE = 2.0  # seconds to wait for running tasks to reach a checkpoint after a stop
_stop: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("artfs_stop", default=None)


class Cancelled(BaseException):  # like KeyboardInterrupt: not an error of its own
    """Raised at a checkpoint of a task whose pool was stopped; never caught as an Exception."""


def checkpoint() -> None:
    """Raise Cancelled if the pool this code runs for was stopped (no-op outside pools)."""
    stop = _stop.get()
    if stop is not None and stop.is_set():
        raise Cancelled


class Pool:
    """`with Pool(8) as pool: for result in pool.map(fn, items): …` (results in input order)."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._executor: cf.ThreadPoolExecutor | None = None
        self._futures: list[cf.Future[object]] = []
        self.stop = _stop.get() or threading.Event()

    def __enter__(self) -> Pool:
        self._executor = cf.ThreadPoolExecutor(self._workers)
        return self

    def submit(self, fn: Callable[..., R], *args: object) -> cf.Future[R]:
        assert self._executor is not None, "use the pool in a with block"
        context = contextvars.copy_context()
        context.run(_stop.set, self.stop)
        future = self._executor.submit(context.run, fn, *args)
        self._futures.append(future)  # type: ignore[arg-type]
        return future

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        futures = [self.submit(fn, item) for item in items]
        return (f.result() for f in futures)

    def run(self, fn: Callable[[T], object], items: Iterable[T]) -> None:
        """`fn` on every item, for its effects; the first failure is raised."""
        for _ in self.map(fn, items):
            pass

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        assert self._executor is not None
        if kind is None:
            self._executor.shutdown(wait=True)
            return
        self.stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        cf.wait([f for f in self._futures if not f.done()], timeout=GRACE)
