"""Layer 3: the core through the Python API on a real local store (no FUSE)."""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import artfs
from artfs import keys
from artfs.blobs import SPAN_BYTES
from artfs.cache import BlockCache
from artfs.digest import hash_file
from artfs.errors import (
    ArtifactExistsError,
    ArtifactNotFoundError,
    ContentChangedError,
    CorruptDataError,
    InvalidPathError,
    StoreError,
    StoreFormatError,
    StoreNotFoundError,
    TypeMismatchError,
    VersionInUseError,
    VersionNotFoundError,
)
from artfs.manifest import Entry
from artfs.sources import LocalFile

from .conftest import FORMAT1_V0, GCS_BUCKET, S3_BUCKET, Progress, make_tree

BLOCK = 64 * 1024


@pytest.fixture
def small_block_store(tmp_path: Path) -> artfs.Store:
    """A store whose config says 64 KiB blocks, so multi-block files stay small in tests."""
    root = tmp_path / "sb-store"
    root.mkdir()
    (root / "config").write_text(json.dumps({"format": 2, "hash": "xxh3-128", "block_size": BLOCK}))
    return artfs.Store(f"file://{root}")


def count(store: artfs.Store, prefix: str) -> int:
    return sum(1 for _ in store.backend.list(prefix))


def push_dir(store: artfs.Store, name: str, root: Path, **kw) -> artfs.Version:  # type: ignore[no-untyped-def]
    art = artfs.Artifact(name, type=kw.pop("type", None), metadata=kw.pop("metadata", None))
    art.add_dir(root)
    return store.log_artifact(art, **kw)


def test_versions_dedup_and_unchanged(store: artfs.Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.csv": "1,2\n", "b/c.txt": "c", "b/d.bin": os.urandom(1000)})
    v0 = push_dir(store, "ds", src)
    assert (v0.version, v0.created, v0.aliases) == ("v0", True, ["latest"])
    assert count(store, "blobs/") == 3

    again = push_dir(store, "ds", src)
    assert (again.version, again.created) == ("v0", False)
    assert count(store, "artifacts/ds/versions/") == 1

    (src / "a.csv").write_text("1,2\n3,4\n")
    v1 = push_dir(store, "ds", src)
    assert v1.version == "v1" and v1.digest != v0.digest
    assert count(store, "blobs/") == 4  # exactly one new blob
    assert store.artifact("ds:latest").version == "v1"
    assert store.artifact("ds").version == "v1"
    assert store.artifact("ds:0").digest == v0.digest
    assert [d.path for d in store.diff("ds:v0", "ds:v1")] == ["a.csv"]


def test_blobs_shared_across_artifacts(store: artfs.Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"x": "same bytes"})
    push_dir(store, "one", src)
    push_dir(store, "two", src)
    assert count(store, "blobs/") == 1


def test_unchanged_push_still_adds_aliases(store: artfs.Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"x": "1"})
    push_dir(store, "ds", src)
    v = push_dir(store, "ds", src, aliases=["best"])
    assert not v.created and set(v.aliases) == {"latest", "best"}


def test_add_file_and_add_dir_name_rules(store: artfs.Store, tmp_path: Path) -> None:
    make_tree(tmp_path, {"models/model.h5": "m", "imgs/1.png": "p", "imgs/sub/2.png": "q"})
    art = artfs.Artifact("rules", type="model")
    assert art.add_file(tmp_path / "models/model.h5") == "model.h5"
    assert art.add_file(tmp_path / "models/model.h5", name="a/") == "a/model.h5"
    assert art.add_file(tmp_path / "models/model.h5", name="b/renamed.h5") == "b/renamed.h5"
    assert art.add_dir(tmp_path / "imgs", name="images") is None  # read when logged, as W&B's
    with art.new_file("notes/hello.txt") as f:
        f.write("hello")
    with pytest.raises(InvalidPathError):
        art.add_file(tmp_path / "models/model.h5")  # model.h5 again
    v = store.log_artifact(art)
    assert [f.path for f in v.files()] == [
        "a/model.h5",
        "b/renamed.h5",
        "images/1.png",
        "images/sub/2.png",
        "model.h5",
        "notes/hello.txt",
    ]
    assert v.open("notes/hello.txt").read() == b"hello"
    assert v.type == "model"


def test_metadata_description_and_save(store: artfs.Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"x": "1"})
    v = push_dir(store, "ds", src, metadata={"rows": 1})
    v.metadata["rows"] = 2
    v.description = "fixed"
    v.aliases.append("prod")
    v.save()
    again = store.artifact("ds:prod")
    assert (again.metadata, again.description, again.version) == ({"rows": 2}, "fixed", "v0")
    stale = store.artifact("ds:v0")
    again.metadata["k"] = "first"
    again.save()
    stale.metadata["k"] = "second"
    with pytest.raises(artfs.ConflictError):
        stale.save()  # would silently overwrite the first change
    assert store.artifact("ds:v0").metadata["k"] == "first"
    again.aliases.remove("prod")
    again.save()
    with pytest.raises(VersionNotFoundError):
        store.artifact("ds:prod")


def test_on_conflict_policies(store: artfs.Store, tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", {"x": "a"})
    b = make_tree(tmp_path / "b", {"x": "b"})
    push_dir(store, "ds", a, aliases=["best"])
    skipped = push_dir(store, "ds", b, on_conflict="skip")
    assert not skipped.created and skipped.version == "v0"
    with pytest.raises(ArtifactExistsError):
        push_dir(store, "ds", b, on_conflict="error")
    assert count(store, "artifacts/ds/versions/") == 1
    with pytest.raises(VersionInUseError, match="ds:best"):  # the rule `delete` follows
        push_dir(store, "ds", b, on_conflict="replace")
    assert count(store, "artifacts/ds/versions/") == 1 and count(store, "blobs/") == 1  # nothing went up
    v1 = push_dir(store, "ds", b, on_conflict="replace", delete_aliases=True)
    assert v1.version == "v1" and v1.commit is not None and v1.commit.deleted == ("ds:v0",)
    assert [v.version for v in store.versions("ds")] == ["v1"]
    with pytest.raises(VersionNotFoundError):
        store.artifact("ds:best")
    with pytest.raises(VersionNotFoundError):
        store.artifact("ds:v0")


def test_type_mismatch(store: artfs.Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"x": "1"})
    push_dir(store, "ds", src, type="dataset")
    (src / "x").write_text("2")
    with pytest.raises(TypeMismatchError):
        push_dir(store, "ds", src, type="model")
    assert push_dir(store, "ds", src).type == "dataset"  # inherited


