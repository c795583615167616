"""What the benchmarks share: timing, and the ways applications access files."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import SeaweedFS

MiB = 1 << 20


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring as help, and `--dir` for the work directory."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir in /var/tmp)")
    return ap


@contextlib.contextmanager
def workdir(args: argparse.Namespace) -> Iterator[Path]:
    """A fresh directory under `--dir`, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="artfs-bench-", dir=args.dir or "/var/tmp") as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def seaweedfs(work: Path, key: str = "artfs") -> Iterator[SeaweedFS]:
    """The S3 server the tests use, for one run, with boto3 and artfs pointed at it."""
    from tests.conftest import SeaweedFS

    os.environ.update(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=key, AWS_DEFAULT_REGION="us-east-1")
    (work / "weed").mkdir()
    server = SeaweedFS(work / "weed")
    server.start()
    try:
        os.environ["S3_ENDPOINT_URL"] = server.endpoint
        yield server
    finally:
        server.kill()


class Report:
    """Lines printed as they come and again, together, at the end (long runs scroll away)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def summary(self) -> None:
        print("\n" + "\n".join(self.lines))


def artfs(store: Path, *argv: str) -> str:
    """Run the artfs CLI on `store`; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "artfs", "--store", str(store), *argv],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


@contextlib.contextmanager
def staged(store: Path, ref: str, mnt: Path, *options: str, commit: bool = True) -> Iterator[Path]:
    """A staging mount of `ref`; leaving the block unmounts it, which commits (or aborts it)."""
    mnt.mkdir(exist_ok=True)
    artfs(store, "stage", ref, str(mnt), *options)
    try:
        yield mnt
    finally:
        artfs(store, "umount" if commit else "abort", str(mnt))


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


def wait_mounted(path: Path, proc: subprocess.Popen[bytes], fstype: str) -> None:
    """Wait until `proc` has mounted a filesystem of `fstype` on `path` (or exit if it died)."""
    from artfs.mounttable import mounts

    while getattr(mounts().get(str(path)), "fstype", "") != fstype:
        if proc.poll() is not None:
            raise SystemExit(f"{fstype} mount on {path} failed")
        time.sleep(0.02)


def drop_caches() -> None:
    """Empty the kernel's page cache, so the next reads reach the filesystem (root only)."""
    Path("/proc/sys/vm/drop_caches").write_text("3")
