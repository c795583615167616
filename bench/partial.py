"""Partial reads through the mount over S3: what a reader asks for against what the server sends.

The cases ML users mount for: pyarrow reading 2 of the 20 columns of a parquet file, or one of
its 8 row groups; one tensor of a safetensors checkpoint; one member of a zip; and, for the other
side of the trade, 1,000 random 4 KiB reads in a 200 MiB file (whose reader gets the rest of
the file fetched once it has asked for half of it). Each case runs on a fresh mount with an empty
cache, after the kernel's page cache is dropped (the server's too: it runs on this machine).
"Asked" counts the bytes the application's reads request; "kernel" the bytes the kernel asked
the daemon for (its own read-ahead, up to 1 MiB past a read, included: what any FUSE mount with
1 MiB requests is asked, the floor for this line); "sent" the bytes SeaweedFS's own metrics say
it sent. Target: sent ≤ 1.5 × asked + one span (8 MiB) per sequential run.

Needs pyarrow (the `bench` extra: .venv/bin/pip install -e '.[bench]').

    .venv/bin/python bench/partial.py [--mib 200]
"""

from __future__ import annotations

import io
import json
import random
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1]))
from access import MiB, drop_caches, parser, seaweedfs, workdir

from tests.conftest import S3_BUCKET  # the servers the tests use

ARTFS = [sys.executable, "-m", "artfs"]
SPAN = 8 * MiB


class Counting(io.RawIOBase):
    """A file that counts the bytes its reader asks for."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed with this object
        self.asked = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, buf: Any) -> int:
        n = self._f.readinto(buf) or 0
        self.asked += n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def make_data(src: Path, mib: int) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    rows = mib * MiB // (20 * 8)
    table = pa.table({f"c{i:02d}": rng.random(rows) for i in range(20)})
    pq.write_table(table, src / "table.parquet", row_group_size=-(-rows // 8), compression="none")
    tensors = {f"t{i:02d}": rng.random(mib * MiB // 20 // 8) for i in range(20)}
    header: dict[str, Any] = {}
    at = 0
    for name, t in tensors.items():
        header[name] = {"dtype": "F64", "shape": [len(t)], "data_offsets": [at, at + t.nbytes]}
        at += t.nbytes
    head = json.dumps(header).encode()
    with open(src / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for t in tensors.values():
            f.write(t.tobytes())
    with zipfile.ZipFile(src / "archive.zip", "w", zipfile.ZIP_STORED) as z:
        for i in range(20):
            z.writestr(f"member{i:02d}.bin", rng.bytes(mib * MiB // 20))
    (src / "random.bin").write_bytes(rng.bytes(mib * MiB))
    return {"rows": rows}


def parquet_columns(root: Path) -> int:
    import pyarrow.parquet as pq

    f = Counting(root / "table.parquet")
    pq.read_table(f, columns=["c03", "c11"])
    return f.asked


def parquet_row_group(root: Path) -> int:
    import pyarrow.parquet as pq

    f = Counting(root / "table.parquet")
    pq.ParquetFile(f).read_row_group(5)
    return f.asked


def one_tensor(root: Path) -> int:
    """What a loader does for one tensor: the header, then the tensor's bytes."""
    with open(root / "model.safetensors", "rb", buffering=0) as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        start, end = header["t13"]["data_offsets"]
        f.seek(8 + n + start)
        data = b""
        while len(data) < end - start:
            data += f.read(min(MiB, end - start - len(data)))
    return 8 + n + len(data)


def zip_member(root: Path) -> int:
    f = Counting(root / "archive.zip")
    with zipfile.ZipFile(f) as z:
        z.read("member07.bin")
    return f.asked


def random_4k(root: Path) -> int:
    size = (root / "random.bin").stat().st_size
    rnd = random.Random(7)
    with open(root / "random.bin", "rb", buffering=0) as f:
        for _ in range(1000):
            f.seek(rnd.randrange(0, size - 4096) // 4096 * 4096)
            f.read(4096)
    return 1000 * 4096


CASES: list[tuple[str, Callable[[Path], int], int]] = [  # name, reader, sequential runs
    ("parquet: 2 of 20 columns", parquet_columns, 2 * 8 + 1),
    ("parquet: 1 of 8 row groups", parquet_row_group, 20 + 1),
    ("safetensors: 1 of 20 tensors", one_tensor, 2),
    ("zip: 1 of 20 members", zip_member, 3),
    ("random 4 KiB × 1,000", random_4k, 0),
]


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--mib", type=int, default=200)
    args = ap.parse_args()
    with workdir(args) as work, seaweedfs(work) as server:
        src = work / "src"
        src.mkdir()
        make_data(src, args.mib)
        store = f"s3://{S3_BUCKET}/partial"
        subprocess.run([*ARTFS, "--store", store, "push", "data", str(src)], check=True, capture_output=True)
        rows = []
        for i, (name, read, runs) in enumerate(CASES):
            mnt = work / f"mnt{i}"
            mnt.mkdir()
            mount = [*ARTFS, "--store", store, "mount", "--cache-dir", str(work / f"cache{i}"), str(mnt)]
            subprocess.run(mount, check=True, capture_output=True)
            try:
                drop_caches()
                before = server.traffic()
                t = time.perf_counter()
                asked = read(mnt / "data:v0")
                seconds = time.perf_counter() - t
                time.sleep(1)  # read-ahead under way finishes: it counts too
                requests, sent = (a - b for a, b in zip(server.traffic(), before, strict=True))
                kernel = json.loads((mnt / ".artfs" / "stats.json").read_text())["bytes_requested"]
            finally:
                subprocess.run([*ARTFS, "umount", str(mnt)], check=True)
            rows.append((name, asked, kernel, sent, requests, seconds, runs))
    head = f"{'':30} {'asked':>10} {'kernel':>10} {'sent':>10} {'sent/asked':>10} {'/kernel':>8}"
    print(f"{head} {'GETs':>6} {'time':>7}  target")
    for name, asked, kernel, sent, requests, seconds, runs in rows:
        line = (
            f"{name:30} {asked / MiB:8.1f}Mi {kernel / MiB:8.1f}Mi {sent / MiB:8.1f}Mi"
            f" {sent / asked:10.2f} {sent / kernel:8.2f} {requests:6}"
        )
        if runs:
            bound = 1.5 * asked + runs * SPAN
            print(f"{line} {seconds:6.2f}s  {'✓' if sent <= bound else '✗'} ≤ {bound / MiB:.0f}Mi")
        else:
            print(f"{line} {seconds:6.2f}s  ({1000 / seconds:.0f} reads/s)")


if __name__ == "__main__":
    main()