def test_delete_semantics(store: artfs.Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"x": "0"})
    for i in range(3):
        (src / "x").write_text(str(i))
        push_dir(store, "ds", src, aliases=["best"] if i == 1 else [])
    with pytest.raises(VersionInUseError):
        store.artifact("ds:v1").delete()
    store.artifact("ds:v1").delete(delete_aliases=True)
    assert [v.version for v in store.versions("ds")] == ["v0", "v2"]
    store.artifact("ds:v2").delete()  # only `latest` names it: latest moves back
    assert store.artifact("ds:latest").version == "v0"
    (src / "x").write_text("new")
    assert push_dir(store, "ds", src).version == "v3"  # numbers are never reused
    with pytest.raises(VersionNotFoundError):
        store.artifact("ds:v2")
    with pytest.raises(ArtifactNotFoundError):
        store.artifact("nothing:v0")


def test_latest_is_the_newest_claim_even_when_its_committer_died_before_moving_it(
    store: artfs.Store, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", {"x": "0"})
    push_dir(store, "ds", src)
    (src / "x").write_text("1")
    push_dir(store, "ds", src)
    # what a committer killed between its claim and moving `latest` leaves: the record lags
    store.backend.put_json(keys.alias("ds", "latest"), {"version": 0})
    assert store.artifact("ds:latest").version == "v1"
    assert store.artifact("ds:v1").aliases == ["latest"] and store.artifact("ds:v0").aliases == []
    again = push_dir(store, "ds", src)  # the same content as the newest version: nothing made
    assert (again.version, again.created) == ("v1", False)
    store.artifact("ds:v1").delete()
    assert store.artifact("ds:latest").version == "v0"


def test_download_checkout_verify(small_block_store: artfs.Store, tmp_path: Path) -> None:
    store = small_block_store
    big = os.urandom(5 * BLOCK + 123)
    src = make_tree(
        tmp_path / "src",
        {
            "big.bin": big,
            "run.sh": "#!/bin/sh\n",
            "dir/link": "->../run.sh",
            "empty": None,
            "dir/a b é.txt": "x",
        },
    )
    os.chmod(src / "run.sh", 0o755)
    v = push_dir(store, "ds", src)
    assert len(v.get_path("big.bin").entry.blocks) == 6

    dest = make_tree(tmp_path / "dest", {"extra.txt": "keep me", "big.bin": "stale"})
    v.download(dest)
    assert (dest / "big.bin").read_bytes() == big
    assert (dest / "extra.txt").exists()  # download leaves extras
    assert os.access(dest / "run.sh", os.X_OK) and os.readlink(dest / "dir/link") == "../run.sh"
    assert (dest / "empty").is_dir()
    assert [(d.path, d.change) for d in v.differences(dest)] == [("extra.txt", "extra")]
    with pytest.raises(ValueError, match="differs from ds:v0 in 1 path: extra") as raised:
        v.verify(dest)  # as W&B's verify: raises, with the list on the exception
    assert isinstance(raised.value, artfs.VerificationError) and len(raised.value.differences) == 1

    (dest / "dir/a b é.txt").write_text("y")
    os.chmod(dest / "run.sh", 0o644)
    (dest / "big.bin").unlink()
    assert {(d.path, d.change) for d in v.differences(dest)} == {
        ("extra.txt", "extra"),
        ("dir/a b é.txt", "modified"),
        ("run.sh", "mode"),
        ("big.bin", "missing"),
    }

    v.checkout(dest)  # a directory it downloaded into: a checkout of this artifact may remove
    assert v.differences(dest) == [] and not (dest / "extra.txt").exists()
    v.verify(dest)
    assert hash_file(dest / "big.bin").hash == v.get_path("big.bin").hash


def test_open_reads_any_range(small_block_store: artfs.Store, tmp_path: Path) -> None:
    data = os.urandom(3 * BLOCK + 10)
    src = make_tree(tmp_path / "src", {"f": data, "l": "->f"})
    v = push_dir(small_block_store, "ds", src)
    with v.open("l") as f:
        f.seek(BLOCK - 5)
        assert f.read(BLOCK + 10) == data[BLOCK - 5 : 2 * BLOCK + 5]
        f.seek(-4, os.SEEK_END)
        assert f.read() == data[-4:]
    assert v.get_path("f").download(tmp_path / "one") == str(tmp_path / "one/f")
    assert (tmp_path / "one/f").read_bytes() == data


def test_corrupt_or_missing_blob_is_detected(small_block_store: artfs.Store, tmp_path: Path) -> None:
    store = small_block_store
    data = os.urandom(2 * BLOCK)
    src = make_tree(tmp_path / "src", {"f": data, "g": "small"})
    v = push_dir(store, "ds", src)
    blob = Path(store.backend.root) / keys.blob(v.get_path("f").hash)  # type: ignore[attr-defined]
    raw = bytearray(blob.read_bytes())
    raw[BLOCK + 7] ^= 1
    blob.write_bytes(bytes(raw))
    with v.open("f") as f:
        assert f.read(100) == data[:100]  # the intact block is still served
        f.seek(BLOCK)
        with pytest.raises(CorruptDataError, match="block 1 is corrupt"):
            f.read(10)
    with pytest.raises(CorruptDataError):
        v.download(tmp_path / "out")
    assert not (tmp_path / "out/f").exists()  # no half-written file
    (Path(store.backend.root) / keys.blob(v.get_path("g").hash)).unlink()  # type: ignore[attr-defined]
    with pytest.raises(CorruptDataError, match="missing"):
        v.open("g").read()


def test_hostile_manifest_in_store_is_rejected(store: artfs.Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"x": "1"})
    v = push_dir(store, "ds", src)
    evil = json.dumps(
        {
            "format": 1,
            "block_size": 4 << 20,
            "entries": [
                {
                    "kind": "file",
                    "path": "../../escaped",
                    "size": 1,
                    "mode": 420,
                    "hash": next(v.files()).hash,
                    "mtime": 0,
                }
            ],
        },
        separators=(",", ":"),
    ).encode()
    from artfs.digest import hash_bytes

    h = hash_bytes(evil)
    store.backend.put(keys.manifest(h), evil)
    rec = json.loads(store.backend.get(keys.version("ds", 0)).data)
    rec["manifest"], rec["tree"] = h, ""  # a format-1 version
    store.backend.put(keys.version("ds", 0), json.dumps(rec).encode())
    with pytest.raises(InvalidPathError):
        store.artifact("ds:v0").download(tmp_path / "out" / "deep")
    assert not (tmp_path / "out" / "escaped").exists() and not (tmp_path / "escaped").exists()


