"""What /proc says about mounts and daemons: which directories are mounts, of what, on which
device (`/proc/self/mountinfo`; artfs mounts are `fuse.artfs`, and a push never reads through
one), and whether a daemon's process still runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

FSTYPE = "fuse.artfs"


@dataclass(frozen=True)
class MountInfo:
    fstype: str
    device: str  # major:minor, as st_dev of every file on it


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape")


def mounts() -> dict[str, MountInfo]:
    """Mount point → what is mounted there."""
    out = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        out[_unescape(fields[4])] = MountInfo(fields[sep + 1], fields[2])
    return out


def is_artfs_mount(mountpoint: str) -> bool:
    info = mounts().get(os.path.abspath(mountpoint))
    return info is not None and info.fstype == FSTYPE


def artfs_devices() -> set[int]:
    """st_dev of every artfs mount on this machine."""
    out = set()
    for info in mounts().values():
        if info.fstype == FSTYPE:
            major, minor = info.device.split(":")
            out.add(os.makedev(int(major), int(minor)))
    return out


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent has not looked yet
