"""The staging mount, for real: `artfs stage` starts a daemon on /dev/fuse, ordinary tools edit
it, `artfs umount` commits; every test ends by comparing the committed version, byte for byte,
with the same work done on a local directory.

Nothing here is skipped: if FUSE cannot mount, these tests fail and say why.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import socket
import sqlite3
import stat
import subprocess
import time
from functools import partial
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artfs.mounttable import is_artfs_mount, running

from .conftest import ARTFS as ARTFS_CLI
from .conftest import S3_BUCKET, MountFactory, SeaweedFS, StageFactory, make_tree, push, run, run_cli, verify
from .t3_staging import _build_base, _errno_of, _local_op, _local_tree, ops

MiB = 1 << 20


# -- ordinary tools ----------------------------------------------------------------------------
def edits(root: Path, extra: Path) -> None:
    """What people do to a checked-out dataset, done the same way to the stage and to a local
    copy: copies in, archives unpacked, syncs, saves, moves and removals."""
    run("cp", "-r", str(extra / "more"), str(root / "more"))
    run("cp", "-a", str(extra / "more"), str(root / "more-a"))
    run("rsync", "-a", "--delete", f"{extra}/synced/", f"{root}/data/")
    run("tar", "-xf", str(extra / "bundle.tar"), "-C", str(root))
    run("unzip", "-q", "-o", str(extra / "bundle.zip"), "-d", str(root / "unzipped"))
    # an editor's save: write a temporary file, fsync, rename over the original
    tmp = root / ".README.md.swp"
    with open(tmp, "w") as f:
        f.write("edited\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / "README.md")
    shutil.copyfile(root / "bin/run.sh", root / "bin/run2.sh")
    shutil.copytree(root / "dir with space", root / "copied dir")
    run("mv", str(root / "copied dir"), str(root / "more/moved dir"))
    run("rm", "-rf", str(root / "emptydir"), str(root / "pack.zip"))
    with open(root / "data/append.log", "ab") as f:  # appended to a file from the base
        f.write(b"appended\n")
    os.truncate(root / "db.sqlite", 4096)  # a base file cut short
    with sqlite3.connect(root / "rollback.db") as db:
        db.execute("create table t (x integer)")
        db.executemany("insert into t values (?)", [(i,) for i in range(200)])
    db.close()
    with sqlite3.connect(root / "wal.db") as db:
        db.execute("pragma journal_mode=wal")
        db.execute("create table t (x integer)")
        for i in range(50):
            db.execute("insert into t values (?)", (i,))
            db.commit()
        db.execute("pragma wal_checkpoint(truncate)")
    db.close()


def _extra(tmp_path: Path) -> Path:
    extra = make_tree(
        tmp_path / "extra",
        {
            "more/a.txt": "a\n",
            "more/deep/b.bin": os.urandom(300_000),
            "synced/new.csv": "x,y\n1,2\n",
            "synced/append.log": "old\n",
            "tarred/t.txt": "from tar\n",
            "zipped/z.txt": "from zip\n",
        },
    )
    run("tar", "-cf", str(extra / "bundle.tar"), "-C", str(extra), "tarred")
    run("zip", "-qr", str(extra / "bundle.zip"), "zipped", cwd=extra)
    return extra


def test_ordinary_tools_leave_the_tree_a_local_disk_would(
    tmp_path: Path, store_url: str, rich_tree: Path, stage: StageFactory, mount: MountFactory
) -> None:
    push(store_url, "rich", rich_tree)
    (rich_tree / "data/append.log").write_text("log\n")
    assert push(store_url, "rich", rich_tree) == "rich:v1"
    extra = _extra(tmp_path)
    local = tmp_path / "local"  # the version as a checkout has it (modes as a version keeps them)
    assert run_cli("download", "rich:v1", str(local), store=store_url).returncode == 0
    edits(local, extra)

    s = stage(store_url, "rich")
    edits(s.path, extra)
    assert _local_tree(s.path) == _local_tree(local)
    status = s.cli("status", str(s.path)).stdout.splitlines()
    assert "M README.md" in status and "D emptydir/" in status and "A wal.db" in status, status
    assert s.umount().stdout.strip() == "rich:v2"
    verify(store_url, "rich:v2", local)
    # git inside a stage, then checked through the read-only view of the committed version
    repo = stage(store_url, "rich")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "gc.auto=0"]
    run(*git, "clone", "-q", str(rich_tree / "repo"), str(repo.path / "clone"))
    (repo.path / "clone/b.txt").write_text("three\n")
    run(*git, "-C", str(repo.path / "clone"), "add", ".")
    run(*git, "-C", str(repo.path / "clone"), "commit", "-qm", "third")
    run(*git, "-C", str(repo.path / "clone"), "gc", "-q")
    run(*git, "-C", str(repo.path / "repo"), "commit", "-qam", "in place", "--allow-empty")
    assert repo.umount().stdout.strip() == "rich:v3"
    v3 = mount(store_url).path / "rich:v3"  # the committed version, through the read-only mount
    run("git", "-C", str(v3 / "clone"), "fsck", "--strict")
    assert run("git", "-C", str(v3 / "clone"), "log", "--format=%s") == "third\nsecond\nfirst\n"
    run("git", "-C", str(v3 / "repo"), "fsck", "--strict")


def test_unchanged_makes_no_version_and_a_new_name_starts_empty(
    tmp_path: Path, store_url: str, rich_tree: Path, stage: StageFactory
) -> None:
    push(store_url, "rich", rich_tree)
    s = stage(store_url, "rich")
    (s.path / "README.md").write_text("hello\n")  # written, the same bytes
    (s.path / "tmp").write_text("x")
    (s.path / "tmp").unlink()
    assert s.umount().stdout.strip() == "unchanged: rich:v0"

    new = stage(store_url, "fresh", "-t", "model", "-a", "best", "-m", "epochs=3")
    assert os.listdir(new.path) == []
    (new.path / "weights.bin").write_bytes(b"w" * 1000)
    os.link(new.path / "weights.bin", new.path / "same.bin")
    assert os.stat(new.path / "same.bin").st_nlink == 2
    os.symlink("/etc/passwd", new.path / "outside")
    done = new.umount()
    assert done.stdout.strip() == "fresh:v0"
    assert "same.bin: a hard link to weights.bin" in done.stderr or "weights.bin: a hard link" in done.stderr
    assert "outside" in done.stderr and "left out" in done.stderr
    info = run_cli("info", "fresh:best", "--json", store=store_url)
    assert '"type": "model"' in info.stdout and '"epochs": 3' in info.stdout, info.stdout
    assert sorted(
        p.split()[-1] for p in run_cli("files", "fresh:v0", store=store_url).stdout.splitlines()[1:]
    ) == [
        "same.bin",
        "weights.bin",
    ]


def test_a_first_stage_creates_the_store_and_special_files_stay_in_the_session(
    tmp_path: Path, stage: StageFactory
) -> None:
    store_url = f"file://{tmp_path / 'new-store'}"
    s = stage(store_url, "fresh")
    os.mkfifo(s.path / "pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(s.path / "sock"))
    assert stat.S_ISFIFO(os.lstat(s.path / "pipe").st_mode)
    assert stat.S_ISSOCK(os.lstat(s.path / "sock").st_mode)
    with open(s.path / "huge", "wb") as f:  # past what the disk under the upper area can hold
        try:
            f.truncate(999_999_999_999_999)
        except OSError as e:
            assert e.errno in (errno.EFBIG, errno.EINVAL), e  # never EIO
        else:
            assert os.stat(s.path / "huge").st_size == 999_999_999_999_999
        f.truncate(3)
    with open(s.path / "sparse", "wb") as f:  # a byte at the end of 1 GiB stays a hole in the store
        f.seek(1 << 30)
        f.write(b"end")
    for i in range(24):
        os.mkfifo(s.path / f"p{i:02}")
    done = s.umount()
    assert done.stdout.strip() == "fresh:v0"
    # 26 notes: the first 20 printed, all of them in a file named on the last line
    shown = [line for line in done.stderr.splitlines() if line.startswith("artfs: left out: ")]
    assert len(shown) == 20 and "left out: p00: a fifo" in done.stderr
    notes = Path(done.stderr.strip().splitlines()[-1].split("… and 6 more: ")[1]).read_text()
    assert "left out: pipe: a fifo" in notes and "left out: sock: a socket" in notes
    assert len(notes.splitlines()) == 26
    listed = json.loads(run_cli("files", "fresh:v0", "--json", store=store_url).stdout)
    files = {f["path"]: f for f in listed}
    assert "huge" in files and "pipe" not in files and "sock" not in files
    blob = tmp_path / "new-store" / "blobs" / files["sparse"]["hash"][:2] / files["sparse"]["hash"]
    assert blob.stat().st_size == (1 << 30) + 3 and blob.stat().st_blocks * 512 < 1 << 20


def test_what_a_commit_would_refuse_is_refused_before_anything_is_staged(
    tmp_path: Path, store_url: str, stage: StageFactory
) -> None:
    make_tree(tmp_path / "src", {"a.txt": "a\n"})
    push(store_url, "ds", tmp_path / "src")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for options, code, says in (
        (["-a", "v3"], 2, "invalid alias 'v3'"),
        (["-t", "a b"], 2, "invalid type 'a b'"),
        (["-t", "model"], 5, "ds is a 'dataset' artifact, not 'model'"),
    ):
        done = run_cli("stage", "ds", str(mnt), *options, store=store_url)
        assert (done.returncode, says in done.stderr) == (code, True), done.stderr
        assert not is_artfs_mount(str(mnt))
    assert run_cli("stage", "--list", "--json").stdout.strip() == "[]"


def test_commit_while_mounted_goes_on_staging(store_url: str, rich_tree: Path, stage: StageFactory) -> None:
    push(store_url, "rich", rich_tree)
    s = stage(store_url, "rich")
    (s.path / "one").write_text("1")
    done = s.cli("commit", str(s.path))
    assert done.returncode == 0 and done.stdout.strip() == "rich:v1", done.stderr
    assert s.cli("commit", str(s.path)).stdout.strip() == "unchanged: rich:v1"
    (s.path / "two").write_text("2")
    assert s.umount().stdout.strip() == "rich:v2"
    assert "two" in run_cli("files", "rich:v2", store=store_url).stdout


# -- POSIX behaviour through the kernel, against a local directory ---------------------------
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(script=st.lists(ops, min_size=1, max_size=20))
def test_the_stage_behaves_like_a_local_directory_through_the_kernel(
    store_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    stage: StageFactory,
    script: list[tuple[Any, ...]],
) -> None:
    tmp = tmp_path_factory.mktemp("fuse")
    _build_base(tmp / "src")
    push(store_url, "t", tmp / "src")
    model = tmp / "model"
    shutil.copytree(tmp / "src", model, symlinks=True)
    s = stage(store_url, "t:v0", path=tmp / "mnt")
    held_model: list[int] = []
    held_stage: list[int] = []
    try:
        for step, op in enumerate(script):
            model_err, model_out = _errno_of(partial(_local_op, model, held_model, op))
            stage_err, stage_out = _errno_of(partial(_local_op, s.path, held_stage, op))
            assert stage_err == model_err, (
                step,
                op,
                errno.errorcode.get(stage_err),
                errno.errorcode.get(model_err),
            )
            if op[0] == "hold" and not model_err:
                held_model.append(model_out)
                held_stage.append(stage_out)
            assert _local_tree(s.path) == _local_tree(model), (step, op)
        for a, b in zip(held_model, held_stage, strict=True):  # open files, unlinked or not
            size = os.fstat(a).st_size
            assert os.fstat(b).st_size == size
            assert os.pread(b, size + 1, 0) == os.pread(a, size + 1, 0)
    finally:
        for fd in held_model + held_stage:
            os.close(fd)
    done = s.umount()
    label = done.stdout.strip().removeprefix("unchanged: ")
    for rel, item in _local_tree(model).items():  # links that leave the tree are left out, and said
        if item[0] == "link" and item[1].startswith("../") and "/" not in rel:
            (model / rel).unlink()
            assert rel in done.stderr
    verify(store_url, label, model)


def test_a_set_group_id_directory_gives_its_group_as_a_local_disk_does(
    tmp_path: Path, store_url: str, stage: StageFactory
) -> None:
    push(store_url, "ds", make_tree(tmp_path / "src", {"x": "x"}))
    seen = []
    for root in (stage(store_url, "ds").path, tmp_path / "local"):
        shared = root / "shared"
        shared.mkdir(parents=True)
        os.chown(shared, -1, 4242)
        os.chmod(shared, 0o2775)
        (shared / "f").write_text("f")
        (shared / "sub").mkdir()
        os.symlink("f", shared / "l")
        seen.append([(p, os.lstat(shared / p).st_gid, os.lstat(shared / p).st_mode & stat.S_ISGID)
                     for p in ("f", "sub", "l")])  # fmt: skip
    assert seen[0] == seen[1], seen
    assert seen[0][0][1] == 4242 and seen[0][1][2]  # the group, and a subdirectory the bit


# -- an fsx-style exerciser --------------------------------------------------------------------
def exercise(path: Path, seed: int, steps: int, initial: bytes) -> None:
    """Random reads, writes, truncations and reopenings of one file, every read checked against
    a model of its bytes (the idea of fsx, written for this suite)."""
    rng = random.Random(seed)
    model = bytearray(initial)
    fd = os.open(path, os.O_RDWR)
    try:
        for step in range(steps):
            op = rng.choices(["read", "write", "truncate", "reopen", "fsync"], [40, 40, 10, 5, 5])[0]
            limit = 6 * MiB  # offsets and sizes up to here: the file grows, shrinks, has holes
            if op == "read":
                off, n = rng.randrange(limit), rng.randrange(1, 256 * 1024)
                got = os.pread(fd, n, off)
                assert got == bytes(model[off : off + n]), (seed, step, op, off, n)
            elif op == "write":
                off, n = rng.randrange(limit), rng.randrange(1, 128 * 1024)
                data = rng.randbytes(n)
                assert os.pwrite(fd, data, off) == n
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off : off + n] = data
            elif op == "truncate":
                size = rng.randrange(limit)
                os.ftruncate(fd, size)
                model[size:] = b""
                model.extend(bytes(size - len(model)))
            elif op == "reopen":
                os.close(fd)
                fd = os.open(path, os.O_RDWR)
            else:
                os.fsync(fd)
            assert os.fstat(fd).st_size == len(model), (seed, step, op)
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(model)


def test_random_reads_writes_and_truncations_read_back_exactly(
    tmp_path: Path, store_url: str, stage: StageFactory
) -> None:
    base = random.Random(7).randbytes(3 * MiB + 12345)
    make_tree(tmp_path / "src", {"base.bin": base})
    push(store_url, "f", tmp_path / "src")
    s = stage(store_url, "f")
    (s.path / "new.bin").write_bytes(b"")
    exercise(s.path / "new.bin", seed=1, steps=1500, initial=b"")
    exercise(s.path / "base.bin", seed=2, steps=1500, initial=base)  # served lazily, then copied up
    expected = {"new.bin": (s.path / "new.bin").read_bytes(), "base.bin": (s.path / "base.bin").read_bytes()}
    s.umount()
    local = make_tree(tmp_path / "expected", expected)
    verify(store_url, "f:v1", local)


# -- many writers ------------------------------------------------------------------------------
def test_two_stages_of_one_base_give_two_versions_on_every_store(
    tmp_path: Path, backend_url: str, stage: StageFactory
) -> None:
    make_tree(tmp_path / "src", {"shared.txt": "base\n"})
    push(backend_url, "ds", tmp_path / "src")
    a, b = stage(backend_url, "ds"), stage(backend_url, "ds")
    (a.path / "from-a").write_text("a")
    (b.path / "from-b").write_text("b")
    (b.path / "shared.txt").write_text("b's\n")
    env = {**os.environ, "ARTFS_STORE": backend_url}
    umounts = [
        subprocess.Popen([*ARTFS_CLI, "umount", str(s.path)], stdout=PIPE, stderr=PIPE, text=True, env=env)
        for s in (a, b)
    ]
    results = [p.communicate(timeout=120) for p in umounts]
    assert all(p.returncode == 0 for p in umounts), results
    assert sorted(out.strip() for out, _ in results) == ["ds:v1", "ds:v2"]
    assert sum("records base 0" in err for _, err in results) == 1, results  # the later one says so
    for label, mine in ((out.strip(), s) for (out, _), s in zip(results, (a, b), strict=True)):
        files = run_cli("files", label, store=backend_url).stdout
        assert ("from-a" in files) == (mine is a) and ("from-b" in files) == (mine is b), (label, files)
        info = json.loads(run_cli("info", label, "--json", store=backend_url).stdout)
        assert info["base"] == 0

    # --on-conflict error refuses and keeps the work, which a later commit can still finish
    c = stage(backend_url, "ds:v1", "--on-conflict", "error")
    (c.path / "from-c").write_text("c")
    sid = c.session
    done = c.cli("umount", str(c.path))
    assert done.returncode != 0 and "was committed after ds:v1" in done.stderr, done.stderr
    assert f"artfs commit {sid}" in done.stderr
    listed = json.loads(run_cli("stage", "--list", "--json").stdout)
    assert [s["state"] for s in listed if s["id"] == sid] == ["stopped"]
    status = run_cli("status", sid).stdout.split("\n")
    assert "A from-c" in status
    assert run_cli("abort", sid).returncode == 0
    listed = json.loads(run_cli("stage", "--list", "--json").stdout)  # receipts of a and b are left
    assert sorted((s["state"], s["outcome"]["version"]) for s in listed) == [
        ("committed", "ds:v1"),
        ("committed", "ds:v2"),
    ]
    assert [ln.split()[0] for ln in run_cli("ls", "ds", store=backend_url).stdout.splitlines()[1:]] == [
        "v2",
        "v1",
        "v0",
    ]


def test_a_full_disk_fails_the_writer_not_the_mount(
    tmp_path: Path, store_url: str, small_disk: Path, stage: StageFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path / "src", {"base.txt": "base\n"})
    push(store_url, "ds", tmp_path / "src")
    monkeypatch.setenv("XDG_STATE_HOME", str(small_disk))  # the upper area: 1 MiB
    s = stage(store_url, "ds")
    with pytest.raises(OSError) as failed, open(s.path / "big", "wb") as f:
        f.write(b"x" * (4 * MiB))
        f.flush()
    assert failed.value.errno == errno.ENOSPC
    os.unlink(s.path / "big")
    (s.path / "small").write_text("still works\n")
    assert (s.path / "base.txt").read_text() == "base\n"
    assert s.umount().stdout.strip() == "ds:v1"
    assert "small" in run_cli("files", "ds:v1", store=store_url).stdout


# -- ways a stage ends -------------------------------------------------------------------------
def test_fusermount_u_commits_and_so_does_stopping_the_unit(
    tmp_path: Path, store_url: str, stage: StageFactory
) -> None:
    make_tree(tmp_path / "src", {"base.txt": "base\n"})
    push(store_url, "ds", tmp_path / "src")
    s = stage(store_url, "ds")
    (s.path / "by-fusermount").write_text("1\n")
    pid, sid = s.pid, s.session
    run("fusermount3", "-u", str(s.path))  # the daemon commits as it goes
    while running(pid):
        time.sleep(0.01)
    listed = {x["id"]: x for x in json.loads(run_cli("stage", "--list", "--json").stdout)}
    assert (listed[sid]["state"], listed[sid]["outcome"]["version"]) == ("committed", "ds:v1")
    assert "by-fusermount" in run_cli("files", "ds:v1", store=store_url).stdout

    # systemd is not running here: do what it does with artfs-stage@.service, from the unit's
    # own lines (ExecStart with the environment file's settings, READY=1, then ExecStop)
    unit = dict(
        line.split("=", 1)
        for line in (Path(__file__).parents[1] / "systemd/artfs-stage@.service").read_text().splitlines()
        if line.startswith(("ExecStart=", "ExecStop="))
    )
    mnt = tmp_path / "unit-mnt"
    settings = {"ARTFS_STORE": store_url, "ARTFS_STAGE": "ds", "ARTFS_STAGE_OPTIONS": "-a nightly -m k=v"}

    def command(line: str) -> list[str]:
        """A unit's command line as systemd expands it: $X splits into words, ${X} is one."""
        out: list[str] = []
        for word in line.split():
            if word == "/usr/local/bin/artfs":
                out += ARTFS_CLI
            elif word.startswith("${"):
                out.append(settings[word[2:-1]])
            elif word.startswith("$"):
                out += settings[word[1:]].split()
            else:
                out.append(word.replace("%f", str(mnt)))
        return out

    mnt.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        notify.settimeout(60)
        env = {**os.environ, **settings, "NOTIFY_SOCKET": str(tmp_path / "notify")}
        service = subprocess.Popen(command(unit["ExecStart"]), env=env, stdout=PIPE, stderr=PIPE, text=True)
        try:
            assert "READY=1" in notify.recv(4096).decode()
            (mnt / "by-unit").write_text("2\n")
            stop = subprocess.run(command(unit["ExecStop"]), env=env, capture_output=True, text=True)
            assert (stop.returncode, stop.stdout.strip()) == (0, "ds:v2"), stop.stderr
            _, err = service.communicate(timeout=60)
            assert service.returncode == 0, err
        finally:
            if service.poll() is None:
                service.kill()
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
            service.communicate()
    info = json.loads(run_cli("info", "ds:nightly", "--json", store=store_url).stdout)
    assert (info["version"], info["metadata"]) == ("v2", {"k": "v"})


