"""Layer 2: the Backend contract (one conformance suite every backend runs unchanged) and the
catalog's behaviour under concurrent writers from separate processes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import artfs
from artfs.errors import ObjectNotFoundError, PreconditionFailedError, StoreError
from artfs.storage import Backend, open_backend

from .conftest import S3_BUCKET, SeaweedFS, make_tree, run_cli


def test_put_get_stat(backend: Backend) -> None:
    etag = backend.put("a/b/c", b"hello")
    got = backend.get("a/b/c")
    assert got.data == b"hello" and got.etag == etag
    assert backend.stat("a/b/c").size == 5 and backend.stat("a/b/c").etag == etag
    assert backend.exists("a/b/c") and not backend.exists("a/b/d")


def test_missing_keys(backend: Backend) -> None:
    with pytest.raises(ObjectNotFoundError):
        backend.get("nope")
    with pytest.raises(ObjectNotFoundError):
        backend.stat("nope/x")
    with pytest.raises(ObjectNotFoundError):
        backend.get_range("nope", 0, 10)
    backend.delete("nope")  # deleting what is not there is fine


def test_get_range(backend: Backend) -> None:
    backend.put("r", bytes(range(100)))
    assert backend.get_range("r", 10, 5) == bytes(range(10, 15))
    assert backend.get_range("r", 95, 50) == bytes(range(95, 100))


@pytest.mark.parametrize("server", ["seaweedfs", "fake_gcs"])
def test_reads_from_a_missing_bucket_say_so(server: str, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue(server)
    scheme = "s3" if server == "seaweedfs" else "gs"
    with open_backend(f"{scheme}://no-such-bucket/x") as missing:
        for read in (lambda: missing.get("k"), lambda: missing.get_range("k", 0, 10)):
            with pytest.raises(StoreError, match="does not exist"):
                read()


def test_put_if_absent_claims_once(backend: Backend) -> None:
    backend.put("k", b"first", if_absent=True)
    with pytest.raises(PreconditionFailedError):
        backend.put("k", b"second", if_absent=True)
    assert backend.get("k").data == b"first"


def test_put_if_match_is_compare_and_swap(backend: Backend) -> None:
    e1 = backend.put("k", b"1")
    e2 = backend.put("k", b"2", if_match=e1)
    with pytest.raises(PreconditionFailedError):
        backend.put("k", b"3", if_match=e1)  # stale etag
    assert backend.get("k").data == b"2"
    with pytest.raises(PreconditionFailedError):
        backend.put("missing", b"x", if_match=e2)
    backend.delete("k")
    assert not backend.exists("k")
    backend.put("k", b"4", if_absent=True)  # a deleted key can be claimed again


def test_list_and_list_dirs(backend: Backend) -> None:
    for key in ["p/b/1", "p/a/2", "p/a/1", "q/1", "pz"]:
        backend.put(key, key.encode())
    assert [o.key for o in backend.list("p/")] == ["p/a/1", "p/a/2", "p/b/1"]
    assert [o.key for o in backend.list("p/a")] == ["p/a/1", "p/a/2"]
    assert [o.size for o in backend.list("q/")] == [3]
    assert list(backend.list_dirs("p/")) == ["a", "b"]
    assert list(backend.list("none/")) == [] and list(backend.list_dirs("none/")) == []


class Exploding(io.RawIOBase):
    def __init__(self) -> None:
        self.sent = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.sent > 3:
            raise RuntimeError("source went away")
        self.sent += 1
        return b"x" * 1000


def test_aborted_stream_leaves_nothing_visible(backend: Backend) -> None:
    with pytest.raises(RuntimeError):
        backend.put_stream("big", Exploding(), 10_000, if_absent=True)  # type: ignore[arg-type]
    assert not backend.exists("big")
    assert list(backend.list("")) == []


def test_put_stream(backend: Backend, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40_000
    (tmp_path / "f").write_bytes(data)
    for attempt in range(2):
        with open(tmp_path / "f", "rb") as f:
            if attempt == 0:
                backend.put_stream("blob", f, len(data), if_absent=True)
            else:
                with pytest.raises(PreconditionFailedError):
                    backend.put_stream("blob", f, len(data), if_absent=True)
    assert backend.get("blob").data == data


def test_runs_of_zeros_come_back_and_stay_holes_in_a_local_store(backend: Backend) -> None:
    chunk = 4 * 1024 * 1024  # a sparse file staged (fsstress makes 100 GB of them) stays sparse
    scattered = (b"x" + bytes(256 * 1024 - 1)) * 16  # a byte written every 256 KiB
    data = bytes(chunk) + scattered + bytes(2 * chunk)
    backend.put_stream("sparse", io.BytesIO(data), len(data), if_absent=True)
    assert backend.get("sparse").data == data
    assert backend.get_range("sparse", chunk - 1, 2) == b"\0x"
    if backend.url.startswith("file://"):
        stored = Path(backend.url.removeprefix("file://")) / "sparse"
        assert stored.stat().st_size == len(data) and stored.stat().st_blocks * 512 < chunk // 2


RACE = """
import sys
from artfs.storage import open_backend
b = open_backend(sys.argv[1])
for i in range(50):
    while True:
        p = b.get("counter")
        try:
            b.put("counter", str(int(p.data) + 1).encode(), if_match=p.etag)
            break
        except Exception as e:
            if type(e).__name__ != "PreconditionFailedError":
                raise
