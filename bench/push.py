"""Push throughput against `cp -r` of the same data, measured in the same run.

    .venv/bin/python bench/push.py [--big-mib 1024] [--small 10000] [--dir DIR]

Two data sets: one large file, and many small files. For each, the baseline is `cp -r` (and `cp -r`
followed by `sync`, since a push makes its writes durable and plain cp does not), then
`artfs push` into a fresh local store on the same disk. Source files are in the page cache for
every run. Prints seconds, MB/s and artfs's speed as a ratio of each baseline's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from access import parser, workdir

ARTFS = [sys.executable, "-m", "artfs"]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def make_big(path: Path, mib: int) -> None:
    chunk = os.urandom(64 << 20)
    with open(path, "wb") as f:
        for i in range(0, mib, 64):
            f.write(chunk[: min(64, mib - i) << 20][:-8] + i.to_bytes(8, "big"))


def make_small(root: Path, count: int) -> None:
    for i in range(count):
        d = root / f"d{i // 500:03d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:05d}.bin").write_bytes(os.urandom(4096))


def bench(label: str, src: Path, work: Path) -> None:
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    for p in src.rglob("*"):  # warm the page cache (tar to /dev/null would skip the data)
        if p.is_file():
            p.read_bytes()
    cp = timed(["cp", "-r", str(src), str(work / "cp")])
    shutil.rmtree(work / "cp")
    subprocess.run(["sync"], check=True)
    cp_sync = timed(["sh", "-c", f"cp -r '{src}' '{work}/cps' && sync"])
    shutil.rmtree(work / "cps")
    subprocess.run(["sync"], check=True)
    store = work / "store"
    push = timed([*ARTFS, "--store", f"file://{store}", "push", "bench", str(src)])
    again = timed([*ARTFS, "--store", f"file://{store}", "push", "bench", str(src)])
    shutil.rmtree(store)
    mb = size / 1e6
    print(f"\n{label}: {mb:.0f} MB")
    print(f"  {'cp -r':28} {cp:7.2f} s {mb / cp:8.0f} MB/s")
    print(f"  {'cp -r && sync':28} {cp_sync:7.2f} s {mb / cp_sync:8.0f} MB/s")
    print(
        f"  {'artfs push (new store)':28} {push:7.2f} s {mb / push:8.0f} MB/s"
        f"   ratio vs cp {cp / push:.2f}x, vs cp+sync {cp_sync / push:.2f}x"
    )
    print(
        f"  {'artfs push (unchanged)':28} {again:7.2f} s {mb / again:8.0f} MB/s"
        f"   ratio vs cp {cp / again:.2f}x"
    )


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--small", type=int, default=10_000)
    args = ap.parse_args()
    with workdir(args) as work:
        big = work / "big"
        big.mkdir()
        make_big(big / "data.bin", args.big_mib)
        bench(f"one {args.big_mib} MiB file", big, work)
        shutil.rmtree(big)
        small = work / "small"
        small.mkdir()
        make_small(small, args.small)
        bench(f"{args.small} files of 4 KiB", small, work)


if __name__ == "__main__":
    main()