def test_a_commit_the_store_cannot_take_keeps_the_work_and_finishes_later(
    tmp_path: Path,
    small_disk: Path,
    own_s3: SeaweedFS,
    stage: StageFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store's disk full, then the store unreachable: the commit fails with a clear error,
    the session is kept, and `artfs commit ID` finishes it once the store can take it."""
    make_tree(tmp_path / "src", {"base.txt": "base\n"})
    big = os.urandom(3 * MiB)
    expected = make_tree(tmp_path / "expected", {"base.txt": "base\n", "big.bin": big})

    def failed_commit(store_url: str, says: str) -> str:
        s = stage(store_url, "ds")
        (s.path / "big.bin").write_bytes(big)
        sid = s.session
        if store_url.startswith("s3:"):
            own_s3.kill()
        done = s.cli("umount", str(s.path))
        assert done.returncode >= 3 and says in done.stderr.lower(), done.stderr
        assert f"artfs commit {sid}" in done.stderr and not is_artfs_mount(str(s.path))
        listed = {x["id"]: x["state"] for x in json.loads(run_cli("stage", "--list", "--json").stdout)}
        assert listed[sid] == "stopped"
        return sid

    def finished_later(store_url: str, sid: str) -> None:
        assert "A big.bin" in run_cli("status", sid).stdout.splitlines()
        done = run_cli("commit", sid)
        assert (done.returncode, done.stdout.strip()) == (0, "ds:v1"), done.stderr
        verify(store_url, "ds:v1", expected)

    full = f"file://{small_disk / 'store'}"  # on 1 MiB
    push(full, "ds", tmp_path / "src")
    sid = failed_commit(full, "space")
    run("mount", "-o", "remount,size=16m", str(small_disk))
    finished_later(full, sid)

    monkeypatch.setenv("S3_ENDPOINT_URL", own_s3.endpoint)
    remote = f"s3://{S3_BUCKET}/down"
    push(remote, "ds", tmp_path / "src")
    sid = failed_commit(remote, "cannot connect")
    own_s3.start()
    finished_later(remote, sid)


def test_committing_a_change_fetches_none_of_the_base(
    tmp_path: Path, own_s3: SeaweedFS, stage: StageFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", own_s3.endpoint)
    remote = f"s3://{S3_BUCKET}/lazy"
    base = {f"d{i}/big{j}.bin": os.urandom(2 * MiB) for i in range(3) for j in range(2)}
    push(remote, "ds", make_tree(tmp_path / "src", {**base, "d0/small.txt": "small\n"}))
    s = stage(remote, "ds")
    (s.path / "d1/new.txt").write_text("new\n")  # a new name
    with open(s.path / "d2/big0.bin", "wb") as f:  # a base file replaced (O_TRUNC: no copy-up)
        f.write(b"replaced\n")
    os.rename(s.path / "d0/small.txt", s.path / "d0/moved.txt")
    _, sent_before = own_s3.traffic()
    assert s.umount().stdout.strip() == "ds:v1"
    sent = own_s3.traffic()[1] - sent_before
    assert sent < MiB // 4, sent  # tree objects and records, none of the 12 MiB of content
    expected = {**base, "d1/new.txt": "new\n", "d2/big0.bin": "replaced\n", "d0/moved.txt": "small\n"}
    verify(remote, "ds:v1", make_tree(tmp_path / "expected", expected))
