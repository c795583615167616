"""What the benchmarks share: timing, and the ways applications access files."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

MiB = 1 << 20


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def read_file(path: Path) -> int:
    """Read a file to the end in 1 MiB requests, into one reused buffer."""
    buf = bytearray(MiB)
    n = 0
    with open(path, "rb", buffering=0) as f:
        while k := f.readinto(buf):
            n += k
    return n


def read_many(paths: list[Path]) -> int:
    """Open, read and close each file in turn."""
    n = 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            n += len(f.read())
    return n


def drop_caches() -> None:
    """Empty the kernel's page cache, so the next reads reach the filesystem (root only)."""
    Path("/proc/sys/vm/drop_caches").write_text("3")
