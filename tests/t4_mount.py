"""The read-only mount, for real: a daemon process, /dev/fuse, and ordinary tools on the mount.

Nothing here is skipped: if FUSE cannot mount, these tests fail and say why.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

import artfs
from artfs import cache as cache_module
from artfs import keys
from artfs.cache import BlockCache
from artfs.digest import DEFAULT_BLOCK_SIZE as BLOCK
from artfs.digest import hash_file
from artfs.manifest import Entry
from artfs.mounttable import is_artfs_mount
from artfs.storage import open_backend
from artfs.vfs import SIBLINGS

from .conftest import (
    ARTFS,
    FORMAT1_V0,
    S3_BUCKET,
    MountFactory,
    SeaweedFS,
    gone,
    make_tree,
    push,
    run,
    run_cli,
    wait_for_mount,
)

MiB = 1 << 20


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ordinary_tools_see_exactly_what_was_pushed(
    tmp_path: Path, backend_url: str, rich_tree: Path, mount: MountFactory
) -> None:
    push(backend_url, "rich", rich_tree)
    m = mount(backend_url)
    v = m.path / "rich:v0"

    assert sorted(os.listdir(m.path)) == [".artfs", "rich:latest", "rich:v0"]
    assert run("diff", "-r", "--no-dereference", str(rich_tree), str(v)) == ""
    found = run("find", ".", cwd=v).split("\n")
    assert "./dir with space/naïve ü.txt" in found and "./emptydir" in found

    # sizes, modes, mtimes as pushed; symlinks stay relative links
    for rel in ("README.md", "empty.txt", "bin/run.sh", "data/big.bin", "db.sqlite"):
        a, b = os.stat(rich_tree / rel), os.stat(v / rel)
        assert (b.st_size, stat.S_IMODE(b.st_mode) & 0o111 != 0) == (
            a.st_size,
            stat.S_IMODE(a.st_mode) & 0o111 != 0,
        )
        assert b.st_mtime_ns == a.st_mtime_ns, rel
    assert os.readlink(v / "link") == "bin/run.sh"
    assert run("stat", "-c", "%A %s", str(v / "bin/run.sh")).split() == ["-rwxr-xr-x", "19"]
    assert "-rwxr-xr-x" in run("ls", "-l", str(v / "bin"))

    # copies of the version equal it, bit for bit, with modes and links
    for tool, argv in {
        "cp-r": ["cp", "-r"],
        "cp-a": ["cp", "-a"],
        "rsync": ["rsync", "-a"],
    }.items():
        dest = tmp_path / tool
        run(*argv, f"{v}/" if tool == "rsync" else str(v), str(dest))
        check = run_cli("verify", "rich:v0", str(dest), store=backend_url)
        assert check.returncode == 0, f"{tool}: {check.stdout}{check.stderr}"
    assert (
        os.stat(tmp_path / "cp-a/data/big.bin").st_mtime_ns == os.stat(rich_tree / "data/big.bin").st_mtime_ns
    )

    archive = tmp_path / "v.tar"
    run("tar", "-cf", str(archive), "-C", str(v), ".")
    (tmp_path / "untar").mkdir()
    run("tar", "-xf", str(archive), "-C", str(tmp_path / "untar"))
    assert run_cli("verify", "rich:v0", str(tmp_path / "untar"), store=backend_url).returncode == 0

    sums = run("sha256sum", "README.md", "data/big.bin", "dir with space/naïve ü.txt", cwd=v)
    assert sums == run("sha256sum", "README.md", "data/big.bin", "dir with space/naïve ü.txt", cwd=rich_tree)

    # tools that read structured files in place
    assert run("git", "-C", str(v / "repo"), "log", "--format=%s") == "second\nfirst\n"
    assert run("git", "-C", str(v / "repo"), "show", "HEAD~1:a.txt") == "one\n"
    assert run("git", "-C", str(v / "repo"), "status", "--porcelain") == ""
    uri = f"file:{v / 'db.sqlite'}?immutable=1"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        assert db.execute("select count(*), sum(x) from t").fetchone() == (100, 4950)
    assert run("sqlite3", uri, "select max(x) from t") == "99\n"
    with zipfile.ZipFile(v / "pack.zip") as z:
        assert z.read("inside.txt") == b"zipped\n"


def _errno_of(op: Callable[[], object]) -> int | None:
    try:
        op()
    except OSError as e:
        return e.errno
    return None


def write_attempts(root: Path) -> dict[str, Callable[[], object]]:
    """Writes of every kind against a tree holding README.md, bin/ and emptydir/."""
    f = root / "README.md"
    return {
        "mkdir new": lambda: os.mkdir(root / "new"),
        "mkdir existing dir": lambda: os.mkdir(root / "bin"),
        "mkdir existing file": lambda: os.mkdir(f),
        "create new": lambda: os.close(os.open(root / "new", os.O_CREAT | os.O_WRONLY)),
        "create excl existing": lambda: os.close(os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY)),
        "create existing": lambda: os.close(os.open(f, os.O_CREAT | os.O_WRONLY)),
        "open wronly": lambda: os.close(os.open(f, os.O_WRONLY)),
        "open rdwr": lambda: os.close(os.open(f, os.O_RDWR)),
        "open rdwr missing": lambda: os.close(os.open(root / "missing", os.O_RDWR)),
        "open trunc": lambda: os.close(os.open(f, os.O_RDONLY | os.O_TRUNC)),
        "unlink": lambda: os.unlink(f),
        "unlink missing": lambda: os.unlink(root / "missing"),
        "rmdir": lambda: os.rmdir(root / "emptydir"),
        "rmdir missing": lambda: os.rmdir(root / "missing"),
        "rename": lambda: os.rename(f, root / "moved"),
        "rename missing": lambda: os.rename(root / "missing", root / "moved"),
        "symlink new": lambda: os.symlink("x", root / "newlink"),
        "symlink existing": lambda: os.symlink("x", f),
        "hardlink": lambda: os.link(f, root / "hard"),
        "chmod": lambda: os.chmod(f, 0o600),
        "utime": lambda: os.utime(f, (1, 1)),
        "truncate": lambda: os.truncate(f, 0),
        "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
        "removexattr": lambda: os.removexattr(f, "user.artfs.hash"),
        "mknod": lambda: os.mkfifo(root / "fifo"),
    }


def test_writes_fail_exactly_like_on_a_read_only_mount(
    tmp_path: Path, store_url: str, rich_tree: Path, mount: MountFactory
) -> None:
    push(store_url, "rich", rich_tree)
    m = mount(store_url)
    # the reference: the same tree checked out, behind a kernel read-only bind mount
    plain, bound = tmp_path / "plain", tmp_path / "bound"
    assert run_cli("checkout", "rich:v0", str(plain), store=store_url).returncode == 0
    bound.mkdir()
    subprocess.run(["mount", "--bind", str(plain), str(bound)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(bound)], check=True)
        expected = {k: _errno_of(op) for k, op in write_attempts(bound).items()}
    finally:
        subprocess.run(["umount", str(bound)], check=True)
    got = {k: _errno_of(op) for k, op in write_attempts(m.path / "rich:v0").items()}
    assert got == expected
    assert expected["mkdir new"] == errno.EROFS and expected["mkdir existing dir"] == errno.EEXIST
    assert expected["open rdwr missing"] == errno.ENOENT
    # the root of the mount is read-only too
    assert _errno_of(lambda: os.mkdir(m.path / "new")) == errno.EROFS
    assert _errno_of(lambda: os.mkdir(m.path / "rich:v0")) == errno.EEXIST
    assert sorted(os.listdir(m.path / "rich:v0")) == sorted(os.listdir(plain))


def test_xattrs_name_the_version_and_the_content(
    store_url: str, rich_tree: Path, mount: MountFactory
) -> None:
    push(store_url, "rich", rich_tree)
    m = mount(store_url)
    v = artfs.Store(store_url).artifact("rich:v0")
    d = m.path / "rich:latest"
    assert os.getxattr(d, "user.artfs.version") == b"rich:v0"
    assert os.getxattr(d, "user.artfs.digest") == v.digest.encode()
    assert sorted(os.listxattr(d)) == ["user.artfs.digest", "user.artfs.version"]
    assert os.getxattr(d / "README.md", "user.artfs.hash") == v.get_path("README.md").hash.encode()
    assert _errno_of(lambda: os.getxattr(d / "README.md", "user.nope")) == errno.ENODATA
    # no labels or ACLs: the namespace is unsupported, so `ls -l` asks once per mount, not per file
    assert _errno_of(lambda: os.getxattr(d / "README.md", "security.selinux")) == errno.EOPNOTSUPP
    info = json.loads((m.path / ".artfs" / "rich:v0.json").read_bytes())
    assert info["digest"] == v.digest and info["tree"] == v._record.tree and info["files"] == v.file_count
    assert json.loads((m.path / ".artfs" / "mount.json").read_bytes())["pid"] == m.proc.pid


# -- laziness and the cache ---------------------------------------------------------------------
def patterned(n_mib: int, seed: int = 0) -> bytes:
    """Content whose every MiB differs (so a wrong block can never look right)."""
    return b"".join((seed << 32 | i).to_bytes(8, "little") * (MiB // 8) for i in range(n_mib))


def test_reads_fetch_only_the_blocks_they_touch(
    tmp_path: Path, backend_url: str, mount: MountFactory
) -> None:
    big = patterned(200)
    src = make_tree(tmp_path / "src", {"big.bin": big, "small.txt": "x"})
    push(backend_url, "big", src)
    m = mount(backend_url, "--no-in-place")

    run("ls", "-lR", str(m.path))
    run("find", str(m.path))
    assert m.stats().get("blocks_verified", 0) == 0  # listing fetches no content
    assert m.stats()["cache_usage"] == 0

    with open(m.path / "big:v0" / "big.bin", "rb", buffering=0) as f:
        f.seek(100 * MiB + 123)
        assert f.read(MiB) == big[100 * MiB + 123 : 101 * MiB + 123]
    s = m.stats()  # the blocks it touches, and what the kernel read ahead (1 or 2 MiB more)
    assert s["blocks_fetched"] >= 2 and s["bytes_fetched"] <= 4 * MiB
    cached = sum(p.stat().st_blocks * 512 for p in m.cache.rglob("*") if p.is_file())
    assert cached <= 4 * MiB + 64 * 1024
    assert m.stats().get("blocks_read_ahead", 0) <= 1  # a probe (and the kernel's), not a stream

    small = m.path / "big:v0" / "small.txt"
    assert small.read_text() == "x"
    requests = m.stats()["read_requests"]
    assert small.read_text() == "x"  # warm: the kernel's page cache answers, not the daemon
    assert m.stats()["read_requests"] == requests

    assert (m.path / "big:v0" / "big.bin").read_bytes() == big  # a stream: blocks load ahead
    s = m.stats()
    assert (
        s["blocks_read_ahead"] > 10 and s["blocks_fetched"] == len(big) // BLOCK + 1
    )  # each once, + small.txt
    assert s["gets_ahead"] < s["blocks_read_ahead"] // 4  # neighbours come in spans, a GET each


def test_a_random_reader_gets_the_whole_blob_fetched_once_in_parallel(
    tmp_path: Path, backend_url: str, mount: MountFactory
) -> None:
    data = patterned(10 * BLOCK // MiB)  # 10 blocks
    push(backend_url, "db", make_tree(tmp_path / "src", {"table.db": data}))
    m = mount(backend_url, "--no-in-place")
    with open(m.path / "db:v0" / "table.db", "rb", buffering=0) as f:
        for block in (7, 2, 9, 4):  # scattered: a probe, a probe, … then the reader is random
            assert os.pread(f.fileno(), 4096, block * BLOCK + 99) == data[block * BLOCK + 99 :][:4096]
        wait_until(lambda: m.stats()["blocks_fetched"] == 10)
        for block in (0, 1, 3, 5, 6, 8):
            assert os.pread(f.fileno(), 4096, block * BLOCK) == data[block * BLOCK :][:4096]
    s = m.stats()
    assert s["bytes_fetched"] == len(data) and s["blocks_fetched_whole"] == 6


def test_many_readers_of_a_cold_block_cause_one_fetch(
    tmp_path: Path, backend_url: str, mount: MountFactory
) -> None:
    data = patterned(BLOCK // MiB)  # one block: the kernel's read-ahead finds nothing more
    push(backend_url, "one", make_tree(tmp_path / "src", {"f.bin": data}))
    m = mount(backend_url, "--no-in-place")
    path = m.path / "one:v0" / "f.bin"
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def reader(k: int) -> None:
        with open(path, "rb", buffering=0) as f:
            barrier.wait()
            f.seek(k * 64 * 1024)
            results.append(f.read(64 * 1024))

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(data[k * 65536 : (k + 1) * 65536] for k in range(8))
    assert m.stats()["blocks_fetched"] == 1


def test_walking_a_directory_fetches_its_small_files_together(
    tmp_path: Path, backend_url: str, mount: MountFactory
) -> None:
    n = SIBLINGS + SIBLINGS // 2  # the first window, then its refill
    files = {f"d/f{i:03d}.txt": f"file {i}\n" * 50 for i in range(n)}
    push(backend_url, "many", make_tree(tmp_path / "src", files))
    m = mount(backend_url, "--no-in-place")
    d = m.path / "many:v0" / "d"
    assert (d / "f000.txt").read_text() == files["d/f000.txt"]
    fetched = ("files_fetched_ahead", "blocks_fetched")
    wait_until(lambda: [m.stats().get(k) for k in fetched] == [SIBLINGS - 1, SIBLINGS])
    # a remote store keeps small files in packs: those came in one GET (a local one has no packs)
    remote = not backend_url.startswith("file:")
    assert m.stats().get("pack_runs_fetched", 0) == remote
    for i in range(n):  # the walk goes on: half way through the window, the rest is fetched
        assert (d / f"f{i:03d}.txt").read_text() == files[f"d/f{i:03d}.txt"]
    s = m.stats()
    assert (s["blocks_fetched"], s["files_fetched_ahead"]) == (n, n - 1)  # each once, all ahead
    assert s.get("cache_blocks_reverified", 0) == 0  # opened from memory, not read back from disk
    assert s.get("pack_runs_fetched", 0) == 2 * remote


def cache_bytes(cache: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in (cache / "blocks").rglob("*") if p.is_file())


def test_cache_budget_is_hard_and_open_files_are_never_evicted(
    tmp_path: Path, store_url: str, mount: MountFactory
) -> None:
    files = {f"f{i}.bin": patterned(5, seed=i) for i in range(4)}
    push(store_url, "ds", make_tree(tmp_path / "src", files))
    m = mount(store_url, "--no-in-place", "--cache-size", "12M")
    v = m.path / "ds:v0"
    for name, content in files.items():  # 20 MiB through a 12 MiB cache
        assert (v / name).read_bytes() == content
        assert cache_bytes(m.cache) <= 12 * MiB
    assert m.stats()["blobs_evicted"] >= 1

    with open(v / "f0.bin", "rb") as held:  # in use: f0 must survive while f1..f3 are read
        assert held.read() == files["f0.bin"]
        for name in ("f1.bin", "f2.bin", "f3.bin"):
            assert (v / name).read_bytes() == files[name]
            assert cache_bytes(m.cache) <= 12 * MiB
        f0 = artfs.Store(store_url).artifact("ds:v0").get_path("f0.bin").hash
        assert next(m.cache.rglob(f0)).exists()
    assert m.stats()["cache_budget"] == 12 * MiB


def entry_of(path: Path, data: bytes, block: int) -> Entry:
    """The manifest entry of `data`, written to `path`."""
    path.write_bytes(data)
    d = hash_file(path, block)
    return Entry(path.name, size=len(data), hash=d.hash, blocks=d.blocks)


def test_fetched_blocks_are_served_from_memory_then_from_the_cache_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = 64 * 1024
    monkeypatch.setattr(cache_module, "RECENT_BYTES", 2 * block)  # memory holds the last two
    data = os.urandom(5 * block + 100)  # five whole blocks (written past the page cache) and a tail
    entry = entry_of(tmp_path / "f", data, block)
    blob = BlockCache(tmp_path / "cache", block).open(entry, lambda i: data[i * block : (i + 1) * block])
    for i in range(6):
        blob.fetch(i)
    assert bytes(blob.read(0, len(data), {})) == data  # four from the file, two from memory
    blob.close()

    def no_store(i: int) -> bytes:
        raise AssertionError("fetched again")

    again = BlockCache(tmp_path / "cache", block).open(entry, no_store)  # a new process, say
    assert all(again.load_local(i) is not None for i in range(6))
    assert bytes(again.read(0, len(data), {})) == data
    again.close()


def test_a_stream_leaves_the_daemons_memory_to_blocks_not_read_yet(
    tmp_path: Path, backend_url: str, mount: MountFactory
) -> None:
    data = patterned(48)
    push(backend_url, "ds", make_tree(tmp_path / "src", {"big.bin": data}))
    m = mount(backend_url, "--no-in-place")
    assert (m.path / "ds:v0" / "big.bin").read_bytes() == data
    assert m.stats()["blocks_read_ahead"] > 0
    # blocks read and on disk are let go (once written to the cache, in the background)
    deadline = time.monotonic() + 60
    while (held := m.stats()["cache_memory"]) > len(data) // 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert held <= len(data) // 2
    Path("/proc/sys/vm/drop_caches").write_text("3")  # read again: from memory or the cache file
    assert (m.path / "ds:v0" / "big.bin").read_bytes() == data
    assert m.stats()["blocks_fetched"] == len(data) // BLOCK


def test_a_block_the_cache_has_no_room_for_is_fetched_again_once_out_of_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = 64 * 1024
    monkeypatch.setattr(cache_module, "RECENT_BYTES", block)  # memory holds the last one
    data = os.urandom(2 * block)
    entry = entry_of(tmp_path / "f", data, block)
    cache = BlockCache(tmp_path / "cache", block, budget=0)  # served, never kept
    blob = cache.open(entry, lambda i: data[i * block : (i + 1) * block])
    assert blob.fetch(0) == data[:block]
    assert blob.load_local(0) == data[:block]  # from memory
    blob.fetch(1)  # pushes block 0 out of memory: it must not be served from the file's hole
    assert blob.load_local(0) is None and not blob.verified[0]
    assert cache.counters()["blocks_not_cached"] == 2
    blob.close()


def test_cache_cli_info_pin_prune_unpin(tmp_path: Path, store_url: str) -> None:
    files = {"a.bin": patterned(5, 1), "b.bin": patterned(1, 2)}
    push(store_url, "ds", make_tree(tmp_path / "src", files))
    cache = ["--cache-dir", str(tmp_path / "cache")]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("cache", *args, *cache, store=store_url)

    assert "always available" in cli("pin", "ds:latest").stdout  # a local store is read in place
    pinned = cli("pin", "ds:latest", "--no-in-place")
    assert pinned.returncode == 0 and "pinned ds:v0" in pinned.stdout, pinned.stderr
    info = json.loads(cli("info", "--json").stdout)
    assert info["blobs"] == 2 and info["bytes"] >= 6 * MiB
    assert info["pinned"] == [{"store": store_url, "version": "ds:v0", "blobs": 2}]
    assert cli("prune").stdout.startswith("evicted 0 blobs")  # pinned: kept
    assert cli("unpin", "ds:v0").returncode == 0
    assert cli("unpin", "ds:v0").returncode == 1  # not pinned any more: nothing done
    assert cli("prune").stdout.startswith("evicted 2 blobs")
    assert json.loads(cli("info", "--json").stdout)["bytes"] == 0
    assert cli("pin", "ds:v9", "--no-in-place").returncode == 4


def corrupt(path: Path, offset: int) -> None:
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "cached"])
def test_a_corrupt_block_is_eio_and_named_while_the_rest_is_served(
    tmp_path: Path, backend_url: str, mount: MountFactory, in_place: bool
) -> None:
    files = {"big.bin": patterned(9), "ok.txt": "fine\n", "short.bin": patterned(1, seed=7)}
    push(backend_url, "ds", make_tree(tmp_path / "src", files))
    v0 = artfs.Store(backend_url).artifact("ds:v0")
    blob, short = v0.get_path("big.bin").hash, v0.get_path("short.bin").hash
    with open_backend(backend_url) as store:  # overwritten behind artfs's back
        damaged = bytearray(store.get(keys.blob(blob)).data)
        damaged[5 * MiB] ^= 0xFF
        store.put(keys.blob(blob), bytes(damaged))
        store.put(keys.blob(short), store.get(keys.blob(short)).data[:1000])
    m = mount(backend_url, *([] if in_place else ["--no-in-place"]))
    f = m.path / "ds:v0" / "big.bin"
    with open(f, "rb", buffering=0) as fh:
        assert fh.read(MiB) == files["big.bin"][:MiB]  # block 0 is intact
        fh.seek(8 * MiB)
        assert fh.read(MiB) == files["big.bin"][8 * MiB :]  # so is block 2
        fh.seek(5 * MiB)
        with pytest.raises(OSError) as e:
            fh.read(4096)
        assert e.value.errno == errno.EIO
    assert (m.path / "ds:v0" / "ok.txt").read_text() == "fine\n"
    assert blob in m.log_text() and "corrupt" in m.log_text()
    assert _errno_of(lambda: (m.path / "ds:v0" / "short.bin").read_bytes()) == errno.EIO
    assert short in m.log_text() and "bug" not in m.log_text()


def test_sigkill_leaves_a_cache_the_next_mount_reuses(
    tmp_path: Path, backend_url: str, mount: MountFactory
) -> None:
    data = patterned(9)
    push(backend_url, "ds", make_tree(tmp_path / "src", {"big.bin": data}))
    m = mount(backend_url, "--no-in-place")
    assert (m.path / "ds:v0" / "big.bin").read_bytes() == data
    assert m.stats()["blocks_fetched"] == len(data) // BLOCK
    wait_until(lambda: m.stats().get("blocks_cached") == len(data) // BLOCK)  # written behind the reader
    m.kill()

    again = mount(backend_url, "--no-in-place", path=m.path)  # clears the dead mount itself
    assert "clearing a dead artfs mount" in again.log_text()
    assert (again.path / "ds:v0" / "big.bin").read_bytes() == data
    s = again.stats()
    assert s.get("blocks_fetched", 0) == 0 and s["cache_blocks_reverified"] == len(data) // BLOCK
    assert s["blocks_verified_ahead"] > 0  # the stream's next blocks were read from disk ahead of it
    again.kill()

    # a block torn by a crash is caught by its hash, dropped and fetched again
    blob = artfs.Store(backend_url).artifact("ds:v0").get_path("big.bin").hash
    corrupt(next(m.cache.rglob(blob)), BLOCK + 10)
    third = mount(backend_url, "--no-in-place", path=m.path)
    assert (third.path / "ds:v0" / "big.bin").read_bytes() == data
    s = third.stats()
    assert (s["blocks_fetched"], s["cache_blocks_dropped"]) == (1, 1)
    third.umount()


def test_small_files_are_cached_whole_and_a_torn_one_is_fetched_again(
    tmp_path: Path, store_url: str, mount: MountFactory
) -> None:
    text = "a small file\n" * 100
    push(store_url, "ds", make_tree(tmp_path / "src", {"small.txt": text}))
    m = mount(store_url, "--no-in-place")
    assert (m.path / "ds:v0" / "small.txt").read_text() == text
    m.umount()
    blob = artfs.Store(store_url).artifact("ds:v0").get_path("small.txt").hash
    cached = [p for p in m.cache.rglob(f"{blob}*") if p.is_file()]
    assert [p.name for p in cached] == [blob] and cached[0].read_text() == text  # whole, no .present

    again = mount(store_url, "--no-in-place", path=m.path)
    assert (again.path / "ds:v0" / "small.txt").read_text() == text
    s = again.stats()
    assert s.get("blocks_fetched", 0) == 0 and s["cache_blocks_reverified"] == 1
    again.umount()

    corrupt(cached[0], 5)
    third = mount(store_url, "--no-in-place", path=m.path)
    assert (third.path / "ds:v0" / "small.txt").read_text() == text
    s = third.stats()
    assert (s["blocks_fetched"], s["cache_blocks_dropped"]) == (1, 1)
    third.umount()
    assert cached[0].read_text() == text  # fetched again, and cached again


# -- versions and aliases as they change --------------------------------------------------------
def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "not within the time limit"
        time.sleep(0.05)
    return time.monotonic() - start


def test_new_versions_and_moved_aliases_show_up_and_open_files_keep_their_version(
    tmp_path: Path, backend_url: str, mount: MountFactory
) -> None:
    src = make_tree(tmp_path / "src", {"data.txt": "version zero\n"})
    push(backend_url, "ds", src)
    m = mount(backend_url)
    latest = m.path / "ds:latest" / "data.txt"
    assert latest.read_text() == "version zero\n"
    with open(latest, "rb") as held:
        (src / "data.txt").write_text("version one!\n")
        push(backend_url, "ds", src)
        waited = wait_until(lambda: latest.read_text() == "version one!\n")
        assert waited < 3
        assert "ds:v1" in os.listdir(m.path)
        assert held.read() == b"version zero\n"  # opened under v0: stays v0
    assert run_cli("alias", "ds:v0", "best", store=backend_url).returncode == 0
    wait_until(lambda: (m.path / "ds:best" / "data.txt").exists())
    assert (m.path / "ds:best" / "data.txt").read_text() == "version zero\n"
    assert run_cli("alias", "ds:v1", "best", store=backend_url).returncode == 0
    wait_until(lambda: (m.path / "ds:best" / "data.txt").read_text() == "version one!\n")
    wait_until(lambda: "ds:best" in os.listdir(m.path) and m.stats().get("entries_invalidated", 0) >= 2)
    assert run_cli("delete", "ds:v0", store=backend_url).returncode == 0
    wait_until(lambda: "ds:v0" not in os.listdir(m.path))
    assert _errno_of(lambda: os.stat(m.path / "ds:v0x")) == errno.ENOENT
    assert (m.path / "ds:1" / "data.txt").read_text() == "version one!\n"  # any ref resolves


# -- scale ---------------------------------------------------------------------------------------
def test_a_version_of_100k_files_lists_without_fetching_and_stays_small(
    tmp_path: Path, store_url: str, mount: MountFactory
) -> None:
    store = artfs.Store(store_url)
    seed = artfs.Artifact("seed", type="dataset")
    seed.add_file(make_tree(tmp_path / "one", {"x": "same content\n"}) / "x")
    store.log_artifact(seed)
    x = store.artifact("seed:v0").get_path("x").entry
    synthetic_version(
        store, "big", {f"d{d:03}": [(f"f{d * 1000 + i:06}.txt", x) for i in range(1000)] for d in range(100)}
    )
    m = mount(store_url)
    assert sorted(os.listdir(m.path)) == [".artfs", "big:v0", "seed:latest", "seed:v0"]
    listed = run("find", str(m.path / "big:v0"), "-type", "f").splitlines()
    assert len(listed) == 100_000
    assert m.stats().get("blocks_verified", 0) == 0
    status = Path(f"/proc/{m.proc.pid}/status").read_text()
    rss_kib = int(status.split("VmRSS:")[1].split()[0])
    assert rss_kib < 300 * 1024, f"daemon RSS {rss_kib} KiB"
    assert (m.path / "big:v0" / "d042" / "f042424.txt").read_text() == "same content\n"


def synthetic_version(store: artfs.Store, name: str, dirs: dict[str, list[tuple[str, Entry]]]) -> None:
    """A version of directories of files (each a copy of an existing file's entry), written
    straight as tree objects: big versions without pushing big trees."""
    from artfs.catalog import Catalog, VersionRecord
    from artfs.manifest import encode_dir

    blobs = store.blobs
    tops = []
    for d, files in dirs.items():
        children = [replace(e, path=f"{d}/{n}") for n, e in files]
        objects = encode_dir(children)
        blobs.put_objects(objects.objects)
        size = sum(c.size for c in children)
        tops.append(
            Entry(d, "dir", size, 0o755, tree=objects.key, digest=objects.digest, files=len(children))
        )
    root = encode_dir(tops)
    blobs.put_objects(root.objects)
    size, files = sum(t.size for t in tops), sum(t.files for t in tops)
    Catalog(store.backend).claim(
        name, lambda n: VersionRecord(name, n, "dataset", root.digest, tree=root.key, size=size, files=files)
    )


# -- the daemon's life --------------------------------------------------------------------------
def test_mount_detaches_and_umount_waits_for_the_daemon(
    tmp_path: Path, store_url: str, rich_tree: Path
) -> None:
    push(store_url, "rich", rich_tree)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "ARTFS_CACHE": str(tmp_path / "cache")}
    started = run_cli("mount", str(mnt), store=store_url, env=env)
    assert started.returncode == 0, started.stderr
    try:
        assert is_artfs_mount(str(mnt))
        pid = json.loads((mnt / ".artfs" / "mount.json").read_bytes())["pid"]
        again = run_cli("mount", str(mnt), store=store_url, env=env)
        assert again.returncode == 5 and "already an artfs mount" in again.stderr

        busy = subprocess.Popen(["sleep", "30"], cwd=mnt / "rich:v0")
        try:
            refused = run_cli("umount", str(mnt))
            assert refused.returncode == 5 and "busy" in refused.stderr
        finally:
            busy.kill()
            busy.wait()
        done = run_cli("umount", str(mnt))
        assert done.returncode == 0, done.stderr
        assert gone(pid)  # umount returned only once the daemon was gone
        assert not is_artfs_mount(str(mnt))
    finally:
        if is_artfs_mount(str(mnt)):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
    assert run_cli("umount", str(mnt)).returncode == 4


def test_mount_reports_bad_input_before_mounting(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    missing = run_cli("mount", str(mnt), store=f"file://{tmp_path / 'nothing'}")
    assert missing.returncode == 4 and "no artfs store" in missing.stderr
    (tmp_path / "file").write_text("")
    not_dir = run_cli("mount", str(tmp_path / "file"), store=f"file://{tmp_path / 'store'}")
    assert not_dir.returncode == 2 and "is a file" in not_dir.stderr
    assert not is_artfs_mount(str(mnt))


def test_foreground_daemon_speaks_sd_notify_and_unmounts_on_sigterm(
    tmp_path: Path, store_url: str, rich_tree: Path
) -> None:
    import socket

    push(store_url, "rich", rich_tree)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sock_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        sock.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": sock_path, "ARTFS_STORE": store_url}
        argv = [*ARTFS, "mount", "--foreground", "--cache-dir", str(tmp_path / "cache"), str(mnt)]
        proc = subprocess.Popen(argv, env=env)
        try:
            message = sock.recv(4096).decode()
            assert "READY=1" in message and is_artfs_mount(str(mnt))  # ready means mounted
            assert (mnt / "rich:v0" / "README.md").read_text() == "hello\n"
            proc.send_signal(signal.SIGTERM)
            assert "STOPPING=1" in sock.recv(4096).decode()
            assert proc.wait(30) == 0
            assert not is_artfs_mount(str(mnt))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if is_artfs_mount(str(mnt)):
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)


@pytest.mark.parametrize("name", ["artfs-mount@.service", "artfs-stage@.service"])
def test_systemd_units_verify_and_keep_the_mount_visible(name: str) -> None:
    unit = Path(__file__).parents[1] / "systemd" / name
    text = unit.read_text()
    settings = [line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")]
    keys = {k: v for k, v in settings}
    assert keys["Type"] == "notify"
    assert "--foreground" in keys["ExecStart"] and " umount " in keys["ExecStop"]
    assert not {"PrivateTmp", "ProtectSystem", "ProtectHome"} & keys.keys()
    # systemd-analyze checks that ExecStart's program exists: give it one in a private mount
    # namespace (a tmpfs over /usr/local/bin there), leaving the host untouched.
    artfs_bin = Path(os.environ.get("VIRTUAL_ENV", Path(__file__).parents[1] / ".venv")) / "bin" / "artfs"
    script = (
        "mount -t tmpfs tmpfs /usr/local/bin && "
        f"ln -s '{artfs_bin}' /usr/local/bin/artfs && systemd-analyze verify '{unit}'"
    )
    done = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_store_outage_gets_eio_for_what_is_not_cached_and_the_rest_keeps_working(
    tmp_path: Path, own_s3: SeaweedFS, mount: MountFactory
) -> None:
    env = {**os.environ, "S3_ENDPOINT_URL": own_s3.endpoint}
    url = f"s3://{S3_BUCKET}/outage"
    files = {"a.bin": patterned(9, seed=1), "b.bin": patterned(9, seed=2)}
    assert run_cli("push", "ds", str(make_tree(tmp_path / "src", files)), store=url, env=env).returncode == 0
    m = mount(url, env=env)
    v = m.path / "ds:v0"
    assert (v / "a.bin").read_bytes() == files["a.bin"]  # all of a.bin is cached
    with open(v / "b.bin", "rb") as f:
        assert f.read(MiB) == files["b.bin"][:MiB]  # only the first block of b.bin

    own_s3.kill()
    Path("/proc/sys/vm/drop_caches").write_text("3")  # so reads reach the daemon, not the kernel
    assert (v / "a.bin").read_bytes() == files["a.bin"]
    started = time.monotonic()
    with open(v / "b.bin", "rb", buffering=0) as f:
        f.seek(8 * MiB)
        with pytest.raises(OSError) as e:
            f.read(MiB)
        assert e.value.errno == errno.EIO
        assert time.monotonic() - started < 45  # bounded retries, then an answer
        f.seek(0)
        assert f.read(MiB) == files["b.bin"][:MiB]
    assert "ds:v0" in os.listdir(m.path)  # the listing it had
    assert "unreachable" in m.log_text() or "retrying" in m.log_text()

    own_s3.start()  # the store is back: so is everything
    with open(v / "b.bin", "rb") as f:
        assert f.read() == files["b.bin"]


def test_names_over_255_bytes_are_enametoolong_before_anything_else(
    tmp_path: Path, store_url: str, mount: MountFactory
) -> None:
    longest = "n" * 255
    push(store_url, "names", make_tree(tmp_path / "src", {longest: "max", "d/x": "1"}))
    m = mount(store_url)
    v = m.path / "names:v0"
    assert (v / longest).read_text() == "max"  # NAME_MAX itself resolves
    too_long = v / ("n" * 256)
    attempts = {
        "stat": lambda: os.stat(too_long),
        "open": lambda: os.open(too_long, os.O_RDONLY),
        "create": lambda: os.open(too_long, os.O_CREAT | os.O_WRONLY, 0o644),
        "mkdir": lambda: os.mkdir(too_long),
        "below a dir": lambda: os.stat(v / "d" / ("x" * 300)),
        "at the root": lambda: os.stat(m.path / ("r" * 256)),
    }
    assert {k: _errno_of(op) for k, op in attempts.items()} == dict.fromkeys(attempts, errno.ENAMETOOLONG)
    assert os.statvfs(v).f_namemax == 255


def test_generated_json_files_report_their_true_size(
    tmp_path: Path, store_url: str, mount: MountFactory
) -> None:
    push(store_url, "ds", make_tree(tmp_path / "src", {"a.txt": "a"}))
    m = mount(store_url)
    for name in ("mount.json", "stats.json", "ds:v0.json", "ds:latest.json"):
        path = m.path / ".artfs" / name
        data = path.read_bytes()
        assert json.loads(data) and os.stat(path).st_size == len(data), name
    copies = tmp_path / "copies"
    run("rsync", "-a", f"{m.path / '.artfs'}/", str(copies))  # rsync trusts st_size
    assert json.loads((copies / "ds:v0.json").read_bytes())["digest"]
    run("tar", "-cf", str(tmp_path / "meta.tar"), "-C", str(m.path / ".artfs"), "ds:v0.json")
    run("tar", "-xf", str(tmp_path / "meta.tar"), "-C", str(tmp_path))
    assert json.loads((tmp_path / "ds:v0.json").read_bytes())["number"] == 0


def test_the_cache_is_private_to_its_user(tmp_path: Path, store_url: str, mount: MountFactory) -> None:
    files = {"big.bin": patterned(3), "small.txt": "secret\n"}
    push(store_url, "ds", make_tree(tmp_path / "src", files))
    m = mount(store_url, "--no-in-place")
    assert (m.path / "ds:v0" / "big.bin").read_bytes() == files["big.bin"]
    assert (m.path / "ds:v0" / "small.txt").read_text() == "secret\n"
    wait_until(lambda: m.stats().get("blocks_cached", 0) >= 4)
    assert (
        run_cli(
            "cache", "pin", "ds:v0", "--no-in-place", "--cache-dir", str(m.cache), store=store_url
        ).returncode
        == 0
    )
    m.umount()
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in [m.cache, *m.cache.rglob("*")]}
    assert len(modes) > 5
    assert {str(p): oct(mode) for p, mode in modes.items() if mode & 0o077} == {}
    assert {mode for p, mode in modes.items() if p.is_dir()} == {0o700}
    assert {mode for p, mode in modes.items() if p.is_file()} == {0o600}

    # a cache someone made wide on purpose is left as it is, with a warning
    shared = tmp_path / "shared-cache"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    log = tmp_path / "wide.log"
    argv = [*ARTFS, "--store", store_url, "mount", "--foreground", "--cache-dir", str(shared)]
    (tmp_path / "mnt-wide").mkdir()
    with open(log, "wb") as out:
        proc = subprocess.Popen([*argv, str(tmp_path / "mnt-wide")], stdout=out, stderr=out)
    try:
        wait_for_mount(tmp_path / "mnt-wide", proc, log)
    finally:
        subprocess.run(["fusermount3", "-u", str(tmp_path / "mnt-wide")], check=False)
        proc.wait(10)
    assert "readable by other users" in log.read_text() and stat.S_IMODE(shared.stat().st_mode) == 0o755


def test_a_folder_named_artfs_in_the_current_directory_breaks_nothing(tmp_path: Path, store_url: str) -> None:
    push(store_url, "ds", make_tree(tmp_path / "src", {"a.txt": "hello\n"}))
    home = tmp_path / "home"
    (home / "artfs").mkdir(parents=True)  # the quick start's mount point, ~/artfs
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "ARTFS_CACHE": str(tmp_path / "cache")}
    started = run_cli("mount", "artfs", store=store_url, cwd=home, env=env)
    try:
        assert started.returncode == 0, started.stderr
        assert (home / "artfs" / "ds:v0" / "a.txt").read_text() == "hello\n"
        api = subprocess.run(
            [sys.executable, "-c", f"import artfs; print(artfs.Store({store_url!r}).names())"],
            cwd=home, capture_output=True, text=True,
        )  # fmt: skip
        assert api.returncode == 0 and api.stdout.strip() == "['ds']", api.stderr
        pid = json.loads((home / "artfs" / ".artfs" / "mount.json").read_bytes())["pid"]
        assert os.readlink(f"/proc/{pid}/cwd") == "/"  # the daemon keeps no directory busy
    finally:
        assert run_cli("umount", str(home / "artfs")).returncode == 0


def test_a_push_never_reads_through_an_artfs_mount(
    tmp_path: Path, store_url: str, mount: MountFactory
) -> None:
    src = make_tree(tmp_path / "project", {"train.py": "print('hi')\n"})
    push(store_url, "ds", make_tree(tmp_path / "data", {"big.bin": patterned(2)}))
    m = mount(store_url, path=src / "artifacts")  # the store mounted inside the project
    r = run_cli("push", "project", str(src), store=store_url)
    assert r.returncode == 0 and "is an artfs mount" in r.stderr, r.stderr
    files = json.loads(run_cli("files", "project:v0", "--json", store=store_url).stdout)
    assert [f["path"] for f in files] == ["train.py"]
    assert m.stats().get("read_requests", 0) == 0  # not a byte read through the mount
    r = run_cli("push", "copy", str(m.path / "ds:v0"), store=store_url)
    assert r.returncode == 2 and "is on an artfs mount" in r.stderr


def test_a_store_written_before_format_2_mounts_as_it_did(
    tmp_path: Path, format1_store: str, mount: MountFactory
) -> None:
    m = mount(format1_store, "--no-in-place")
    assert sorted(os.listdir(m.path)) == [
        ".artfs", "ds:best", "ds:latest", "ds:v0", "ds:v1", "other:latest", "other:v0",
    ]  # fmt: skip
    v0 = m.path / "ds:v0"
    for path, content in FORMAT1_V0.items():
        assert (v0 / path).read_bytes() == content, path
    assert os.readlink(v0 / "link") == "a.txt" and (v0 / "empty").is_dir()
    assert (
        os.stat(v0 / "exec.sh").st_mode & 0o111 and os.stat(v0 / "a.txt").st_mtime_ns == 1_700_000_000 * 10**9
    )
    run("cp", "-a", str(m.path / "ds:latest"), str(tmp_path / "copy"))
    assert run_cli("verify", "ds:v1", str(tmp_path / "copy"), store=format1_store).returncode == 0


def test_the_daemon_forgets_what_the_kernel_forgot(
    tmp_path: Path, store_url: str, mount: MountFactory
) -> None:
    files = {f"d{d:02}/f{f:02}.txt": f"{d}-{f}\n" for d in range(20) for f in range(30)}
    push(store_url, "ds", make_tree(tmp_path / "src", files))
    m = mount(store_url)
    assert len(run("find", str(m.path / "ds:v0")).splitlines()) == 1 + 20 + 600
    s = m.stats()
    assert s["directories_loaded"] == 21 and s["versions_loaded"] == 1
    Path("/proc/sys/vm/drop_caches").write_text("2")  # the kernel drops its dentries and inodes
    wait_until(lambda: m.stats()["directories_loaded"] == 0 and m.stats()["versions_loaded"] == 0)
    assert (m.path / "ds:v0" / "d07" / "f03.txt").read_text() == "7-3\n"  # loaded again as needed
    assert m.stats()["directories_loaded"] == 2  # the root and d07
