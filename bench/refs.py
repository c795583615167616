"""References on S3 (SeaweedFS, loopback).

1. Indexing: `artfs track` of a prefix of --objects small objects (default 100,000) into a local
   store — objects/s and the requests the server answered (its own metrics: listing pages, no
   request per object). Baseline in the same run: boto3's paginated listing of the same prefix,
   which any indexing costs at least (the ceiling). Target ≥ 2,000 objects/s.
2. `ls -l` of the tracked version through a mount: origin bytes sent (target 0).
3. Cold reads through a mount of --files objects of --size MiB each, tracked as references, next
   to the same bytes pushed to an S3 store as blobs (page cache and artfs cache dropped
   before each), MB/s and the ratio.

    .venv/bin/python bench/refs.py [--objects 100000] [--files 8] [--size 64]
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
from access import Report, drop_caches, parser, read_many, seaweedfs, wait_mounted, workdir

from tests.conftest import S3_BUCKET  # the servers the tests use

ARTFS = [sys.executable, "-m", "artfs"]


def cli(store: str, *argv: str) -> str:
    done = subprocess.run([*ARTFS, "--store", store, *argv], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"artfs {' '.join(argv)} failed: {done.stderr}")
    return done.stdout.strip()


def mounted(store: str, mnt: Path, cache: Path) -> subprocess.Popen[bytes]:
    mnt.mkdir(exist_ok=True)
    proc = subprocess.Popen([*ARTFS, "--store", store, "mount", "--foreground", "--cache-dir", str(cache),
                             "--no-in-place", str(mnt)])  # fmt: skip
    wait_mounted(mnt, proc, "fuse.artfs")
    return proc


def unmount(mnt: Path, proc: subprocess.Popen[bytes]) -> None:
    subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
    proc.wait(30)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="MiB per file of the read test")
    args = ap.parse_args()
    report = Report()
    with workdir(args) as work, seaweedfs(work) as server:
        s3 = boto3.client("s3", endpoint_url=server.endpoint)
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda i: s3.put_object(Bucket=S3_BUCKET, Key=f"many/{i:07}.json", Body=b"{}"),
                          range(args.objects)))  # fmt: skip
        before = server.traffic()[0]
        t = time.perf_counter()
        pages_of = s3.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix="many/")
        listed = sum(len(p.get("Contents", [])) for p in pages_of)
        ceiling = time.perf_counter() - t
        pages = server.traffic()[0] - before
        store = f"file://{work / 'store'}"
        before = server.traffic()[0]
        t = time.perf_counter()
        cli(store, "track", "many", f"s3://{S3_BUCKET}/many", "--max-objects", str(args.objects))
        took = time.perf_counter() - t
        requests = server.traffic()[0] - before
        report.say(f"track {args.objects:,} objects: {took:.1f} s, {args.objects / took:,.0f} objects/s, "
                   f"{requests} requests to the origin")  # fmt: skip
        report.say(f"  ceiling, boto3 listing of the same {listed:,} keys: {ceiling:.1f} s, "
                   f"{listed / ceiling:,.0f} objects/s, {pages} requests")  # fmt: skip
        report.say(f"  artfs at {ceiling / took:.2f}x the ceiling")

        cache = work / "cache"
        proc = mounted(store, work / "mnt", cache)
        try:
            sent = server.traffic()[1]
            t = time.perf_counter()
            subprocess.run(["ls", "-l", str(work / "mnt" / "many:v0")], check=True, stdout=subprocess.DEVNULL)
            report.say(f"ls -l of {args.objects:,} references: {time.perf_counter() - t:.2f} s, "
                       f"{server.traffic()[1] - sent:,} bytes from the origin")  # fmt: skip
        finally:
            unmount(work / "mnt", proc)

        data = work / "data"
        data.mkdir()
        for i in range(args.files):
            with open(data / f"f{i}.bin", "wb") as f:
                f.write(os.urandom(args.size << 20))
            s3.upload_file(str(data / f"f{i}.bin"), S3_BUCKET, f"big/f{i}.bin")
        cli(store, "track", "big", f"s3://{S3_BUCKET}/big")
        blob_store = f"s3://{S3_BUCKET}/blobs"
        cli(blob_store, "push", "big", str(data))
        rates, after_first = {}, {}
        for label, url in (("references", store), ("blobs", blob_store)):
            subprocess.run(["rm", "-rf", str(cache)], check=True)
            proc = mounted(url, work / "mnt", cache)
            try:
                drop_caches()
                took = []  # per file: the first pays for opening the origin (an S3 client)
                for f in sorted((work / "mnt" / "big:v0").iterdir()):
                    t = time.perf_counter()
                    read_many([f])
                    took.append(time.perf_counter() - t)
                size = args.size << 20
                rates[label] = size * len(took) / sum(took) / 1e6
                after_first[label] = size * (len(took) - 1) / sum(took[1:]) / 1e6
            finally:
                unmount(work / "mnt", proc)
            report.say(f"cold read of {args.files} × {args.size} MiB as {label}: {rates[label]:,.0f} MB/s "
                       f"({after_first[label]:,.0f} MB/s after the first file)")  # fmt: skip
        report.say(f"  references at {rates['references'] / rates['blobs']:.2f}x blobs "
                   f"({after_first['references'] / after_first['blobs']:.2f}x after the first file, which "
                   "opens the origin's client)")  # fmt: skip
        report.summary()


if __name__ == "__main__":
    main()
