"""Crash drills: the staging daemon and the commit killed with SIGKILL at seeded random points.
Afterwards every write that was fsynced is there byte for byte, and the store holds complete
versions only — exactly one per finished commit (bench/crash.py runs many more of these)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from artfs.mounttable import is_artfs_mount, running

from .conftest import ARTFS, StageFactory, make_tree, push, run_cli, verify

SEEDS = range(int(os.environ.get("ARTFS_CRASH_SEEDS", "5")))  # bench/crash.py asks for more


def durable_write(path: Path, data: bytes) -> None:
    """Write, fsync the file, fsync its directory (what a careful program does for a new name)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def stopped_sessions() -> list[dict[str, object]]:
    return [s for s in json.loads(run_cli("stage", "--list", "--json").stdout) if s["state"] == "stopped"]


@pytest.mark.parametrize("seed", SEEDS)
def test_fsynced_writes_survive_a_killed_daemon(
    tmp_path: Path, store_url: str, stage: StageFactory, seed: int
) -> None:
    rng = random.Random(seed)
    make_tree(tmp_path / "src", {f"d{i}/base{i}.bin": os.urandom(20_000) for i in range(3)})
    push(store_url, "ds", tmp_path / "src")
    s = stage(store_url, "ds")
    sid = s.session
    durable: dict[str, bytes] = {}
    for step in range(rng.randrange(5, 40)):
        rel = f"d{rng.randrange(4)}/f{rng.randrange(8)}"
        (s.path / rel).parent.mkdir(exist_ok=True)
        data = rng.randbytes(rng.randrange(1, 50_000))
        if rng.random() < 0.6:
            durable_write(s.path / rel, data)
            durable[rel] = data
        else:
            (s.path / rel).write_bytes(data)  # not fsynced: may or may not survive
            durable.pop(rel, None)
        if rng.random() < 0.2 and durable:  # a rename, then an fsync of the directory
            old = rng.choice(sorted(durable))
            new = f"{old}.moved{step}"
            os.rename(s.path / old, s.path / new)
            durable_write(s.path / f"{new}.marker", b"m")
            durable[new] = durable.pop(old)
            durable[f"{new}.marker"] = b"m"
    s.kill()
    assert [x["id"] for x in stopped_sessions()] == [sid]

    again = tmp_path / "again"
    again.mkdir()
    assert run_cli("stage", "--resume", sid, str(again), store=store_url).returncode == 0
    for rel, data in durable.items():
        assert (again / rel).read_bytes() == data, rel
    for i in range(3):
        assert (again / f"d{i}/base{i}.bin").read_bytes() == (tmp_path / f"src/d{i}/base{i}.bin").read_bytes()
    expected = tmp_path / "expected"
    subprocess.run(["cp", "-a", f"{again}/.", str(expected)], check=True)
    done = run_cli("umount", str(again))
    assert done.returncode == 0, done.stderr
    verify(store_url, done.stdout.strip(), expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_commit_killed_in_any_phase_finishes_as_one_version(
    tmp_path: Path, store_url: str, stage: StageFactory, seed: int
) -> None:
    rng = random.Random(seed)
    make_tree(tmp_path / "src", {"keep.txt": "base\n"})
    push(store_url, "ds", tmp_path / "src")
    s = stage(store_url, "ds")
    sid = s.session
    for i in range(60):
        (s.path / f"dir{i % 6}").mkdir(exist_ok=True)
        (s.path / f"dir{i % 6}/f{i}").write_bytes(rng.randbytes(rng.randrange(1, 200_000)))
    expected = tmp_path / "expected"
    subprocess.run(["cp", "-a", f"{s.path}/.", str(expected)], check=True)
    s.kill()

    env = {**os.environ, "ARTFS_STORE": store_url}
    for _ in range(3):  # killed at a random moment, up to three times
        commit = subprocess.Popen(
            [*ARTFS, "commit", sid], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(0.0, 1.5))
        if commit.poll() is not None:
            break
        commit.send_signal(signal.SIGKILL)
        commit.communicate()
    else:
        commit = subprocess.Popen(
            [*ARTFS, "commit", sid], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    out, err = commit.communicate(timeout=120)
    assert commit.returncode == 0, err
    assert out.decode().strip() == "ds:v1"
    versions = run_cli("ls", "ds", "--json", store=store_url).stdout
    assert sorted(v["version"] for v in json.loads(versions)) == ["v0", "v1"], versions
    verify(store_url, "ds:v1", expected)
    assert stopped_sessions() == []
    assert not is_artfs_mount(str(s.path)) and not running(commit.pid)
