"""A store of many artifacts on S3 (SeaweedFS, loopback): 2,000 artifacts × 20 versions, and an
alias `best` on every tenth artifact. Measured, with the requests the server answered (its own
metrics): `artfs ls`; a mount's `ls` of its top, cold; the same `ls` again once the top's 1-second
timeout has passed. Baseline: boto3's paginated listing of the same keys, which every listing
of the store costs at least.

    .venv/bin/python bench/catalog.py [--artifacts 2000] [--versions 20]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).parents[1]))
from access import parser, seaweedfs, workdir

import artfs
from artfs.catalog import Catalog, VersionRecord
from tests.conftest import S3_BUCKET  # the servers the tests use

ARTFS = [sys.executable, "-m", "artfs"]


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--artifacts", type=int, default=2000)
    ap.add_argument("--versions", type=int, default=20)
    args = ap.parse_args()
    with workdir(args) as work, seaweedfs(work) as server:
        url = f"s3://{S3_BUCKET}/catalog"
        store = artfs.Store(url)
        seed = artfs.Artifact("seed")
        with seed.new_file("x.txt") as f:
            f.write("x")
        v = store.log_artifact(seed)  # a real tree every synthetic version names
        rec = v._record
        catalog = Catalog(store.backend)

        def make(a: int) -> None:
            name = f"artifact-{a:05d}"
            for n in range(args.versions):
                made = VersionRecord(name, n, "dataset", rec.digest, tree=rec.tree, size=1, files=1)
                catalog.claim(name, lambda k, m=made: m)
            catalog.set_alias(name, "latest", args.versions - 1)
            if a % 10 == 0:
                catalog.set_alias(name, "best", args.versions // 2)

        t = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(make, range(args.artifacts)))
        print(f"made {args.artifacts} × {args.versions} versions in {time.perf_counter() - t:.0f} s")

        def measured(fn: object) -> tuple[float, int]:
            before = server.traffic()[0]
            t = time.perf_counter()
            fn()  # type: ignore[operator]
            return time.perf_counter() - t, server.traffic()[0] - before

        s3 = boto3.client("s3", endpoint_url=server.endpoint)

        def listing() -> None:
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=S3_BUCKET, Prefix="catalog/artifacts/"
            )
            sum(len(p.get("Contents", [])) for p in pages)

        base = measured(listing)
        ls = measured(lambda: subprocess.run([*ARTFS, "--store", url, "ls"], check=True, capture_output=True))
        mnt = work / "mnt"
        mnt.mkdir()
        subprocess.run(
            [*ARTFS, "--store", url, "mount", "--cache-dir", str(work / "cache"), str(mnt)], check=True
        )
        try:
            top = measured(lambda: os.listdir(mnt))
            entries = len(os.listdir(mnt))
            time.sleep(1.5)
            again = measured(lambda: os.listdir(mnt))
        finally:
            subprocess.run([*ARTFS, "umount", str(mnt)], check=True)
    print(f"{'':34} {'seconds':>8} {'requests':>9}")
    print(f"{'boto3 listing of the keys':34} {base[0]:8.2f} {base[1]:9}")
    print(f"{'artfs ls':34} {ls[0]:8.2f} {ls[1]:9}   (target < 3 s)")
    print(f"{'ls of the mount, cold':34} {top[0]:8.2f} {top[1]:9}   (target < 2 s; {entries:,} entries)")
    print(f"{'ls of the mount, again':34} {again[0]:8.2f} {again[1]:9}   (re-reads nothing unchanged)")


if __name__ == "__main__":
    main()
