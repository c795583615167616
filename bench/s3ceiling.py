"""The ceiling for bench/s3.py: the smallest pyfuse3 filesystem over S3, to show what any
pyfuse3 mount of S3 objects can do at best on this machine. It serves the objects under a prefix
read-only; a read GETs exactly the bytes it asks for, and once reads follow each other, 8 MiB
GETs on 8 MiB boundaries go a window ahead (the GETs of the boto3 baseline). Nothing is hashed,
cached, retried or copied beyond what FUSE needs, and nothing but reading is supported.

    python bench/s3ceiling.py ENDPOINT BUCKET PREFIX MOUNTPOINT   (foreground; unmount to stop)
"""

from __future__ import annotations

import errno
import stat
import sys
from dataclasses import dataclass, field

import boto3
import pyfuse3
import trio
import urllib3

SPAN = 8 << 20
WINDOW = 16  # spans in flight ahead of a sequential reader (boto3's 16 threads × 8 MiB)
TIMEOUT = 24 * 3600.0


@dataclass
class Reader:
    key: str
    size: int
    end: int = -1  # where the last read ended
    spans: dict[int, trio.Event] = field(default_factory=dict)
    data: dict[int, bytes] = field(default_factory=dict)


class Ceiling(pyfuse3.Operations):
    def __init__(self, endpoint: str, bucket: str, prefix: str, nursery: trio.Nursery) -> None:
        super().__init__()
        self.s3 = boto3.client("s3", endpoint_url=endpoint)
        self.bucket = bucket
        self.http = urllib3.PoolManager(maxsize=WINDOW + 1)
        self.limiter = trio.CapacityLimiter(WINDOW + 1)
        self.nursery = nursery
        self.children: dict[int, dict[bytes, int]] = {pyfuse3.ROOT_INODE: {}}
        self.objects: dict[int, tuple[str, int]] = {}  # inode → key, size
        self.readers: dict[int, Reader] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            for o in page.get("Contents", []):
                *dirs, name = o["Key"].removeprefix(f"{prefix}/").split("/")
                parent = pyfuse3.ROOT_INODE
                for d in dirs:
                    parent = self.children[parent].setdefault(d.encode(), len(self.children) + 1000)
                    self.children.setdefault(parent, {})
                ino = len(self.objects) + 2_000_000
                self.children[parent][name.encode()] = ino
                self.objects[ino] = (o["Key"], o["Size"])

    async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        if inode in self.objects:
            e.st_mode, e.st_size = stat.S_IFREG | 0o444, self.objects[inode][1]
        else:
            e.st_mode = stat.S_IFDIR | 0o755
        e.st_ino, e.attr_timeout, e.entry_timeout = inode, TIMEOUT, TIMEOUT
        return e

    async def lookup(self, parent: int, name: bytes, ctx: object = None) -> pyfuse3.EntryAttributes:
        ino = self.children.get(parent, {}).get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self.getattr(ino)

    async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
        self.readers[inode] = Reader(*self.objects[inode])
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        r = self.readers[fh]
        size = min(size, r.size - off)
        sequential, r.end = off == r.end, off + size
        if size <= 0:
            return b""
        if not sequential:
            return await self._get(r.key, off, off + size)
        first, last = off // SPAN, (off + size - 1) // SPAN
        for k in range(first, min(first + WINDOW, -(-r.size // SPAN))):
            if k not in r.spans:
                r.spans[k] = trio.Event()
                self.nursery.start_soon(self._load, r, k)
        for k in [k for k in r.data if k < first]:
            del r.data[k], r.spans[k]
        for k in range(first, last + 1):
            await r.spans[k].wait()
        out = memoryview(
            r.data[first] if first == last else b"".join(r.data[k] for k in range(first, last + 1))
        )
        return out[off - first * SPAN : off - first * SPAN + size]

    async def _load(self, r: Reader, k: int) -> None:
        r.data[k] = await self._get(r.key, k * SPAN, min(r.size, (k + 1) * SPAN))
        r.spans[k].set()

    async def _get(self, key: str, start: int, end: int) -> bytes:
        def fetch() -> bytes:
            url = self.s3.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key})
            headers = {"Range": f"bytes={start}-{end - 1}"}
            data: bytes = self.http.request("GET", url, headers=headers, preload_content=False).read()
            return data

        return await trio.to_thread.run_sync(fetch, limiter=self.limiter)

    async def release(self, fh: int) -> None:
        self.readers.pop(fh, None)


async def serve(endpoint: str, bucket: str, prefix: str, mountpoint: str) -> None:
    async with trio.open_nursery() as nursery:
        pyfuse3.init(Ceiling(endpoint, bucket, prefix, nursery), mountpoint, {"fsname=ceiling", "ro"})
        try:
            await pyfuse3.main()
        finally:
            pyfuse3.close()
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(serve, *sys.argv[1:5])
