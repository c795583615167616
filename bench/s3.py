"""The mount over S3 against a plain threaded boto3 client, on the same SeaweedFS bucket (loopback),
in the same run.

    .venv/bin/python bench/s3.py [--big-mib 1024] [--small 2500] [--listing 10000]

Lines (artfs on a fresh mount and cache unless "warm"; page caches dropped before warm lines,
so they measure artfs's block cache, not the kernel's):
  cold sequential      read a 1 GiB object            boto3: 16 threads of 8 MiB ranged GETs
  warm sequential      read it again                  boto3: download again (it keeps nothing)
  first MiB            open and read the first MiB    boto3: one ranged GET
  cold ls -lR          list 10,000 objects            boto3: a paginated listing
  small cold / warm    open+read 2,500 × 4 KiB        boto3: 16 threads of GETs
  random 4 KiB         1,000 reads in a 200 MiB one   boto3: one ranged GET each
artfs's requests are block fetches (`.artfs/stats.json`); bytes are what it fetched.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.conftest import S3_BUCKET, SeaweedFS  # the servers the tests use

ARTFS = [sys.executable, "-m", "artfs"]
MiB = 1 << 20


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def drop_caches() -> None:
    Path("/proc/sys/vm/drop_caches").write_text("3")


class Plain:
    """The baseline: boto3 on plain objects, threaded where that helps."""

    def __init__(self, endpoint: str) -> None:
        self.s3 = boto3.client("s3", endpoint_url=endpoint)
        self.requests = 0

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        self.requests += 1
        kw = {"Range": f"bytes={start}-{end}"} if start is not None else {}
        data: bytes = self.s3.get_object(Bucket=S3_BUCKET, Key=key, **kw)["Body"].read()
        return data

    def download(self, key: str, size: int) -> None:
        parts = [(o, min(size, o + 8 * MiB) - 1) for o in range(0, size, 8 * MiB)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda p: self.get(key, *p), parts))

    def get_many(self, keys: list[str]) -> None:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(self.get, keys))

    def listing(self, prefix: str) -> int:
        n = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=prefix):
            self.requests += 1
            n += len(page.get("Contents", []))
        return n


def read_all(path: Path) -> int:
    buf = bytearray(MiB)
    n = 0
    with open(path, "rb", buffering=0) as f:
        while k := f.readinto(buf):
            n += k
    return n


def read_many(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            f.read()


def random_reads(path: Path, offsets: list[int]) -> None:
    with open(path, "rb", buffering=0) as f:
        for o in offsets:
            os.pread(f.fileno(), 4096, o)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--small", type=int, default=2500)
    ap.add_argument("--listing", type=int, default=10_000)
    args = ap.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "weed").mkdir()
        server = SeaweedFS(work / "weed")
        server.start()
        try:
            os.environ["S3_ENDPOINT_URL"] = server.endpoint
            results = run(work, server.endpoint, args)
        finally:
            server.kill()
    print(f"{'line':18} {'boto3':>18} {'artfs':>18} {'ratio':>7}")
    for line, (base, ours, unit, higher_is_better) in results.items():
        ratio = ours / base if higher_is_better else base / ours
        print(f"{line:18} {base:14.2f} {unit:>3} {ours:14.2f} {unit:>3} {ratio:6.2f}x")


def run(work: Path, endpoint: str, args: argparse.Namespace) -> dict[str, tuple[float, float, str, bool]]:
    src = work / "src"
    (src / "small").mkdir(parents=True)
    (src / "listing").mkdir()
    big = os.urandom(args.big_mib * MiB)
    (src / "big.bin").write_bytes(big)
    (src / "mid.bin").write_bytes(big[: 200 * MiB])
    for i in range(args.small):
        (src / "small" / f"f{i:05d}.bin").write_bytes(os.urandom(4096))
    for i in range(args.listing):
        d = src / "listing" / f"d{i // 1000:02d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:05d}.txt").write_text(str(i))
    plain = Plain(endpoint)
    for path in src.rglob("*"):  # the same data as plain objects, for the baseline
        if path.is_file():
            plain.s3.upload_file(str(path), S3_BUCKET, f"plain/{path.relative_to(src)}")
    store = f"s3://{S3_BUCKET}/artfs"
    subprocess.run(
        [*ARTFS, "--store", store, "push", "bench", str(src)], check=True, stdout=subprocess.DEVNULL
    )
    small = sorted(p.relative_to(src) for p in (src / "small").iterdir())
    rng = random.Random(7)
    offsets = [rng.randrange(0, 200 * MiB - 4096) for _ in range(1000)]
    out: dict[str, tuple[float, float, str, bool]] = {}
    gb = args.big_mib * MiB / 1e9

    def mounted(fn: Callable[[Path], Any]) -> tuple[Any, dict[str, Any]]:
        mnt, cache = work / "mnt", work / f"cache{len(out)}"
        mnt.mkdir(exist_ok=True)
        subprocess.run([*ARTFS, "--store", store, "mount", "--cache-dir", str(cache), str(mnt)], check=True)
        try:
            value = fn(mnt / "bench:v0")
            return value, json.loads((mnt / ".artfs" / "stats.json").read_bytes())
        finally:
            subprocess.run([*ARTFS, "umount", str(mnt)], check=True)

    def sequential(v: Path) -> tuple[float, float]:
        os.stat(v / "big.bin")
        cold = timed(lambda: read_all(v / "big.bin"))
        drop_caches()
        return cold, timed(lambda: read_all(v / "big.bin"))

    (cold, warm), stats = mounted(sequential)
    base = timed(lambda: plain.download("plain/big.bin", len(big)))
    out["cold sequential"] = (gb / base, gb / cold, "GB/s", True)
    out["warm sequential"] = (
        gb / timed(lambda: plain.download("plain/big.bin", len(big))),
        gb / warm,
        "GB/s",
        True,
    )
    print(
        f"sequential: artfs fetched {stats['blocks_fetched']} blocks, {stats['bytes_fetched'] / 1e9:.2f} GB"
    )

    def first_mib(v: Path) -> float:
        os.stat(v / "big.bin")
        return timed(lambda: open(v / "big.bin", "rb").read(MiB))

    ours, _ = mounted(first_mib)
    out["first MiB"] = (timed(lambda: plain.get("plain/big.bin", 0, MiB - 1)) * 1e3, ours * 1e3, "ms", False)

    ours, _ = mounted(
        lambda v: timed(
            lambda: subprocess.run(["ls", "-lR", str(v / "listing")], check=True, stdout=subprocess.DEVNULL)
        )
    )
    out["cold ls -lR"] = (timed(lambda: plain.listing("plain/listing/")), ours, "s", False)

    def small_files(v: Path) -> tuple[float, float]:
        paths = [v / p for p in small]
        cold = timed(lambda: read_many(paths))
        drop_caches()
        return cold, timed(lambda: read_many(paths))

    (cold, warm), _ = mounted(small_files)
    keys = [f"plain/{p}" for p in small]
    base = timed(lambda: plain.get_many(keys))
    out["small cold"] = (len(keys) / base, len(keys) / cold, "f/s", True)
    out["small warm"] = (len(keys) / timed(lambda: plain.get_many(keys)), len(keys) / warm, "f/s", True)

    def random_4k(v: Path) -> float:
        os.stat(v / "mid.bin")
        return timed(lambda: random_reads(v / "mid.bin", offsets))

    ours, stats = mounted(random_4k)
    base = timed(lambda: [plain.get("plain/mid.bin", o, o + 4095) for o in offsets])
    out["random 4 KiB"] = (len(offsets) / base, len(offsets) / ours, "r/s", True)
    print(f"random: artfs fetched {stats['bytes_fetched'] / MiB:.0f} MiB of a 200 MiB object")
    return out


if __name__ == "__main__":
    main()
