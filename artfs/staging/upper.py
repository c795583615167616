"""The written contents of a staging session: one local file per inode (never per path, so a
rename moves no bytes), private to the user. A file is held open while the mount has it open,
and opened for a moment otherwise."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class Upper:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fds: dict[int, int] = {}

    def path(self, ino: int) -> str:
        return f"{self.root}/{ino:x}"

    def exists(self, ino: int) -> bool:
        return os.path.exists(self.path(ino))

    def create(self, ino: int) -> int:
        """An empty file for `ino` (emptied if there was one), open."""
        self.close(ino)
        fd = os.open(self.path(ino), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._fds[ino] = fd
        return fd

    def fd(self, ino: int) -> int:
        fd = self._fds.get(ino)
        if fd is None:
            fd = self._fds[ino] = os.open(self.path(ino), os.O_RDWR | os.O_CLOEXEC)
        return fd

    def stat(self, ino: int) -> os.stat_result:
        fd = self._fds.get(ino)
        return os.fstat(fd) if fd is not None else os.stat(self.path(ino))

    def close(self, ino: int) -> None:
        fd = self._fds.pop(ino, None)
        if fd is not None:
            os.close(fd)

    def remove(self, ino: int) -> None:
        self.close(ino)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(ino))

    def close_all(self) -> None:
        for ino in list(self._fds):
            self.close(ino)
