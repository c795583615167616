"""Reading through the mount against native reads and a minimal pyfuse3 pass-through (the
ceiling: bench/passthrough.py), for the same data in the same run.

    .venv/bin/python bench/read.py [--big-mib 1024] [--small 10000] [--rounds 3] [--dir DIR]

Lines: sequential read of one large file (first read through a fresh mount, then a re-read),
`ls -lR` of the small files, and open+read of each small file. Native reads come from the page
cache; the pass-through and artfs read files that are in the page cache too (artfs reads a
`file://` store in place), so the lines compare the FUSE paths, not the disk. Each line is the
best of --rounds, each round on fresh mounts. Prints seconds, throughput, and artfs as a ratio of
the ceiling and of native.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from access import MiB, parser, read_file, read_many, timed, wait_mounted, workdir

from artfs.daemon import raise_read_ahead
from artfs.mounttable import is_artfs_mount

ARTFS = [sys.executable, "-m", "artfs"]


def make_data(src: Path, big_mib: int, small: int) -> None:
    src.mkdir()
    chunk = os.urandom(64 * MiB)
    with open(src / "big.bin", "wb") as f:
        for i in range(0, big_mib, 64):
            f.write(chunk[: min(64, big_mib - i) * MiB][:-8] + i.to_bytes(8, "big"))
    for i in range(small):
        d = src / "small" / f"d{i // 500:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.bin").write_bytes(os.urandom(4096))


def warm(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(16 * MiB):
                pass


def measure(root: Path, small: list[str]) -> dict[str, float]:
    """One round on one tree: the order matters (first read, then re-read)."""
    files = [root / s for s in small]
    os.stat(root / "big.bin")  # resolve the path first: the lines time reads, not metadata
    return {
        "seq first": timed(lambda: read_file(root / "big.bin")),
        "seq re-read": timed(lambda: read_file(root / "big.bin")),
        "ls -lR": timed(
            lambda: subprocess.run(["ls", "-lR", str(root / "small")], check=True, stdout=subprocess.DEVNULL)
        ),
        "open+read": timed(lambda: read_many(files)),
    }


def run_mounted(argv: list[str], mnt: Path, fstype: str, root: str, small: list[str]) -> dict[str, float]:
    mnt.mkdir(exist_ok=True)
    proc = subprocess.Popen([*argv, str(mnt)])
    try:
        wait_mounted(mnt, proc, fstype)
        if fstype != "fuse.artfs":
            os.stat(mnt)  # answered once the kernel has applied the mount's INIT reply
            raise_read_ahead(str(mnt))  # artfs does this itself
        return measure(mnt / root if root else mnt, small)
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
        proc.wait(60)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with workdir(args) as work:
        src = work / "src"
        make_data(src, args.big_mib, args.small)
        small = sorted(str(p.relative_to(src)) for p in (src / "small").rglob("*.bin"))
        store = f"file://{work / 'store'}"
        subprocess.run(
            [*ARTFS, "--store", store, "push", "bench", str(src)], check=True, stdout=subprocess.DEVNULL
        )
        blobs = [p for p in (work / "store" / "blobs").rglob("*") if p.is_file()]
        cache = str(work / "cache")
        results: dict[str, list[dict[str, float]]] = {"native": [], "ceiling": [], "artfs": []}
        for _ in range(args.rounds):
            warm([src / "big.bin", *blobs, *(src / s for s in small)])
            results["native"].append(measure(src, small))
            passthrough = [sys.executable, str(Path(__file__).with_name("passthrough.py")), str(src)]
            results["ceiling"].append(run_mounted(passthrough, work / "pt", "fuse", "", small))
            artfs = [*ARTFS, "--store", store, "mount", "--foreground", "--cache-dir", cache]
            results["artfs"].append(run_mounted(artfs, work / "af", "fuse.artfs", "bench:v0", small))
        assert not is_artfs_mount(str(work / "af"))

    best = {k: {line: min(r[line] for r in rounds) for line in rounds[0]} for k, rounds in results.items()}
    sizes = {"seq first": args.big_mib * MiB, "seq re-read": args.big_mib * MiB}
    print(f"{'line':12} {'native':>16} {'ceiling':>16} {'artfs':>16} {'÷ceiling':>9} {'÷native':>8}")
    for line in best["native"]:

        def show(seconds: float, line: str = line) -> str:
            rate = (
                f"{sizes[line] / seconds / 1e9:.2f} GB/s"
                if line in sizes
                else f"{args.small / seconds:,.0f} f/s"
            )
            return f"{seconds:6.3f}s {rate:>9}"

        n, c, a = best["native"][line], best["ceiling"][line], best["artfs"][line]
        print(f"{line:12} {show(n):>16} {show(c):>16} {show(a):>16} {c / a:9.2f} {n / a:8.2f}")
    print(
        json.dumps(
            {"best_seconds": best, "big_mib": args.big_mib, "small": args.small, "rounds": args.rounds}
        )
    )


if __name__ == "__main__":
    main()
