"""The journal of a staging session: every change to the tree, appended as one record per line.

A record is a JSON object followed by a tab and the xxh3-64 of the JSON, so a line torn by a
crash (or garbled on disk) is told from a whole one: replay stops at the first bad line and the
file is cut back to the last good one, so that appends go on after it. Appends are written at
once (a killed daemon loses none: they are in the kernel) and made durable by `sync`, which the
staging mount calls on `fsync` and `fsyncdir`, and before a commit. An append the disk has no
room for (part of a line written) is cut off again at once and fails with the disk's errno, so
that the records after it, once there is room, are not hidden behind a torn line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import xxhash

from ..errors import FsError

Record = dict[str, Any]


def _line(record: Record) -> bytes:
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    return body + b"\t" + xxhash.xxh3_64_hexdigest(body).encode() + b"\n"


def _parse(line: bytes) -> Record | None:
    body, tab, check = line.rstrip(b"\n").rpartition(b"\t")
    if not tab or xxhash.xxh3_64_hexdigest(body).encode() != check:
        return None
    try:
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("op"), str) else None


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._end = os.fstat(self._fd).st_size  # where the whole records end
        self.records = 0  # appended since opened

    @staticmethod
    def read(path: Path) -> Iterator[Record]:
        """The whole records of a journal, in order; a torn tail is cut off the file."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        good = 0
        for line in data.splitlines(keepends=True):
            record = _parse(line) if line.endswith(b"\n") else None
            if record is None:
                break
            good += len(line)
            yield record
        if good < len(data):
            os.truncate(path, good)

    def append(self, record: Record) -> None:
        """FsError (ENOSPC, EDQUOT, EIO…) when it could not be written whole; nothing is left."""
        line = _line(record)
        try:
            written = os.write(self._fd, line)
        except OSError as e:
            self._cut()
            raise FsError(e.errno or errno.EIO, f"{self.path}: {e.strerror}") from None
        if written != len(line):  # a disk that filled up mid-line
            self._cut()
            raise FsError(errno.ENOSPC, f"{self.path}: no room for the journal")
        self._end += len(line)
        self.records += 1

    def _cut(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._end)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
