"""The external yardsticks against a staging mount on a local store (../shared/YARDSTICKS.md says
how to build the tools under --tools; nothing of theirs is in this repository):

- pjdfstest, the full suite, as root, from inside a stage mounted with --allow-other: assertions
  passed of those run, and every failing test file;
- fsx, --seeds seeds × --fsx-ops operations on a new file and on a file of the base version
  (`-k`: fsx keeps its content, so the first write copies it up), 0 miscompares wanted;
- fsstress `-n --fsstress-ops -p 4` in the stage: its tree and the committed version read back
  through a read-only mount compared by walk + sha256 (what a version cannot carry — special
  files — left aside); and the same seed on the local disk and on tmpfs, to show how far trees of
  one seed drift apart between file systems that list directories in different orders.

    .venv/bin/python bench/yardsticks.py [--tools /tmp/yardsticks] [--only pjdfstest,fsx,fsstress]
                                         [--seeds 5] [--fsx-ops 100000] [--fsstress-ops 20000]
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import time
from pathlib import Path

from access import artfs, parser, staged, workdir


def walk(root: Path) -> dict[str, str]:
    """path → what a version can hold of it: a file's sha256, a link's target, a directory."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel, st = str(p.relative_to(root)), os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = "-> " + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def pjdfstest(tools: Path, store: Path, work: Path) -> None:
    os.chmod(work, 0o755)  # the tests switch to other users, who must reach the mount
    with staged(store, "pjd", work / "pjd-mnt", "--allow-other", commit=False) as mnt:
        (mnt / "pjd").mkdir()
        os.chmod(mnt / "pjd", 0o777)
        t = time.perf_counter()
        done = subprocess.run(
            ["prove", "-r", str(tools / "pjdfstest" / "tests")],
            cwd=mnt / "pjd",
            capture_output=True,
            text=True,
        )
        took = time.perf_counter() - t
    total = int(m.group(1)) if (m := re.search(r"Tests=(\d+)", done.stdout)) else 0
    failing = re.findall(r"tests/(\S+)\s+\(Wstat: \d+ Tests: \d+ Failed: (\d+)\)", done.stdout)
    failed = sum(int(n) for _, n in failing)
    print(f"pjdfstest: {total - failed:,} of {total:,} assertions passed in {took:.0f} s (≥ 8,679 of 8,798)")
    for name, n in failing:
        if int(n):
            print(f"  {name}: {n} failed")


def fsx(tools: Path, store: Path, work: Path, seeds: int, ops: int) -> None:
    src = work / "fsx-src"
    src.mkdir()
    (src / "base.bin").write_bytes(os.urandom(1 << 20))
    artfs(store, "push", "fsx", str(src))
    for seed in range(1, seeds + 1):
        for label, extra in (("new file", []), ("base file", ["-k"])):
            with staged(store, "fsx", work / "fsx-mnt", commit=False) as mnt:
                target = mnt / ("base.bin" if extra else "new.bin")
                argv = [str(tools / "xfstests/ltp/fsx"), "-q", "-N", str(ops), "-S", str(seed), *extra]
                argv += ["-l", str(1 << 20), "-P", str(work), str(target)]
                t = time.perf_counter()
                done = subprocess.run(argv, capture_output=True, text=True)
                took = time.perf_counter() - t
            ok = done.returncode == 0 and "A-OK" in done.stdout
            print(f"fsx seed {seed} {label:9} {ops:,} ops: {'A-OK' if ok else 'FAILED'} in {took:.0f} s")
            if not ok:
                print(done.stdout[-3000:], done.stderr[-3000:])


def fsstress(tools: Path, store: Path, work: Path, ops: int) -> None:
    binary = str(tools / "xfstests/ltp/fsstress")
    local = work / "fsstress-local"
    t = time.perf_counter()
    subprocess.run(
        [binary, "-d", str(local), "-n", str(ops), "-p", "4", "-s", "1"], check=True, capture_output=True
    )
    local_took = time.perf_counter() - t
    with staged(store, "stress", work / "stress-mnt") as mnt:
        t = time.perf_counter()
        subprocess.run([binary, "-d", str(mnt / "t"), "-n", str(ops), "-p", "4", "-s", "1"], check=True,
                       capture_output=True)  # fmt: skip
        took = time.perf_counter() - t
        staged_tree = walk(mnt / "t")
    ro = work / "ro-mnt"
    ro.mkdir()
    artfs(store, "mount", str(ro))
    try:
        committed = walk(ro / "stress:latest" / "t")
    finally:
        artfs(store, "umount", str(ro))
    local_tree = walk(local)
    same = staged_tree == committed
    print(f"\nfsstress -n {ops} -p 4 in the stage: {took:.1f} s; {len(staged_tree):,} paths "
          f"(on the local disk: {local_took:.1f} s)")  # fmt: skip
    print(f"  committed version equals the stage (walk + sha256): {same}")
    if not same:
        for p in sorted(set(staged_tree) ^ set(committed))[:20]:
            print(f"    only in {'stage' if p in staged_tree else 'version'}: {p}")
    # fsstress picks the files it works on by directory listing order, so a file system that
    # lists in another order grows another tree from the same seed: tmpfs shows how far that goes.
    tmpfs = work / "tmpfs"
    tmpfs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "artfs-bench", str(tmpfs)], check=True)
    try:
        subprocess.run([binary, "-d", str(tmpfs / "t"), "-n", str(ops), "-p", "4", "-s", "1"], check=True,
                       capture_output=True)  # fmt: skip
        tmpfs_tree = walk(tmpfs / "t")
    finally:
        subprocess.run(["umount", str(tmpfs)], check=True)
    for label, tree in (("the stage", staged_tree), ("tmpfs", tmpfs_tree)):
        either = set(local_tree) | set(tree)
        differ = [p for p in either if local_tree.get(p) != tree.get(p)]
        print(
            f"  the same seed on the local disk and on {label}: {len(differ):,} of the {len(either):,} "
            "paths in either differ"
        )


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--tools", type=Path, default=Path("/tmp/yardsticks"))
    ap.add_argument("--only", default="pjdfstest,fsx,fsstress")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--fsx-ops", type=int, default=100_000)
    ap.add_argument("--fsstress-ops", type=int, default=20_000)
    args = ap.parse_args()
    with workdir(args) as work:
        os.environ.update(XDG_STATE_HOME=str(work / "state"), ARTFS_CACHE=str(work / "cache"))
        store = work / "store"
        only = args.only.split(",")
        if "pjdfstest" in only:
            pjdfstest(args.tools, store, work)
        if "fsx" in only:
            fsx(args.tools, store, work, args.seeds, args.fsx_ops)
        if "fsstress" in only:
            fsstress(args.tools, store, work, args.fsstress_ops)


if __name__ == "__main__":
    main()