"""


def test_compare_and_swap_loses_no_update_across_processes(backend_url: str) -> None:
    backend = open_backend(backend_url)
    backend.put("counter", b"0")
    procs = [subprocess.Popen([sys.executable, "-c", RACE, backend_url]) for _ in range(6)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert backend.get("counter").data == b"300"


def test_eight_concurrent_pushes_make_eight_versions(backend_url: str, tmp_path: Path) -> None:
    dirs = [make_tree(tmp_path / f"src{i}", {"data.txt": f"content {i}"}) for i in range(8)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "artfs", "--store", backend_url, "push", "shared", str(d)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for d in dirs
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(outs) == [f"shared:v{i}" for i in range(8)]
    listing = json.loads(run_cli("ls", "shared", "--json", store=backend_url).stdout)
    assert sorted(v["number"] for v in listing) == list(range(8))
    assert len({v["digest"] for v in listing}) == 8  # none overwritten by another
    info = json.loads(run_cli("info", "shared:latest", "--json", store=backend_url).stdout)
    assert info["number"] == 7


def test_large_streams_go_up_in_parts_and_an_abort_leaves_nothing(backend: Backend) -> None:
    data = b"".join(i.to_bytes(4, "little") * 262_144 for i in range(40))  # 40 MiB: several parts
    assert backend.put_stream("large", io.BytesIO(data), len(data), if_absent=True)
    assert backend.get_range("large", 39 * 1024 * 1024, 8) == (39).to_bytes(4, "little") * 2
    with pytest.raises(PreconditionFailedError):
        backend.put_stream("large", io.BytesIO(data), len(data), if_absent=True)

    class FailsLate(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            if self.tell() > 20 * 1024 * 1024:
                raise RuntimeError("source went away")
            return super().read(n)

    with pytest.raises(RuntimeError):
        backend.put_stream("other", FailsLate(data), len(data), if_absent=True)
    assert not backend.exists("other")


EDITOR = """
import sys
import artfs
from artfs.errors import ConflictError
store, k = artfs.Store(sys.argv[1]), int(sys.argv[2])
while True:  # a lost compare-and-swap is reported; the loser reads again and retries
    v = store.artifact("shared:v0")
    v.metadata[f"p{k}"] = k
    try:
        v.save()
        break
    except ConflictError:
        pass
