"""Versions at scale, on a local store, each line next to its baseline from the same run:

- push of 1,000,000 files (1,000 directories × 1,000 files of 1 KiB, and a flat directory of
  100,000 more) against `cp -r` of the same tree, and push's peak RSS; an unchanged push again
  (the stat cache: no file read) against `find -ls` of the tree;
- through the mount: mount + `ls` of the top + `ls` of the version; `ls -l` of one 1,000-file
  directory cold and the tree objects it read; `stat` of a file in the flat directory cold;
  `find` over everything, the content it fetched and the daemon's RSS during and after;
- a one-file change pushed as the next version: its time and the tree objects it wrote; `artfs
  diff` of the two versions;
- a 16 GiB file (sparse: its blocks are zeros): push, and the tree and block-list bytes read to
  serve a 1 MiB read in its middle.

    .venv/bin/python bench/scale.py [--dirs 1000] [--per-dir 1000] [--flat 100000] [--big-gib 16] [--dir DIR]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from access import Report, drop_caches, parser, workdir

ARTFS = [sys.executable, "-m", "artfs"]


def run(argv: list[str], **kw: object) -> tuple[float, str]:
    t = time.perf_counter()
    done = subprocess.run(argv, check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - t, done.stdout


def run_rss(argv: list[str]) -> tuple[float, float, str]:
    """Seconds, peak RSS (MB) and stdout of a command (GNU time measures the RSS)."""
    t = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], check=True, capture_output=True, text=True)
    return time.perf_counter() - t, int(done.stderr.strip().splitlines()[-1]) / 1024, done.stdout


def make_tree(root: Path, dirs: int, per_dir: int, flat: int) -> int:
    """Files of 1 KiB, each different; returns how many."""
    block = os.urandom(1024 - 16)
    n = 0
    for d in [*(f"d{i:04d}" for i in range(dirs)), "flat"]:
        (root / d).mkdir(parents=True)
        fd_dir = os.open(root / d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(flat if d == "flat" else per_dir):
                fd = os.open(f"f{n:08d}.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd_dir)
                os.write(fd, block + n.to_bytes(16, "little"))
                os.close(fd)
                n += 1
        finally:
            os.close(fd_dir)
    return n


def count_objects(store: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(store / "trees"))


class RssWatch:
    """The peak VmRSS of a process, sampled every 50 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()

    def now(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0]) / 1024

    def __enter__(self) -> RssWatch:
        def watch() -> None:
            while not self._stop.wait(0.05):
                self.peak = max(self.peak, self.now())

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--dirs", type=int, default=1000)
    ap.add_argument("--per-dir", type=int, default=1000)
    ap.add_argument("--flat", type=int, default=100_000)
    ap.add_argument("--big-gib", type=int, default=16)
    args = ap.parse_args()
    say = (report := Report()).say
    with workdir(args) as work:
        src, store_dir = work / "src", work / "store"
        n = make_tree(src, args.dirs, args.per_dir, args.flat)
        store = f"file://{store_dir}"
        env = {**os.environ, "XDG_STATE_HOME": str(work / "state"), "ARTFS_CACHE": str(work / "cache")}
        base = [*ARTFS, "--store", store]
        say(f"{n:,} files of 1 KiB: {args.dirs} directories of {args.per_dir}, one of {args.flat:,}")

        # The page cache and the disk's queue are left as they were found for each step (the
        # dirty data of one step is written back before the next begins).
        subprocess.run(["sync"], check=True)
        cp_s, _ = run(["cp", "-r", str(src), str(work / "copy")])
        cp_sync_s = cp_s + run(["sync"])[0]
        subprocess.run(["rm", "-rf", str(work / "copy")], check=True)
        subprocess.run(["sync"], check=True)
        os.environ.update(env)
        push_s, push_rss, out = run_rss([*base, "push", "big", str(src)])
        assert out.strip() == "big:v0", out
        say(f"push: {push_s:.1f} s; cp -r {cp_s:.1f} s: {cp_s / push_s:.2f}x (≥ 0.5x)")
        say(f"      cp -r and sync (durable, as a push is) {cp_sync_s:.1f} s: {cp_sync_s / push_s:.2f}x")
        say(f"push peak RSS: {push_rss:7.0f} MB  (target < 500 MB)")

        find_s, _ = run(["sh", "-c", f"find '{src}' -ls > /dev/null"])
        again_s, _, out = run_rss([*base, "push", "big", str(src)])
        assert out.strip() == "unchanged: big:v0", out
        say(f"unchanged push: {again_s:7.1f} s   find -ls {find_s:.1f} s: {again_s / find_s:.2f}x  (≤ 2x)")

        mnt = work / "mnt"
        mnt.mkdir()
        drop_caches()
        t = time.perf_counter()
        run([*base, "mount", "--cache-dir", str(work / "mcache"), str(mnt)])
        try:
            run(["ls", str(mnt)])
            run(["ls", str(mnt / "big:v0")])
            top_s = time.perf_counter() - t
            say(f"mount + ls top + ls version {top_s:6.2f} s   (target < 2 s)")
            stats = lambda: json.loads((mnt / ".artfs" / "stats.json").read_bytes())  # noqa: E731
            pid = json.loads((mnt / ".artfs" / "mount.json").read_bytes())["pid"]
            before = stats()
            lsl_s, out = run(["ls", "-l", str(mnt / "big:v0" / f"d{args.dirs // 2:04d}")])
            after = stats()
            assert len(out.splitlines()) == args.per_dir + 1
            objects = after["tree_objects_read"] - before["tree_objects_read"]
            say(f"ls -l of a 1,000-file dir: {lsl_s:.3f} s, tree objects read: {objects} (< 0.3 s, its own)")
            before = stats()
            name = f"f{args.dirs * args.per_dir + args.flat // 2:08d}.txt"
            stat_s, _ = run(["stat", str(mnt / "big:v0" / "flat" / name)])
            after = stats()
            objects = after["tree_objects_read"] - before["tree_objects_read"]
            say(
                f"stat in the flat directory {stat_s:7.3f} s   tree objects read: {objects}  (target < 0.3 s)"
            )
            with RssWatch(pid) as rss:
                find_mnt_s, out = run(["sh", "-c", f"find '{mnt / 'big:v0'}' | wc -l"])
            assert int(out) == n + args.dirs + 2, out
            s = stats()
            say(f"find over everything: {find_mnt_s:.1f} s, read: {s.get('blocks_verified', 0)} (< 20 s)")
            drop_caches()
            time.sleep(2)
            say(f"daemon RSS: {rss.peak:7.0f} MB during find, {rss.now():.0f} MB after it  (< 300 MB)")
        finally:
            subprocess.run([*ARTFS, "umount", str(mnt)], check=True)

        changed = src / f"d{args.dirs // 2:04d}" / f"f{args.dirs // 2 * args.per_dir + 5:08d}.txt"
        changed.write_bytes(b"changed")
        objects = count_objects(store_dir)
        one_s, out = run([*base, "push", "big", str(src)])
        assert out.strip() == "big:v1", out
        written = count_objects(store_dir) - objects
        say(f"one-file change: {one_s:7.2f} s   tree objects written: {written}  (< 2 s, O(depth))")
        diff_s, out = run(["sh", "-c", f"{' '.join(base)} diff big:v0 big:v1; true"])
        say(f"diff of the two: {diff_s:7.2f} s   {out.strip()}  (target < 1 s)")

        big = work / "big"
        big.mkdir()
        with open(big / "huge.bin", "wb") as f:
            f.truncate(args.big_gib << 30)
        huge_s, huge_rss, out = run_rss([*base, "push", "huge", str(big)])
        say(f"push of a {args.big_gib} GiB file      {huge_s:7.1f} s   peak RSS {huge_rss:.0f} MB")
        (big / "huge.bin").unlink()
        mnt.mkdir(exist_ok=True)
        run([*base, "mount", "--cache-dir", str(work / "mcache2"), str(mnt)])
        try:
            with open(mnt / "huge:v0" / "huge.bin", "rb", buffering=0) as f:
                before = stats()
                f.seek((args.big_gib << 30) // 2)
                assert f.read(1 << 20) == bytes(1 << 20)
                after = stats()
            read = after["tree_bytes_read"] - before["tree_bytes_read"]
            say(
                f"1 MiB read in its middle: tree and block-list bytes read {read:,} (of {args.big_gib << 14})"
            )
        finally:
            subprocess.run([*ARTFS, "umount", str(mnt)], check=True)
    report.summary()


if __name__ == "__main__":
    main()
