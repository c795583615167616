"""Crash drills: the staging daemon and the commit killed with SIGKILL at seeded random points.
Afterwards every write that was fsynced is there byte for byte, and the store holds complete
versions only — exactly one per finished commit (bench/crash.py runs many more of these)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from functools import partial
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
    inodes = {rel: os.stat(s.path / rel).st_ino for rel in durable}
    s.kill()
    assert [x["id"] for x in stopped_sessions()] == [sid]
    session = Path(os.environ["XDG_STATE_HOME"]) / "artfs/stage" / sid  # private, as the cache is
    for p in (session, *session.rglob("*")):
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p

    again = tmp_path / "again"
    again.mkdir()
    assert run_cli("stage", "--resume", sid, str(again), store=store_url).returncode == 0
    for rel, data in durable.items():
        assert (again / rel).read_bytes() == data, rel
        assert os.stat(again / rel).st_ino == inodes[rel], rel  # written files keep their inodes
    for i in range(3):
        assert (again / f"d{i}/base{i}.bin").read_bytes() == (tmp_path / f"src/d{i}/base{i}.bin").read_bytes()
    expected = tmp_path / "expected"
    subprocess.run(["cp", "-a", f"{again}/.", str(expected)], check=True)
    done = run_cli("umount", str(again))
    assert done.returncode == 0, done.stderr
    verify(store_url, done.stdout.strip(), expected)


# Where a commit can be cut short, in order, as a local store and the process's open files show it.
PHASES = ("starting", "hashing", "uploading", "written", "claimed", "aliases", "done")
ALIASES = ("a1", "a2", "a3")


def commit_phase(store: Path, pid: int, upper: Path, before: set[str]) -> str:
    """How far a running `artfs commit` of ds:v1 has got: starting, hashing (it has staged files
    open), uploading (temp objects in the store), written (blobs and tree objects published: the
    tree objects show it, fewer to look at), claimed (ds:v1 exists), aliases (one of them moved),
    done (all of them)."""
    record = store / "artifacts/ds/aliases"
    moved = sum((record / a).exists() for a in ALIASES)
    if (store / "artifacts/ds/versions/1").exists():
        return "done" if moved == len(ALIASES) else "aliases" if moved else "claimed"
    if trees(store) - before:
        return "written"
    if any(f.is_file() for f in (store / ".tmp").rglob("*")):
        return "uploading"
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        if any(os.readlink(f).startswith(str(upper)) for f in Path(f"/proc/{pid}/fd").iterdir()):
            return "hashing"
    return "starting"


def trees(store: Path) -> set[str]:
    return {str(p) for p in (store / "trees").rglob("*") if p.is_file()}


def kill_at(commit: subprocess.Popen[bytes], phase: Callable[[], str], target: str) -> str:
    """SIGKILL `commit` as soon as `phase()` is `target` or past it (polled), unless it exits
    first; the phase it was in, as last seen."""
    while (now := phase()) != "done" and PHASES.index(now) < PHASES.index(target) and commit.poll() is None:
        time.sleep(0.0002)
    commit.send_signal(signal.SIGKILL)
    commit.communicate()
    return now


@pytest.mark.parametrize("seed", SEEDS)
def test_a_commit_killed_in_any_phase_finishes_as_one_version(
    tmp_path: Path, store_url: str, stage: StageFactory, seed: int
) -> None:
    """Killed first in the phase the seed picks (waited for), then at up to two random moments;
    finished by `artfs commit ID`, it is one complete version with every alias moved."""
    rng = random.Random(seed)
    make_tree(tmp_path / "src", {"keep.txt": "base\n"})
    push(store_url, "ds", tmp_path / "src")
    s = stage(store_url, "ds", *(f"-a{a}" for a in ALIASES))
    sid = s.session
    for i in range(60):
        (s.path / f"dir{i % 6}").mkdir(exist_ok=True)
        (s.path / f"dir{i % 6}/f{i}").write_bytes(rng.randbytes(rng.randrange(1, 200_000)))
    expected = tmp_path / "expected"
    subprocess.run(["cp", "-a", f"{s.path}/.", str(expected)], check=True)
    s.kill()

    store = Path(store_url.removeprefix("file://"))
    upper = Path(os.environ["XDG_STATE_HOME"]) / "artfs/stage" / sid / "upper"
    before = trees(store)
    env = {**os.environ, "ARTFS_STORE": store_url}
    target = PHASES[1 + seed % (len(PHASES) - 2)]  # hashing … aliases
    landed = []
    for attempt in range(3):
        commit = subprocess.Popen(
            [*ARTFS, "commit", sid], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        if attempt > 0:
            time.sleep(rng.uniform(0.0, 1.5))
            if commit.poll() is not None:
                break
        phase = partial(commit_phase, store, commit.pid, upper, before)
        landed.append(kill_at(commit, phase, target if attempt == 0 else "starting"))
    else:
        commit = subprocess.Popen(
            [*ARTFS, "commit", sid], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    if log := os.environ.get("ARTFS_CRASH_LOG"):  # bench/crash.py counts where the kills landed
        with open(log, "a") as f:
            f.write(f"{target} {' '.join(landed)}\n")
    out, err = commit.communicate(timeout=120)
    assert commit.returncode == 0, err
    assert out.decode().strip() == "ds:v1"
    versions = run_cli("ls", "ds", "--json", store=store_url).stdout
    listed = {v["version"]: v for v in json.loads(versions)}
    assert sorted(listed) == ["v0", "v1"], versions
    assert set(ALIASES) <= set(listed["v1"]["aliases"]), listed["v1"]
    verify(store_url, "ds:v1", expected)
    assert stopped_sessions() == []
    assert not is_artfs_mount(str(s.path)) and not running(commit.pid)
    # asked again (as after a commit killed once done, before it said so): the same answer
    again = run_cli("commit", sid, store=store_url)
    assert (again.returncode, again.stdout.strip()) == (0, "ds:v1"), again.stderr
    resumed = run_cli("stage", "--resume", sid, str(tmp_path / "mnt2"), store=store_url)
    assert resumed.returncode == 5 and "was committed as ds:v1" in resumed.stderr, resumed.stderr
    assert run_cli("ls", "ds", "--json", store=store_url).stdout == versions
