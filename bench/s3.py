"""The mount over S3 against its peers, on the same SeaweedFS bucket (loopback), in the same run:
a plain threaded boto3 client, `rclone mount --vfs-cache-mode full` and `s3fs` (Debian packages
rclone and s3fs; this script installs them if missing).

    .venv/bin/python bench/s3.py [--big-mib 1024] [--small 2500] [--listing 10000]

Each tool reads its own copy of the data (uploaded once, never read before). The peers' copy is
one object per file; artfs's is what `artfs push` makes of the same files (small ones in packs,
see the README): that is part of what is measured. Every group of lines starts with the kernel's
page cache dropped (the server's too: it runs on this machine), and every mount is fresh, with an
empty cache, for each group: no tool finds the server warmed by itself or by another.
  cold sequential      read a 1 GiB object            boto3: 16 threads of 8 MiB ranged GETs
  warm sequential      read it again at once          boto3: download again (it keeps nothing)
   … page cache dropped  again, after drop_caches: each tool's own cache, not the kernel's
  first MiB            open and read the first MiB    boto3: one ranged GET
                       (the median over 5 files)
  cold ls -lR          list 10,000 objects            boto3: a paginated listing
  small cold / warm    open+read 2,500 × 4 KiB        boto3: 16 threads of GETs
   … page cache dropped  as above
  random 4 KiB         1,000 reads in a 200 MiB one   boto3: one ranged GET each
The ratio compares artfs with the best peer on each line (>1: artfs is better). A last column
runs the sequential and first-MiB lines through bench/s3ceiling.py, the smallest pyfuse3
filesystem over S3 (the boto3 baseline's GETs, nothing hashed or cached): what any pyfuse3 mount
can reach on this machine, with artfs's ratio to it. A second table gives the requests the
server answered and the bytes it sent for each tool and group of lines, read from SeaweedFS's
own metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).parents[1]))
from access import MiB, drop_caches, parser, read_file, read_many, seaweedfs, timed, workdir

from tests.conftest import S3_BUCKET, SeaweedFS  # the servers the tests use

ARTFS = [sys.executable, "-m", "artfs"]


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


def random_reads(path: Path, offsets: list[int]) -> None:
    with open(path, "rb", buffering=0) as f:
        for o in offsets:
            os.pread(f.fileno(), 4096, o)


PEERS = ("boto3", "rclone", "s3fs")
TOOLS = (*PEERS, "artfs", "ceiling")
GROUPS = ("sequential", "first", "listing", "small", "random")
CEILING_GROUPS = ("sequential", "first")
MID = 200 * MiB  # the object random reads go to (smaller when --big-mib is)
FIRST = [f"first/f{i}.bin" for i in range(5)]  # the files whose first MiB is timed
LINES = {"cold sequential": "GB/s", "warm sequential": "GB/s", "warm seq, drop": "GB/s",
         "first MiB": "ms", "cold ls -lR": "s", "small cold": "f/s", "small warm": "f/s",
         "small warm, drop": "f/s", "random 4 KiB": "r/s"}  # fmt: skip


Results = tuple[dict[str, dict[str, float]], dict[str, dict[str, tuple[int, int]]]]


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--small", type=int, default=2500)
    ap.add_argument("--listing", type=int, default=10_000)
    args = ap.parse_args()
    if not (shutil.which("rclone") and shutil.which("s3fs")):
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "rclone", "s3fs"], check=True, stdout=subprocess.DEVNULL
        )
    os.environ.pop("AWS_CA_BUNDLE", None)  # rclone 1.60 refuses to start with it, even for http
    with workdir(args) as work, seaweedfs(work, key="bench") as server:
        results, traffic = run(work, server, args)
    print(
        f"{'line':16} {'unit':>5} "
        + " ".join(f"{t:>9}" for t in TOOLS[:-1])
        + "  ÷best peer   ceiling   ÷ceiling"
    )
    nan = float("nan")
    for line, unit in LINES.items():
        row = results[line]
        lower_is_better = unit in ("ms", "s")
        best = min if lower_is_better else max
        peer, ceiling = best(row[t] for t in PEERS if t in row), row.get("ceiling", nan)
        peer_ratio, ceiling_ratio = (
            (b / row["artfs"] if lower_is_better else row["artfs"] / b) for b in (peer, ceiling)
        )
        cells = " ".join(f"{row.get(t, nan):9.2f}" for t in TOOLS[:-1])
        print(f"{line:16} {unit:>5} {cells}  {peer_ratio:9.2f}x {ceiling:9.2f} {ceiling_ratio:9.2f}x")
    print("\nsent by the server, per group of lines (mounting and unmounting included): requests / MiB")
    print(f"{'group':16} " + " ".join(f"{t:>15}" for t in TOOLS))
    for group, sent in traffic.items():
        cells = " ".join(
            f"{f'{sent[t][0]} / {sent[t][1] / MiB:.0f}' if t in sent else '':>15}" for t in TOOLS
        )
        print(f"{group:16} {cells}")


def make_data(src: Path, args: argparse.Namespace) -> None:
    (src / "small").mkdir(parents=True)
    big = os.urandom(args.big_mib * MiB)
    (src / "big.bin").write_bytes(big)
    (src / "mid.bin").write_bytes(big[:MID])
    for name in FIRST:
        (src / name).parent.mkdir(exist_ok=True)
        (src / name).write_bytes(os.urandom(2 * MiB))
    for i in range(args.small):
        (src / "small" / f"f{i:05d}.bin").write_bytes(os.urandom(4096))
    for i in range(args.listing):
        d = src / "listing" / f"d{i // 1000:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.txt").write_text(str(i))


def read_first(path: Path, n: int) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return f.read(n)


def median_ms(fn: Callable[[str], object]) -> float:
    """The median time of `fn` over the first-MiB files, in ms (one sample is too noisy)."""
    return statistics.median(timed(functools.partial(fn, name)) for name in FIRST) * 1e3


def measure(group: str, root: Path, small: list[str], offsets: list[int], gb: float) -> dict[str, float]:
    """One group of lines on a fresh mount whose files are under `root`."""
    if group == "sequential":
        os.stat(root / "big.bin")
        cold = gb / timed(lambda: read_file(root / "big.bin"))
        warm = gb / timed(lambda: read_file(root / "big.bin"))
        drop_caches()
        dropped = gb / timed(lambda: read_file(root / "big.bin"))
        return {"cold sequential": cold, "warm sequential": warm, "warm seq, drop": dropped}
    if group == "first":
        for name in FIRST:
            os.stat(root / name)
        return {"first MiB": median_ms(lambda name: read_first(root / name, MiB))}
    if group == "listing":
        ls = ["ls", "-lR", str(root / "listing")]
        return {"cold ls -lR": timed(lambda: subprocess.run(ls, check=True, stdout=subprocess.DEVNULL))}
    if group == "small":
        paths = [root / p for p in small]
        cold = len(paths) / timed(lambda: read_many(paths))
        warm = len(paths) / timed(lambda: read_many(paths))
        drop_caches()
        dropped = len(paths) / timed(lambda: read_many(paths))
        return {"small cold": cold, "small warm": warm, "small warm, drop": dropped}
    os.stat(root / "mid.bin")
    return {"random 4 KiB": len(offsets) / timed(lambda: random_reads(root / "mid.bin", offsets))}


def run(work: Path, server: SeaweedFS, args: argparse.Namespace) -> Results:
    src = work / "src"
    make_data(src, args)
    endpoint = server.endpoint
    plain = Plain(endpoint)
    files = [p for p in src.rglob("*") if p.is_file()]
    with ThreadPoolExecutor(16) as pool:  # the same data as plain objects, a copy per peer
        uploads = [(str(p), f"{peer}/{p.relative_to(src)}") for peer in PEERS for p in files]
        list(pool.map(lambda u: plain.s3.upload_file(u[0], S3_BUCKET, u[1]), uploads))
    store = f"s3://{S3_BUCKET}/artfs"
    subprocess.run(
        [*ARTFS, "--store", store, "push", "bench", str(src)], check=True, stdout=subprocess.DEVNULL
    )
    small = sorted(str(p.relative_to(src)) for p in (src / "small").iterdir())
    rng = random.Random(7)
    mid = min(MID, args.big_mib * MiB)
    offsets = [rng.randrange(0, mid - 4096) for _ in range(1000)]
    size = args.big_mib * MiB
    gb = size / 1e9
    keys = [f"boto3/{p}" for p in small]
    out: dict[str, dict[str, float]] = {line: {} for line in LINES}
    traffic: dict[str, dict[str, tuple[int, int]]] = {group: {} for group in GROUPS}

    def boto3_group(group: str) -> dict[str, float]:
        if group == "sequential":
            return {line: gb / timed(lambda: plain.download("boto3/big.bin", size))
                    for line in ("cold sequential", "warm sequential", "warm seq, drop")}  # fmt: skip
        if group == "first":
            return {"first MiB": median_ms(lambda name: plain.get(f"boto3/{name}", 0, MiB - 1))}
        if group == "listing":
            return {"cold ls -lR": timed(lambda: plain.listing("boto3/listing/"))}
        if group == "small":
            return {
                line: len(keys) / timed(lambda: plain.get_many(keys))
                for line in ("small cold", "small warm", "small warm, drop")
            }
        return {
            "random 4 KiB": len(offsets)
            / timed(lambda: [plain.get("boto3/mid.bin", o, o + 4095) for o in offsets])
        }

    for tool in TOOLS:
        for group in CEILING_GROUPS if tool == "ceiling" else GROUPS:
            drop_caches()
            before = server.traffic()
            if tool == "boto3":
                values = boto3_group(group)
            else:
                with mounted(tool, work, endpoint, store) as root:
                    values = measure(group, root, small, offsets, gb)
            after = server.traffic()
            traffic[group][tool] = (after[0] - before[0], after[1] - before[1])
            for line, value in values.items():
                out[line][tool] = value
    return out, traffic


@contextlib.contextmanager
def mounted(tool: str, work: Path, endpoint: str, store: str) -> Iterator[Path]:
    """A fresh mount of the bench data, with an empty cache; yields the directory holding it."""
    mnt = work / f"mnt-{tool}"
    cache = work / f"cache-{tool}"
    shutil.rmtree(cache, ignore_errors=True)
    mnt.mkdir(exist_ok=True)
    cache.mkdir()
    if tool == "artfs":
        subprocess.run([*ARTFS, "--store", store, "mount", "--cache-dir", str(cache), str(mnt)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        try:
            yield mnt / "bench:v0"
        finally:
            subprocess.run([*ARTFS, "umount", str(mnt)], check=True)
        return
    if tool == "ceiling":  # boto3's objects, through the smallest pyfuse3 filesystem
        env = dict(os.environ)
        argv = [
            sys.executable,
            str(Path(__file__).with_name("s3ceiling.py")),
            endpoint,
            S3_BUCKET,
            "boto3",
            str(mnt),
        ]
    elif tool == "rclone":
        config = {"TYPE": "s3", "PROVIDER": "Other", "ENDPOINT": endpoint, "ACCESS_KEY_ID": "bench",
                  "SECRET_ACCESS_KEY": "bench", "FORCE_PATH_STYLE": "true"}  # fmt: skip
        env = {**os.environ, **{f"RCLONE_CONFIG_SW_{k}": v for k, v in config.items()}}
        argv = ["rclone", "mount", f"sw:{S3_BUCKET}/rclone", str(mnt), "--read-only",
                "--vfs-cache-mode", "full", "--cache-dir", str(cache)]  # fmt: skip
    else:
        env = dict(os.environ)
        passwd = work / "s3fs.passwd"
        passwd.write_text("bench:bench\n")
        passwd.chmod(0o600)
        argv = ["s3fs", f"{S3_BUCKET}:/s3fs", str(mnt), "-f", "-o", f"url={endpoint}",
                "-o", "use_path_request_style", "-o", f"passwd_file={passwd}", "-o", f"use_cache={cache}",
                "-o", "ro"]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt) or not (mnt / "big.bin").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{tool} did not mount {mnt}")
            time.sleep(0.1)
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
