"""The journal of a staging session: every change to the tree, appended as one record per line.

A record is a JSON object followed by a tab and the xxh3-64 of the JSON, so a line torn by a
crash (or garbled on disk) is told from a whole one: replay stops at the first bad line and the
file is cut back to the last good one, so that appends go on after it. Appends are written at
once (a killed daemon loses none: they are in the kernel) and made durable by `sync`, which the
staging mount calls on `fsync` and `fsyncdir`, and before a commit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import xxhash

from ..errors import CorruptDataError

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
        line = _line(record)
        if os.write(self._fd, line) != len(line):
            raise CorruptDataError(f"{self.path}: short write to the journal")
        self.records += 1

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
