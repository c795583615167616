"""Shared fixtures. Stores are real (a `file://` directory now; S3 and GCS servers join the
`backend_url` parametrization when their backends land)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import artfs
from artfs.storage import Backend, open_backend

ARTFS = [sys.executable, "-m", "artfs"]


def make_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    """Create files under root; a value starting with '->' makes a symlink, None an empty dir."""
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            p.mkdir(exist_ok=True)
        elif isinstance(content, str) and content.startswith("->"):
            p.symlink_to(content[2:])
        else:
            p.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


@pytest.fixture(params=["file"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


@pytest.fixture
def backend(backend_url: str) -> Iterator[Backend]:
    with open_backend(backend_url) as b:
        yield b


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


@pytest.fixture
def store(store_url: str) -> Iterator[artfs.Store]:
    with artfs.Store(store_url) as s:
        yield s


def run_cli(
    *args: str, store: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    if store:
        full_env["ARTFS_STORE"] = store
    return subprocess.run([*ARTFS, *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=120)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs), to run out of space on."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
