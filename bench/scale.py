"""A version of 100,000 files through the mount: time to mount, to list the root, to list the
version and to `find` it, what that fetched, and the daemon's memory. Baseline: `find` over the
same tree on the local disk, in the same run.

    .venv/bin/python bench/scale.py [--files 100000] [--per-dir 1000] [--dir DIR]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from access import parser, workdir

ARTFS = [sys.executable, "-m", "artfs"]


def timed(argv: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t, out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--per-dir", type=int, default=1000)
    args = ap.parse_args()
    with workdir(args) as work:
        src = work / "src"
        for i in range(args.files):
            d = src / f"d{i // args.per_dir:04d}"
            if i % args.per_dir == 0:
                d.mkdir(parents=True)
            (d / f"f{i:07d}.txt").write_text(f"{i}\n")
        store = f"file://{work / 'store'}"
        push_s, _ = timed([*ARTFS, "--store", store, "push", "big", str(src)])
        native_find, out = timed(["find", str(src)])
        assert len(out.splitlines()) == args.files + args.files // args.per_dir + 1

        mnt = work / "mnt"
        mnt.mkdir()
        env_argv = [*ARTFS, "--store", store]
        mount_s, _ = timed([*env_argv, "mount", "--cache-dir", str(work / "cache"), str(mnt)])
        try:
            ls_root, _ = timed(["ls", str(mnt)])
            ls_version, _ = timed(["ls", str(mnt / "big:v0")])
            find_s, out = timed(["find", str(mnt / "big:v0")])
            assert len(out.splitlines()) == args.files + args.files // args.per_dir + 1
            stats = json.loads((mnt / ".artfs" / "stats.json").read_bytes())
            pid = json.loads((mnt / ".artfs" / "mount.json").read_bytes())["pid"]
            status = Path(f"/proc/{pid}/status").read_text()
            rss_mb = int(status.split("VmRSS:")[1].split()[0]) / 1024
        finally:
            subprocess.run([*ARTFS, "umount", str(mnt)], check=True)

    print(f"{args.files:,} files in {args.files // args.per_dir} directories (push took {push_s:.1f} s)")
    print(f"mount (until ready)      {mount_s:6.2f} s")
    both = mount_s + ls_root
    print(f"ls of the mount root     {ls_root:6.2f} s   mount + ls root: {both:.2f} s (target < 2 s)")
    print(f"ls of the version root   {ls_version:6.2f} s   (loads the manifest)")
    ratio = native_find / find_s
    print(f"find over the version    {find_s:6.2f} s   native find {native_find:.2f} s: {ratio:.2f}x native")
    print(f"blocks read by find      {stats.get('blocks_verified', 0)}")
    print(f"daemon RSS after find    {rss_mb:6.0f} MB  (target < 300 MB)")


if __name__ == "__main__":
    main()