mine = store.artifact(f"shared:v{k}")
mine.aliases.append("best")
mine.save()
"""


def test_concurrent_metadata_edits_and_alias_moves_lose_nothing(backend_url: str, tmp_path: Path) -> None:
    import artfs

    store = artfs.Store(backend_url)
    for k in range(8):
        art = artfs.Artifact("shared", type="dataset")
        with art.new_file("k.txt") as f:
            f.write(str(k))
        store.log_artifact(art)
    procs = [subprocess.Popen([sys.executable, "-c", EDITOR, backend_url, str(k)]) for k in range(8)]
    assert [p.wait(120) for p in procs] == [0] * 8
    v0 = store.artifact("shared:v0")
    assert v0.metadata == {f"p{k}": k for k in range(8)}  # every edit landed, none overwritten
    best = store.artifact("shared:best")
    assert best.number in range(8) and best.aliases.count("best") == 1
    assert sorted(store.catalog.aliases("shared")) == ["best", "latest"]


def test_an_alias_is_removed_by_compare_and_swap_and_can_come_back(backend: Backend) -> None:
    from artfs.catalog import Catalog, VersionRecord
    from artfs.errors import VersionNotFoundError
    from artfs.names import Ref

    catalog = Catalog(backend)
    for _ in range(2):
        catalog.claim("ds", lambda number: VersionRecord("ds", number, "dataset"))
    assert catalog.set_alias("ds", "best", 0)
    assert not catalog.delete_alias("ds", "best", expected=1)  # names v0, not v1: kept
    assert catalog.delete_alias("ds", "best", expected=0)
    assert not catalog.delete_alias("ds", "best")  # already gone
    assert "best" not in catalog.aliases("ds")
    with pytest.raises(VersionNotFoundError):
        catalog.resolve(Ref.parse("ds:best"))
    assert catalog.set_alias("ds", "best", 1)
    assert catalog.resolve(Ref.parse("ds:best")).number == 1


def test_listing_many_versions_costs_a_listing_not_a_read_per_version(
    tmp_path: Path, own_s3: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    from artfs.catalog import Catalog

    url = f"s3://{S3_BUCKET}/listing"
    env = {"S3_ENDPOINT_URL": own_s3.endpoint}
    monkeypatch.setenv("S3_ENDPOINT_URL", own_s3.endpoint)
    store = artfs.Store(url)
    for a in range(4):
        for v in range(6):
            art = artfs.Artifact(f"a{a}")
            with art.new_file("x.txt") as f:
                f.write(f"{a}.{v}")
            store.log_artifact(art, aliases=["best"] if v == 2 else [])
    store.artifact("a0:v5").delete()

    with open_backend(url) as backend:
        catalog = Catalog(backend)
        before, _ = own_s3.traffic()
        listing = {t.dirname: t.number for t in catalog.listing()}
        requests = own_s3.traffic()[0] - before
    assert len(listing) == 4 * 6 - 1 + 4 + 4  # versions (v5 of a0 deleted), latest and best of each
    assert listing["a0:latest"] == 4 and listing["a1:latest"] == 5 and listing["a3:best"] == 2
    assert requests == 1 + 4  # one LIST, and each artifact's `best` (`latest` needs no read)
    with open_backend(url) as backend:
        catalog = Catalog(backend)
        catalog.listing()
        before, _ = own_s3.traffic()
        assert catalog.listing() == catalog.listing()
        assert own_s3.traffic()[0] - before == 2  # again: only the listings; no alias changed

    before, _ = own_s3.traffic()
    rows = json.loads(run_cli("ls", "--json", store=url, env=env).stdout)
    assert [(r["name"], r["versions"], r["latest"]) for r in rows] == [
        ("a0", 5, "v4"), ("a1", 6, "v5"), ("a2", 6, "v5"), ("a3", 6, "v5"),
    ]  # fmt: skip
    assert own_s3.traffic()[0] - before <= 1 + 1 + 4  # config, the listing, a record per artifact
