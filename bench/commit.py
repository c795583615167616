"""Writing through the staging mount, each line next to the same work on a local directory (and,
for writes, a minimal writable pyfuse3 pass-through: bench/passthrough.py --writable) and next to
`artfs push` of the same content, in the same run, on local stores:

- sequential write of 1 GiB (1 MiB writes, then fsync), and committing it;
- `cp -r` of 10,000 files of 4 KiB into the stage, and committing them;
- a one-file change to a 100,000- and a 1,000,000-file base: commit time, the store objects and
  bytes it wrote (the file and O(depth) tree objects), against pushing the same change;
- fsync latency (4 KiB appended, then fsync; p50/p99 of --fsyncs);
- SQLite one-row transactions per second, rollback journal and WAL.

    .venv/bin/python bench/commit.py [--write-mib 1024] [--small 10000] [--bases 100000,1000000]
                                     [--fsyncs 2000] [--transactions 1000] [--dir DIR]
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from access import MiB, Report, artfs, parser, staged, timed, wait_mounted, workdir
from scale import make_tree


def timed_artfs(store: Path, *argv: str) -> float:
    t = time.perf_counter()
    artfs(store, *argv)
    return time.perf_counter() - t


@contextmanager
def passthrough(src: Path, mnt: Path) -> Iterator[Path]:
    mnt.mkdir()
    src.mkdir()
    script = str(Path(__file__).with_name("passthrough.py"))
    proc = subprocess.Popen([sys.executable, script, "--writable", str(src), str(mnt)])
    try:
        wait_mounted(mnt, proc, "fuse")
        os.stat(mnt)
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
        proc.wait(60)


def write_big(path: Path, mib: int, chunk: bytes) -> float:
    """Seconds to write `mib` MiB in 1 MiB writes and fsync them."""
    t = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(mib):
            os.write(fd, chunk[(i % 64) * MiB : (i % 64 + 1) * MiB])
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t


def store_usage(store: Path) -> tuple[int, int]:
    """Files and bytes under a local store."""
    files = size = 0
    for dirpath, _, names in os.walk(store):
        for n in names:
            files += 1
            size += os.lstat(os.path.join(dirpath, n)).st_size
    return files, size


def fsync_latencies(path: Path, count: int) -> tuple[float, float]:
    """p50 and p99 in ms of appending 4 KiB then fsync."""
    block = os.urandom(4096)
    took = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for _ in range(count):
            os.write(fd, block)
            t = time.perf_counter()
            os.fsync(fd)
            took.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(fd)
    q = statistics.quantiles(took, n=100)
    return q[49], q[98]


def sqlite_rate(path: Path, mode: str, count: int) -> float:
    """One-row transactions per second (synchronous=FULL: each commit is durable)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(f"PRAGMA journal_mode={mode}")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        t = time.perf_counter()
        for i in range(count):
            db.execute("BEGIN")
            db.execute("INSERT INTO t (v) VALUES (?)", (f"row {i}",))
            db.execute("COMMIT")
        return count / (time.perf_counter() - t)
    finally:
        db.close()


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--write-mib", type=int, default=1024)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--bases", default="100000,1000000", help="file counts of the one-file-change bases")
    ap.add_argument("--fsyncs", type=int, default=2000)
    ap.add_argument("--transactions", type=int, default=1000)
    args = ap.parse_args()
    say = (report := Report()).say
    with workdir(args) as work:
        os.environ.update(XDG_STATE_HOME=str(work / "state"), ARTFS_CACHE=str(work / "cache"))
        stores = {k: work / f"store-{k}" for k in ("stage", "push")}
        local, mnt = work / "local", work / "mnt"
        local.mkdir()

        chunk = os.urandom(64 * MiB)
        gib = args.write_mib / 1024
        native_s = write_big(local / "big.bin", args.write_mib, chunk)
        with passthrough(work / "pt-src", work / "pt") as pt:
            pt_s = write_big(pt / "big.bin", args.write_mib, chunk)
        with staged(stores["stage"], "big", mnt) as stage:
            stage_s = write_big(stage / "big.bin", args.write_mib, chunk)
            commit_s = timed_artfs(stores["stage"], "commit", str(stage))
        push_s = timed_artfs(stores["push"], "push", "big", str(local))
        say(
            f"write {gib:.0f} GiB + fsync   local {gib / native_s:5.2f} GiB/s   passthrough {gib / pt_s:5.2f}"
            f"   stage {gib / stage_s:5.2f}: {pt_s / stage_s:.2f}x passthrough (≥ 0.8x)"
        )
        say(f"  commit of it {commit_s:6.2f} s   push of the same file {push_s:6.2f} s")

        src = work / "small"
        for i in range(args.small):
            d = src / f"d{i // 500:03d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i:05d}.bin").write_bytes(os.urandom(4096))
        cp_s = timed(
            lambda: subprocess.run(["sh", "-c", f"cp -r '{src}' '{local}/small' && sync"], check=True)
        )
        with staged(stores["stage"], "small", mnt) as stage:
            cp_stage_s = timed(
                lambda: subprocess.run(["cp", "-r", str(src), str(stage / "small")], check=True)
            )
            commit_s = timed_artfs(stores["stage"], "commit", str(stage))
        push_s = timed_artfs(stores["push"], "push", "small", str(src))
        say(
            f"cp -r {args.small:,} × 4 KiB   local (+sync) {cp_s:6.2f} s   stage {cp_stage_s:6.2f} s"
            f" + commit {commit_s:5.2f} s = {cp_stage_s + commit_s:6.2f} s   push {push_s:6.2f} s"
        )

        for n in (int(b) for b in args.bases.split(",")):
            base, store = work / f"base{n}", work / f"store-base{n}"
            make_tree(base, n // 1000, 1000, 0)
            artfs(store, "push", "base", str(base))
            with staged(store, "base", mnt) as stage:
                changed = f"d{n // 2000:04d}/f{n // 2 + 5:08d}.txt"
                (stage / changed).write_bytes(b"changed")
                before = store_usage(store)
                commit_s = timed_artfs(store, "commit", str(stage))
                files, size = (a - b for a, b in zip(store_usage(store), before, strict=True))
            (base / changed).write_bytes(b"changed again")
            push_s = timed_artfs(store, "push", "base", str(base))
            say(
                f"one-file change, {n:,}-file base: commit {commit_s:5.2f} s (< 2 s), wrote {files} objects,"
                f" {size:,} bytes (the file is 7); push of a change {push_s:6.2f} s"
            )
            subprocess.run(["rm", "-rf", str(base), str(store)], check=True)

        with staged(stores["stage"], "fsync", mnt) as stage:
            p50, p99 = fsync_latencies(stage / "log", args.fsyncs)
            rates = {m: sqlite_rate(stage / f"{m}.db", m, args.transactions) for m in ("delete", "wal")}
        l50, l99 = fsync_latencies(local / "log", args.fsyncs)
        local_rates = {m: sqlite_rate(local / f"{m}.db", m, args.transactions) for m in ("delete", "wal")}
        say(f"fsync p50/p99   stage {p50:.2f} / {p99:.2f} ms (≤ 1.5 / 10)   local {l50:.2f} / {l99:.2f} ms")
        for m, rate in rates.items():
            say(f"sqlite {m:6} tx/s   stage {rate:7.0f} (> 171)   local {local_rates[m]:7.0f}")
    report.summary()


if __name__ == "__main__":
    main()