def test_a_corrupt_tree_object_is_detected_by_its_name(store: artfs.Store, tmp_path: Path) -> None:
    v = push_dir(store, "ds", make_tree(tmp_path / "src", {"x": "1"}))
    key = keys.tree(json.loads(store.backend.get(keys.version("ds", 0)).data)["tree"])
    store.backend.put(key, store.backend.get(key).data.replace(b'"x"', b'"y"'))
    with pytest.raises(CorruptDataError, match="corrupt"):
        list(artfs.Store(store.url).artifact("ds:v0").files())  # another process: nothing in memory
    assert v.version == "v0"


def test_file_changed_during_push_is_not_stored(store: artfs.Store, tmp_path: Path) -> None:
    f = make_tree(tmp_path, {"f": "original"}) / "f"
    digest = hash_file(f)
    f.write_text("changed!")  # same size, different content: changed between hash and upload
    store._open(write=True)
    with pytest.raises(ContentChangedError):
        store.blobs.upload(LocalFile(str(f)), digest)
    assert not store.blobs.has(digest.hash)


def test_store_format_is_checked(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "config").write_text('{"format": 99, "hash": "xxh3-128", "block_size": 4194304}')
    with pytest.raises(StoreFormatError, match="format 99"):
        artfs.Store(str(root)).names()


def test_explicit_store_is_not_created_by_reads(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError):
        artfs.Store(f"file://{tmp_path}/typo").names()
    assert not (tmp_path / "typo").exists()


def test_embedded_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARTFS_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    store = artfs.Store()
    assert store.names() == []  # created on first use
    config = json.loads((tmp_path / "xdg/artfs/store/config").read_text())
    assert config == {"format": 2, "hash": "xxh3-128", "block_size": 1 << 20}


def test_disk_full_loses_nothing(small_disk: Path, tmp_path: Path) -> None:
    store = artfs.Store(f"file://{small_disk}/store")
    src = make_tree(tmp_path / "src", {"small": "fits"})
    push_dir(store, "ds", src)
    (src / "big").write_bytes(os.urandom(2 << 20))
    with pytest.raises(StoreError, match="disk full"):
        push_dir(store, "ds", src)
    assert [v.version for v in store.versions("ds")] == ["v0"]
    leftovers = [
        p for p in small_disk.rglob("*") if p.is_file() and (p.name.startswith(".") or ".tmp" in p.parts)
    ]
    assert leftovers == []


def test_progress_is_reported_for_transfers(store: artfs.Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": os.urandom(3000), "b/c": os.urandom(5000)})
    progress = Progress()

    art = artfs.Artifact("ds")
    art.add_dir(src)
    v = store.log_artifact(art, progress=progress)
    v.download(tmp_path / "out", progress=progress)
    assert progress.done() == {
        "hashing": (8000, 8000),
        "uploading": (8000, 8000),
        "downloading": (8000, 8000),
    }


def test_a_get_never_straddles_a_span_boundary_of_its_object(small_block_store: artfs.Store) -> None:
    blobs = small_block_store.blobs
    per_span = SPAN_BYTES // BLOCK
    blob = Entry("big.bin", size=3 * SPAN_BYTES, hash="0" * 32, blocks=("1" * 32,) * (3 * per_span))
    spans = blobs.spans((blob, i) for i in range(3, 3 * per_span))
    assert [[i for _, i in s] for s in spans] == [
        list(range(3, per_span)),  # a stream that starts mid-span catches up with the boundary
        list(range(per_span, 2 * per_span)),
        list(range(2 * per_span, 3 * per_span)),
    ]
    size, base = BLOCK // 2, SPAN_BYTES - 20 * BLOCK // 2  # a run of small files across a boundary
    packed = [
        Entry(f"f{k}", size=size, hash="2" * 32, pack="3" * 32, offset=base + k * size) for k in range(40)
    ]
    spans = blobs.spans((e, 0) for e in packed)
    assert [len(s) for s in spans] == [20, 20]


@pytest.mark.parametrize("server", ["seaweedfs", "fake_gcs"])
def test_small_files_go_up_in_packs_on_a_remote_store(
    server: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    request.getfixturevalue(server)
    scheme, bucket = ("s3", S3_BUCKET) if server == "seaweedfs" else ("gs", GCS_BUCKET)
    files: dict[str, str | bytes] = {f"d/f{i:02d}.txt": f"file {i}\n" * (i + 1) for i in range(50)}
    files["big.bin"] = os.urandom(300 * 1024)  # above PACK_FILE: a blob of its own
    src = make_tree(tmp_path / "src", files)
    with artfs.Store(f"{scheme}://{bucket}/packs-{os.getpid()}") as store:
        v0 = push_dir(store, "ds", src)
        assert (count(store, "packs/"), count(store, "blobs/")) == (1, 1)
        entries = {e.path: e for e in v0.manifest.files()}
        assert not entries["big.bin"].pack and len({entries[p].offset for p in files if p != "big.bin"}) == 50
        assert all(v0.open(p).read() == (c if isinstance(c, bytes) else c.encode()) for p, c in files.items())
        assert v0.differences(Path(v0.download(tmp_path / "out"))) == []
        cache = BlockCache(tmp_path / "cache", store.blobs.block_size)  # pinned for offline use
        assert cache.pin(store.url, "ds:v0", v0.manifest, store.blobs) == sum(len(c) for c in files.values())
        again = BlockCache(tmp_path / "cache", store.blobs.block_size)
        assert all(again.open(e, lambda i: b"").load_local(0) is not None for e in v0.manifest.files())

        assert push_dir(store, "ds", src).version == "v0"  # unchanged: nothing new
        (src / "d" / "new.txt").write_text("new")
        v1 = push_dir(store, "ds", src)
        assert (v1.version, count(store, "packs/")) == ("v1", 2)  # only the new file went up
        assert v1.manifest.get("d/f07.txt") == entries["d/f07.txt"]  # where v0 put it
        assert v1.open("d/new.txt").read() == b"new"

        pack, at = keys.pack(entries["d/f07.txt"].pack), entries["d/f07.txt"].offset
        good = store.backend.get(pack).data
        store.backend.put(pack, good[:at] + b"X" + good[at + 1 :])  # damaged in the store
        assert v0.open("d/f07.txt").read() == files["d/f07.txt"].encode()  # verified in the cache
        os.environ["ARTFS_CACHE"] = str(tmp_path / "new-machine")  # (the fixture restores it)
        with pytest.raises(CorruptDataError, match="is corrupt"):
            artfs.Store(store.url).artifact("ds:v0").open("d/f07.txt").read()
        store.backend.delete(pack)
        with pytest.raises(CorruptDataError, match="missing"):
            artfs.Store(store.url).artifact("ds:v0").open("d/f07.txt").read()

        f = src / "d" / "f00.txt"
        entry = entries["d/f00.txt"]
        f.write_text("changed between hashing and uploading")
        with pytest.raises(ContentChangedError):
            store.blobs.upload_pack([entry], {entry.path: LocalFile(str(f))})


def test_a_plain_path_becomes_a_store_only_when_it_is_new_empty_or_a_store(tmp_path: Path) -> None:
    from artfs.errors import InvalidInputError, UnsupportedSchemeError

    src = make_tree(tmp_path / "src", {"x": "1"})
    project = make_tree(tmp_path / "project", {"train.py": "print()", "data/a.csv": "1"})
    with pytest.raises(InvalidInputError, match="holds other files"):
        push_dir(artfs.Store(str(project)), "ds", src)
    assert sorted(p.name for p in project.iterdir()) == ["data", "train.py"]  # untouched
    (tmp_path / "empty").mkdir()
    assert push_dir(artfs.Store(str(tmp_path / "empty")), "ds", src).version == "v0"
    assert push_dir(artfs.Store(str(tmp_path / "empty")), "other", src).version == "v0"  # a store now
    assert push_dir(artfs.Store(str(tmp_path / "new" / "deep")), "ds", src).version == "v0"
    for typo in ["s3:/bucket/x", "s3:bucket", "gs:/b/p", "file:/tmp/x"]:
        with pytest.raises(UnsupportedSchemeError, match="looks like a URL"):
            artfs.Store(typo)
    for bad in ["s3://ab/x", "s3://Bad_Bucket/x", "gs://a/x", "s3://-x-/y"]:
        with pytest.raises(InvalidInputError, match="not a valid bucket name"):
            artfs.Store(bad)
    assert not list(Path.cwd().glob("s3:*")) and not list(Path.cwd().glob("gs:*"))


def test_symlinks_that_leave_the_directory_are_refused_alike_unless_dereferenced(
    store: artfs.Store, tmp_path: Path
) -> None:
    outside = make_tree(tmp_path / "outside", {"secret.txt": "outside\n", "dir/f.txt": "in a dir\n"})
    for link in ["../outside/secret.txt", str(outside / "secret.txt")]:  # relative and absolute
        src = make_tree(tmp_path / f"src{len(link)}", {"a.txt": "a", "leaves": f"->{link}"})
        with pytest.raises(InvalidPathError, match=r"leaves -> .*--dereference"):
            push_dir(store, "ds", src)
    assert list(Path(store.url.removeprefix("file://")).glob("blobs/*/*")) == []  # nothing went up
    assert store.names() == []

    src = make_tree(
        tmp_path / "src",
        {"a.txt": "a", "in": "->a.txt", "abs": f"->{outside / 'secret.txt'}", "up": "->../outside/dir"},
    )
    art = artfs.Artifact("deref")
    art.add_dir(src, dereference=True)  # like cp -L: every link becomes what it points to
    v = store.log_artifact(art)
    assert {e.path: e.kind for e in v.manifest} == {
        "a.txt": "file",
        "abs": "file",
        "in": "file",
        "up/f.txt": "file",
    }
    assert v.open("abs").read() == b"outside\n" and v.open("up/f.txt").read() == b"in a dir\n"
    (src / "loop").symlink_to(".")
    loop = artfs.Artifact("loop")
    loop.add_dir(src, dereference=True)
    with pytest.raises(InvalidPathError, match="symlink loop"):
        store.log_artifact(loop)
    single = artfs.Artifact("single")  # a file given by name is its content, link or not
    single.add_file(src / "in")
    assert store.log_artifact(single).open("in").read() == b"a"


def test_exclude_patterns_and_artfsignore(store: artfs.Store, tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src",
        {
            ".artfsignore": "# caches and junk\n.git/\n*.tmp\n!keep.tmp\n/build\n",
            ".git/config": "x",
            "a.tmp": "t",
            "keep.tmp": "k",
            "build/out.o": "o",
            "sub/build/kept.o": "o",
            "secret.env": "PASSWORD=x",
            "data.csv": "1,2",
            "__pycache__/m.pyc": "c",
        },
    )
    art = artfs.Artifact("ds")
    art.add_dir(src, exclude=["secret.env", "__pycache__/"])
    v = store.log_artifact(art)
    assert [e.path for e in v.manifest] == [".artfsignore", "data.csv", "keep.tmp", "sub/build/kept.o"]


def test_a_tree_whose_absolute_paths_exceed_path_max_pushes(store: artfs.Store, tmp_path: Path) -> None:
    def deep(fd: int, names: list[str]) -> int:
        for name in names:
            os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd

    top = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fd = deep(top, [f"{i}" + "r" * 200 for i in range(17)])  # the root: ~3,500 bytes from /
    root = Path(os.readlink(f"/proc/self/fd/{fd}"))
    fd = deep(fd, [f"{i}" + "d" * 200 for i in range(4)])  # ~800 more inside it
    with open(os.open("data.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
        f.write("deep\n")
    assert len(str(root)) < 4096 < len(str(root)) + 820
    v = push_dir(store, "deep", root)
    (entry,) = v.files()
    assert entry.path.endswith("/data.txt") and v.open(entry.path).read() == b"deep\n"


def test_progress_counts_bytes_as_they_are_hashed_and_uploaded(
    small_block_store: artfs.Store, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", {"big.bin": os.urandom(160 * BLOCK)})  # 10 MiB
    progress = Progress()

    art = artfs.Artifact("ds")
    art.add_dir(src)
    small_block_store.log_artifact(art, progress=progress)
    updates = progress.updates
    assert sum(updates["hashing"]) == sum(updates["uploading"]) == 160 * BLOCK
    assert len([n for n in updates["hashing"] if n]) >= 160  # a block at a time, not a file
    assert len([n for n in updates["uploading"] if n]) >= 2


def test_a_failed_upload_leaves_no_temp_files_in_the_store(store: artfs.Store, tmp_path: Path) -> None:
    good = make_tree(tmp_path, {"good": os.urandom(5000)}) / "good"
    bad = make_tree(tmp_path, {"bad": "original"}) / "bad"
    good_digest, bad_digest = hash_file(good), hash_file(bad)
    bad.write_text("changed!")
    store._open(write=True)
    blobs = store.blobs
    with pytest.raises(ContentChangedError), blobs.backend.batch():
        blobs.upload(LocalFile(str(good)), good_digest)  # written, waiting for the batch's end
        blobs.upload(LocalFile(str(bad)), bad_digest)
    root = Path(store.url.removeprefix("file://"))
    assert [p for p in root.rglob("*") if p.is_file() and p.name != "config"] == []


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every path below root with its content (files), target (links) or "dir"."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes()
    return out


def test_checkout_never_touches_a_directory_that_is_not_its_checkout_unless_forced(
    store: artfs.Store, tmp_path: Path
) -> None:
    from artfs.errors import ConflictError

    v0 = push_dir(store, "ds", make_tree(tmp_path / "v0", {"data.csv": "1\n", "README": "ds\n"}))
    project = make_tree(
        tmp_path / "project", {".git/HEAD": "ref: main\n", "train.py": "print()\n", "data.csv": "mine\n"}
    )
    before = snapshot(project)
    with pytest.raises(ConflictError, match="not a checkout of ds: checkout would remove 2 and replace 1"):
        v0.checkout(project)
    assert snapshot(project) == before
    plan = v0.materialize(project, exact=True, dry_run=True)
    assert (plan.added, plan.replaced, plan.removed) == (["README"], ["data.csv"], [".git/HEAD", "train.py"])
    assert snapshot(project) == before  # a dry run changes nothing
    done = v0.materialize(project, exact=True, force=True)
    assert done.removed == [".git/HEAD", "train.py"] and snapshot(project) == {
        "README": b"ds\n",
        "data.csv": b"1\n",
    }

    (tmp_path / "v0" / "new.txt").write_text("new\n")
    v1 = push_dir(store, "ds", tmp_path / "v0")
    (project / "scratch.txt").write_text("x")
    assert v1.materialize(project, exact=True).removed == ["scratch.txt"]  # its own checkout: allowed
    other = push_dir(store, "other", make_tree(tmp_path / "o", {"o.txt": "o"}))
    with pytest.raises(ConflictError, match="not a checkout of other"):
        other.checkout(project)  # a checkout of another artifact is someone's work too
    empty = tmp_path / "fresh"
    assert other.checkout(empty) == str(empty) and snapshot(empty) == {"o.txt": b"o"}


def test_checkout_is_exact_even_when_size_and_mtime_are_put_back(store: artfs.Store, tmp_path: Path) -> None:
    from artfs.statcache import RACY_NS

    v = push_dir(store, "ds", make_tree(tmp_path / "src", {"a.txt": "alpha\n", "b.txt": "bravo\n"}))
    dest = tmp_path / "dest"
    v.checkout(dest)
    st = os.stat(dest / "a.txt")
    (dest / "a.txt").write_text("ALPHA\n")  # same size
    os.utime(dest / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
    assert v.materialize(dest, exact=True).replaced == ["a.txt"]
    assert (dest / "a.txt").read_text() == "alpha\n"

    # Files just written are racy (a change in the same clock tick would not move their ctime):
    # as in git's index, the next look hashes them once more, and from then on they are trusted.
    time.sleep(2 * RACY_NS / 1e9)
    assert v.materialize(dest, exact=True).unchanged == v.materialize(dest, exact=True).unchanged == 2
    progress = Progress()
    assert v.materialize(dest, exact=True, progress=progress).unchanged == 2
    assert "checking" not in progress.totals  # artfs knows them, nothing touched them since: nothing read
    os.chmod(dest / "b.txt", 0o600)  # ctime moves: b.txt is hashed again, and found right
    progress = Progress()
    assert v.materialize(dest, exact=True, progress=progress).replaced == []
    assert progress.done()["checking"] == (len("bravo\n"), len("bravo\n"))


def test_type_changes_end_exactly_as_the_version_or_change_nothing(
    store: artfs.Store, tmp_path: Path
) -> None:
    from artfs.errors import ConflictError

    v = push_dir(store, "ds", make_tree(tmp_path / "src", {"a/b.txt": "b", "c": "c", "keep.txt": "k"}))
    dest = tmp_path / "dest"
    v.checkout(dest)
    (dest / "a" / "b.txt").unlink()
    (dest / "a").rmdir()
    (dest / "a").write_text("a file where the version has a directory")
    (dest / "c").unlink()
    make_tree(dest, {"c/inside.txt": "a directory where the version has a file"})
    assert [(d.path, d.change) for d in v.differences(dest)] == [
        ("a", "type"),
        ("a/b.txt", "missing"),
        ("c", "type"),
        ("c/inside.txt", "extra"),
    ]
    before = snapshot(dest)
    with pytest.raises(ConflictError, match="2 path"):
        v.download(dest)  # would delete what is not the version's
    assert snapshot(dest) == before
    done = v.materialize(dest, exact=True)
    assert (done.replaced, done.added, done.removed) == (["a", "c"], ["a/b.txt"], ["c/inside.txt"])
    assert v.differences(dest) == [] and snapshot(dest) == {
        "a": "dir",
        "a/b.txt": b"b",
        "c": b"c",
        "keep.txt": b"k",
    }


def test_a_failed_download_changes_nothing_and_leaves_no_staging(
    small_block_store: artfs.Store, tmp_path: Path
) -> None:
    store = small_block_store
    v0 = push_dir(store, "ds", make_tree(tmp_path / "a", {"f": os.urandom(3 * BLOCK), "g": "g0"}))
    dest = tmp_path / "dest"
    v0.checkout(dest)
    before = snapshot(dest)
    v1 = push_dir(store, "ds", make_tree(tmp_path / "b", {"f": os.urandom(3 * BLOCK), "g": "g1", "h": "h"}))
    blob = Path(store.backend.root) / keys.blob(v1.get_path("f").hash)  # type: ignore[attr-defined]
    raw = bytearray(blob.read_bytes())
    raw[2 * BLOCK + 1] ^= 1
    blob.write_bytes(bytes(raw))
    with pytest.raises(CorruptDataError):
        v1.checkout(dest)
    assert snapshot(dest) == before  # g and h were fine, yet nothing changed


def test_download_of_a_path_prefix(store: artfs.Store, tmp_path: Path) -> None:
    v = push_dir(store, "ds", make_tree(tmp_path / "src", {"images/a.png": "a", "images2/b": "b", "c": "c"}))
    dest = Path(v.download(tmp_path / "out", path_prefix="images/"))
    assert snapshot(dest) == {"images": "dir", "images/a.png": b"a"}


def test_the_seeds_vocabulary(store: artfs.Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"model.h5": "weights", "sub/x.txt": "x"})
    art = artfs.Artifact("model", type="model")
    art.add_dir(src)
    used = store.use_artifact(art)  # W&B: log it unless it is the newest content already
    again = artfs.Artifact("model", type="model")
    again.add_dir(src)
    assert store.use_artifact(again).qualified_name == used.qualified_name == "model:v0"
    assert not store.use_artifact(again).created
    v = store.use_artifact("model:latest")
    assert v.fetch_hash() == v.digest and len(v.fetch_hash()) == 32  # Neptune
    listing = v.fetch_files_list()
    assert [(f.file_path, f.size) for f in listing] == [("model.h5", 7), ("sub/x.txt", 1)]
    assert listing[0].file_hash == v.get_path("model.h5").hash
    assert listing[0].metadata["file_path"] is None and len(listing[0].metadata["last_modified"]) == 19
    assert v.get_entry("sub/x.txt").path == "sub/x.txt"


def test_an_unchanged_push_applies_description_metadata_and_aliases(
    store: artfs.Store, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", {"a": "1"})
    push_dir(store, "ds", src, metadata={"rows": 1, "source": "s"})
    art = artfs.Artifact("ds", description="better words", metadata={"rows": 2})
    art.add_dir(src)
    v = store.log_artifact(art, aliases=["best"])
    assert not v.created and v.commit is not None
    assert (v.commit.aliases_moved, v.commit.amended) == (("best",), ("description", "metadata"))
    assert (v.description, v.metadata) == ("better words", {"rows": 2, "source": "s"})
    assert store.log_artifact(art, aliases=["best"]).commit.amended == ()  # type: ignore[union-attr]


def test_temp_files_a_killed_push_left_are_swept_after_a_day(store: artfs.Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": "1"})
    push_dir(store, "ds", src)
    tmp = Path(store.url.removeprefix("file://")) / ".tmp" / "ab"
    tmp.mkdir(parents=True, exist_ok=True)
    old, young = tmp / "ab01.dead.tmp", tmp / "ab02.live.tmp"
    for f in (old, young):
        f.write_bytes(b"x" * 1000)
    os.utime(old, (time.time() - 2 * 24 * 3600,) * 2)
    (src / "b").write_text("2")
    push_dir(store, "ds", src)
    assert not old.exists() and young.exists()  # a live writer's may be in use


def test_verify_compares_modes_as_versions_record_them(store: artfs.Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"data.csv": "1", "run.sh": "#!/bin/sh\n"})
    (src / "run.sh").chmod(0o755)
    v = push_dir(store, "ds", src)
    assert {e.path: oct(e.mode) for e in v.files()} == {"data.csv": "0o644", "run.sh": "0o755"}
    (src / "data.csv").chmod(0o600)  # not executable either way: the same as 644
    (src / "run.sh").chmod(0o700)  # executable: the same as 755
    assert v.differences(src) == []
    (src / "data.csv").chmod(0o744)
    assert [(d.path, d.change) for d in v.differences(src)] == [("data.csv", "mode")]


def test_a_store_written_before_format_2_keeps_working(format1_store: str, tmp_path: Path) -> None:
    store = artfs.Store(format1_store)
    assert [v.version for v in store.versions("ds")] == ["v0", "v1"]  # v2 was deleted
    v0, v1 = store.artifact("ds:best"), store.artifact("ds:latest")
    assert v0.version == "v0" and v1.version == "v1" and v0.metadata == {"rows": 2}
    files = {f.path: f for f in v0.files()}
    assert sorted(files) == sorted([*FORMAT1_V0, "link", "empty"])
    for path, content in FORMAT1_V0.items():
        assert v0.open(path).read() == content, path
    assert files["packed-blocks.bin"].entry.pack and len(files["packed-blocks.bin"].entry.blocks) == 4
    assert files["exec.sh"].mode == 0o755 and files["link"].entry.target == "a.txt"
    with v0.open("blob.bin") as f:  # a range across blocks, verified block by block
        f.seek(70_000)
        assert f.read(70_000) == FORMAT1_V0["blob.bin"][70_000:140_000]
    assert [(d.path, d.change) for d in v0.diff(v1)] == [
        ("a.txt", "modified"), ("dir/b.csv", "removed"), ("new.txt", "added"),
    ]  # fmt: skip
    out = Path(v1.download(tmp_path / "out"))
    assert v1.differences(out) == []

    # pushing what v1 holds again is a no-op; a change makes a format-2 version beside them
    again = artfs.Artifact("ds")
    again.add_dir(out)
    assert not store.log_artifact(again).created
    assert json.loads((Path(format1_store.removeprefix("file://")) / "config").read_text())["format"] == 1
    (out / "a.txt").write_text("alpha three\n")
    changed = artfs.Artifact("ds")
    changed.add_dir(out)
    v3 = store.log_artifact(changed)
    assert (v3.version, v3.created) == ("v3", True) and v3._record.tree and not v3._record.manifest
    assert [(d.path, d.change) for d in v1.diff(v3)] == [("a.txt", "modified")]
    root = Path(format1_store.removeprefix("file://"))
    assert json.loads((root / "config").read_text())["format"] == 2
    assert (root / "artifacts/ds/versions/2.deleted").exists()  # its tombstone got its marker
    assert [t.dirname for t in store.catalog.listing() if t.name == "ds"] == [
        "ds:v0",
        "ds:v1",
        "ds:v3",
        "ds:best",
        "ds:latest",
    ]
    assert artfs.Store(format1_store).artifact("ds:v0").open("blob.bin").read() == FORMAT1_V0["blob.bin"]


# -- format 2 against a model ---------------------------------------------------------------------
_names = st.one_of(
    st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=12),
    st.sampled_from(["n" * 255, "é" * 127, "a b", " lead", "trail ", "-dash", ".hidden", "UPPER", "upper"]),
).filter(lambda n: n not in (".", ".."))


@st.composite
def _trees(draw: st.DrawFn) -> dict[str, tuple[str, object]]:
    """path → ("file", (bytes, executable)) | ("dir", None) | ("link", target)."""
    model: dict[str, tuple[str, object]] = {}
    dirs = [""]
    for _ in range(draw(st.integers(1, 25))):
        parent = draw(st.sampled_from(dirs))
        name = draw(_names)
        path = f"{parent}/{name}" if parent else name
        if path in model or len(path.encode()) > 1000:
            continue
        kind = draw(st.sampled_from(["file", "file", "dir", "link"]))
        files = [p for p, (k, _) in model.items() if k == "file"]
        if kind == "link" and files:
            target = draw(st.sampled_from(files))
            model[path] = ("link", os.path.relpath(target, parent or "."))
        elif kind == "dir":
            model[path] = ("dir", None)
            dirs.append(path)
        else:
            model[path] = ("file", (draw(st.binary(max_size=300)), draw(st.booleans())))
    return model


def _build(root: Path, model: dict[str, tuple[str, object]], order: list[str], mtime: int) -> None:
    for path in order:
        kind, what = model[path]
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            p.mkdir(exist_ok=True)
        elif kind == "link":
            p.symlink_to(str(what))
        else:
            data, executable = what  # type: ignore[misc]
            p.write_bytes(data)
            p.chmod(0o755 if executable else 0o644)
            os.utime(p, ns=(mtime, mtime))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_trees(), st.randoms(use_true_random=False))
def test_format_2_round_trips_any_tree_and_answers_like_the_model(
    model: dict[str, tuple[str, object]], rnd: random.Random
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        store = artfs.Store(f"file://{tmp_path / 'store'}")
        _build(tmp_path / "a", model, sorted(model), 1_000_000_000)
        v = push_dir(store, "t", tmp_path / "a")
        tree = v.tree
        dirs = {p for p, (k, _) in model.items() if k == "dir"} | {""}
        for path, (kind, what) in model.items():
            e = tree.lookup(path)
            assert e is not None and e.kind == kind, path
            if kind == "link":
                assert e.target == what
            elif kind == "file":
                data, executable = what  # type: ignore[misc]
                assert v.open(path).read() == data and e.mode == (0o755 if executable else 0o644)
        for d in dirs:
            below = sorted(p.rpartition("/")[2] for p in model if p.rpartition("/")[0] == d)
            assert sorted(e.name for e in tree.listdir(d)) == below, d
        assert sorted(e.path for e in tree.walk()) == sorted(model)
        assert tree.lookup("no such name") is None
        trio.run(_view_answers_like_the_model, store, model, tmp_path / "cache", rnd)
        # the same content, made in another order with other mtimes: the same digest, no version
        order = sorted(model)
        rnd.shuffle(order)
        _build(tmp_path / "b", model, sorted(order, key=lambda p: p.count("/")), 2_000_000_000)
        again = push_dir(store, "t", tmp_path / "b")
        assert again.digest == v.digest and not again.created


def test_a_one_file_change_writes_the_objects_on_its_path_and_an_unchanged_push_reads_nothing(
    store: artfs.Store, tmp_path: Path
) -> None:
    from artfs.statcache import RACY_NS

    files = {f"top{t}/mid{m}/f{f}.txt": f"{t}{m}{f}" for t in range(3) for m in range(3) for f in range(5)}
    src = make_tree(tmp_path / "src", files)
    time.sleep(2 * RACY_NS / 1e9)  # the files' ctimes are safely in the past: records are trusted
    first = Progress()
    v0 = push_dir(store, "ds", src, progress=first)
    assert first.done()["hashing"][1] == sum(map(len, files.values()))
    trees = count(store, "trees/")
    assert trees == 1 + 3 + 9  # the root, three top directories, nine below them

    unchanged = Progress()
    assert not push_dir(store, "ds", src, progress=unchanged).created
    assert unchanged.done()["hashing"] == (0, 0)  # no file was read: the stat cache knew them all
    assert count(store, "trees/") == trees  # and nothing was written

    (src / "top1" / "mid2" / "f3.txt").write_text("changed")
    v1 = push_dir(store, "ds", src)
    assert v1.version == "v1" and count(store, "trees/") == trees + 3  # mid2, top1 and the root
    assert [(d.path, d.change) for d in v0.diff(v1)] == [("top1/mid2/f3.txt", "modified")]


def test_reads_load_only_the_tree_objects_and_block_chunks_on_their_way(
    store: artfs.Store, tmp_path: Path
) -> None:
    from artfs.manifest import PER_CHUNK, BlockHashes

    src = make_tree(tmp_path / "src", {f"d{d}/f{f}.txt": "x" for d in range(20) for f in range(20)})
    v = push_dir(store, "ds", src)
    fresh = artfs.Store(store.url)
    assert fresh.artifact("ds:v0").get_path("d7/f3.txt").entry.size == 1
    assert fresh.blobs.objects_read == 2  # the root and d7, not the other 19 directories
    assert v.diff(v) == []

    class Counting:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def get_chunk(self, key: str) -> bytes:
            self.asked.append(key)
            return bytes(16 * PER_CHUNK)

        def has_chunk(self, key: str) -> bool:
            return False

    source = Counting()
    hashes = BlockHashes(tuple(f"{i:032x}" for i in range(4)), 4 * PER_CHUNK, source)
    assert hashes[2 * PER_CHUNK + 5] == "0" * 32 and source.asked == [f"{2:032x}"]  # one chunk of four


async def _view_answers_like_the_model(
    store: artfs.Store, model: dict[str, tuple[str, object]], cache_dir: Path, rnd: random.Random
) -> None:
    """The mount's view, without FUSE: every lookup, listing, link and read as the model says,
    and once the kernel would have forgotten everything, nothing is left loaded."""
    from artfs.cache import BlockCache
    from artfs.namespace import ROOT_INO
    from artfs.reader import BlockReader
    from artfs.storage.aio import Threads
    from artfs.vfs import VersionsView

    blobs = store.blobs
    async with trio.open_nursery() as nursery:
        reader = BlockReader(blobs, BlockCache(cache_dir, blobs.block_size), Threads(4), nursery)
        view = VersionsView(store.catalog, blobs, reader.cache, reader, lambda parent, name: None)
        refs: dict[int, int] = {}
        top = await view.lookup(ROOT_INO, "t:v0")
        assert top is not None
        refs[top.ino] = 1
        inodes = {"": top.ino}
        for path in sorted(model, key=lambda p: (p.count("/"), p)):
            parent, _, name = path.rpartition("/")
            attr = await view.lookup(inodes[parent], name)
            assert attr is not None and attr.kind == model[path][0], path
            refs[attr.ino] = refs.get(attr.ino, 0) + 1
            inodes[path] = attr.ino
            kind, what = model[path]
            if kind == "link":
                assert await view.readlink(attr.ino) == what
            elif kind == "file":
                opened = await view.open(attr.ino)
                data, _ = what  # type: ignore[misc]
                assert bytes(await view.read(opened.fh, 0, len(data) + 1)) == data
                view.release(opened.fh)
        for d in [p for p, (k, _) in model.items() if k == "dir"] + [""]:
            listed = sorted(n for n, _ in await view.listdir(inodes[d]))
            assert listed == sorted(p.rpartition("/")[2] for p in model if p.rpartition("/")[0] == d), d
        assert await view.lookup(top.ino, "no such name") is None
        forgotten = list(refs.items())
        rnd.shuffle(forgotten)  # the kernel forgets in any order, parents before children too
        for ino, n in forgotten:
            view.forget(ino, n)
        assert view.stats({})["directories_loaded"] == 0  # the kernel holds nothing: nor do we
        view.close()
        nursery.cancel_scope.cancel()


def test_api_reads_go_through_the_machines_block_cache(
    seaweedfs: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("ARTFS_CACHE", str(tmp_path / "cache"))
    data = os.urandom(3 * SPAN_BYTES // 2)  # 12 MiB: 12 blocks, spans of 8
    url = f"s3://{S3_BUCKET}/api-cache-{os.getpid()}"
    push_dir(artfs.Store(url), "ds", make_tree(tmp_path / "src", {"big.bin": data, "small.txt": "small"}))

    first = artfs.Store(url)
    with first.artifact("ds:v0").open("big.bin") as f:
        assert f.read() == data
    counters = first.cache.counters()
    assert counters["blocks_fetched"] == 12 and counters["blocks_cached"] == 12

    second = artfs.Store(url)  # another process, as far as memory goes: the disk cache serves it
    with second.artifact("ds:v0").open("big.bin") as f:
        f.seek(5 * (1 << 20) + 3)
        assert f.read(100) == data[5 * (1 << 20) + 3 : 5 * (1 << 20) + 103]
    assert second.cache.counters().get("blocks_fetched", 0) == 0

    third = artfs.Store(url)
    version = third.artifact("ds:v0")

    def read_small(_: int) -> bytes:
        with version.open("small.txt") as f:
            return f.read()

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(read_small, range(8))) == {b"small"}
    assert third.cache.counters()["blocks_fetched"] == 1  # eight readers, one fetch
