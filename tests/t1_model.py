"""Layer 1: the model — names, refs, paths, hashing, manifests and digests. No store involved."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from artfs.digest import StreamHasher, hash_file
from artfs.errors import CorruptDataError, InvalidNameError, InvalidPathError
from artfs.manifest import Entry, Manifest
from artfs.names import Ref, validate_alias, validate_link_target, validate_name, validate_path


@pytest.mark.parametrize("name", ["bike-dataset", "a", "A.b_c-9", "x" * 128])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".x", "a/b", "a:b", "a b", "x" * 129, "é", "a\0"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_name(name)


@pytest.mark.parametrize("alias", ["v3", "3", "V3x"[:2].lower(), "v0"])
def test_alias_cannot_look_like_a_version(alias: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_alias(alias)


def test_refs() -> None:
    assert Ref.parse("bike:v3") == Ref("bike", number=3)
    assert Ref.parse("bike:3") == Ref("bike", number=3)
    assert Ref.parse("bike:best") == Ref("bike", alias="best")
    assert Ref.parse("bike") == Ref("bike", alias="latest")
    assert str(Ref.parse("bike:v3")) == "bike:v3"
    with pytest.raises(InvalidNameError):
        Ref.parse("bike:bad alias")


@pytest.mark.parametrize(
    "path", ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/.", "", "a\0b", "a/", "\ud800"]
)
def test_hostile_paths_rejected(path: str) -> None:
    with pytest.raises(InvalidPathError):
        validate_path(path)


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1),
        min_size=1,
        max_size=5,
    )
)
def test_paths_from_safe_parts_are_accepted(parts: list[str]) -> None:
    path = "/".join(parts)
    if any(p in (".", "..") or len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        with pytest.raises(InvalidPathError):
            validate_path(path)
    else:
        assert validate_path(path) == path


def test_link_targets_stay_inside() -> None:
    assert validate_link_target("a/b", "../c") == "../c"
    for target in ["../../c", "/etc", "../.."]:
        with pytest.raises(InvalidPathError):
            validate_link_target("a/b", target)


@given(st.binary(max_size=5000), st.lists(st.integers(1, 700), max_size=20))
def test_stream_hasher_independent_of_chunking(data: bytes, cuts: list[int]) -> None:
    h = StreamHasher(block_size=1024)
    pos = 0
    for c in cuts:
        h.update(data[pos : pos + c])
        pos += c
    h.update(data[pos:])
    d = h.digest()
    assert d.hash == xxhash.xxh3_128_hexdigest(data)  # same as xxh128sum
    assert d.size == len(data)
    if len(data) > 1024:
        assert d.blocks == tuple(
            xxhash.xxh3_128_hexdigest(data[i : i + 1024]) for i in range(0, len(data), 1024)
        )
    else:
        assert d.blocks == ()


def test_hash_file_matches_bytes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "f").write_bytes(data)
    d = hash_file(tmp_path / "f", block_size=1024 * 1024)
    assert d.hash == xxhash.xxh3_128_hexdigest(data)
    assert len(d.blocks) == 4


def entry(path: str, h: str = "ab" * 16, mode: int = 0o644, mtime: int = 0) -> Entry:
    return Entry(path, "file", 1, mode, h, (), mtime)


def test_digest_ignores_order_and_mtime_but_not_content_mode_or_path() -> None:
    a = Manifest.build([entry("x"), entry("y/z")])
    assert Manifest.build([entry("y/z", mtime=5), entry("x", mtime=9)]).digest == a.digest
    assert Manifest.build([entry("x", h="cd" * 16), entry("y/z")]).digest != a.digest
    assert Manifest.build([entry("x", mode=0o755), entry("y/z")]).digest != a.digest
    assert Manifest.build([entry("x2"), entry("y/z")]).digest != a.digest


def test_manifest_round_trip_and_canonical_bytes() -> None:
    m = Manifest.build(
        [
            entry("b"),
            Entry("a/l", "link", target="../b"),
            Entry("e", "dir"),
            Entry("big", "file", 10, 0o755, "ef" * 16, ("01" * 16, "02" * 16), 7),
        ]
    )
    again = Manifest.from_bytes(m.to_bytes())
    assert again == m and again.to_bytes() == m.to_bytes()
    assert [e.path for e in again] == ["a/l", "b", "big", "e"]


def test_manifest_rejects_conflicts() -> None:
    with pytest.raises(InvalidPathError):
        Manifest.build([entry("a"), entry("a")])
    with pytest.raises(InvalidPathError):
        Manifest.build([entry("a"), entry("a/b")])


@pytest.mark.parametrize("path", ["../escape", "/abs", "a/../../b", "x\u0000y"])
def test_hostile_manifest_rejected_on_read(path: str) -> None:
    entry = {"kind": "file", "path": path, "size": 1, "mode": 420, "hash": "ab" * 16, "mtime": 0}
    doc = {"format": 1, "block_size": 4194304, "entries": [entry]}
    with pytest.raises(InvalidPathError):
        Manifest.from_bytes(json.dumps(doc).encode())


def test_escaping_symlink_in_manifest_rejected_on_read() -> None:
    doc = b'{"format":1,"block_size":4194304,"entries":[{"kind":"link","path":"a","target":"../../etc"}]}'
    with pytest.raises(InvalidPathError):
        Manifest.from_bytes(doc)


@pytest.mark.parametrize(
    "junk", [b"not json", b'{"format":2,"entries":[]}', b'{"format":1,"entries":[{"path":"a"}]}']
)
def test_malformed_manifest_is_corrupt_data(junk: bytes) -> None:
    with pytest.raises(CorruptDataError):
        Manifest.from_bytes(junk)


def test_read_ahead_opens_only_for_streams_and_closes_on_a_seek() -> None:
    from artfs.prefetch import ReadAhead

    ra = ReadAhead(block_size=4, window_bytes=32)  # at most 8 blocks ahead
    assert list(ra.advise(50, 50, 100)) == []  # one read: a probe, nothing ahead
    assert list(ra.advise(50, 51, 100)) == []
    assert list(ra.advise(51, 53, 100)) == []  # a parquet column chunk: read, not a stream yet
    assert list(ra.advise(54, 54, 100)) == [55]  # crossed STREAM_BLOCKS boundaries: a stream
    assert list(ra.advise(55, 55, 100)) == [56, 57]
    assert list(ra.advise(56, 56, 100)) == [57, 58, 59, 60]
    assert len(ra.advise(57, 57, 100)) == 8 and len(ra.advise(58, 58, 100)) == 8  # the limit
    assert list(ra.advise(10, 10, 100)) == []  # a seek closes the window
    assert list(ra.advise(97, 98, 100)) == [] and list(ra.advise(98, 99, 100)) == []  # never past the end


@given(
    start=st.integers(0, 200),
    reads=st.lists(st.integers(1, 3), min_size=1, max_size=80),  # blocks per read, back to back
    count=st.integers(1, 400),
)
def test_read_ahead_of_a_run_costs_at_most_half_the_run(start: int, reads: list[int], count: int) -> None:
    from artfs.prefetch import ReadAhead

    span = 8
    ra = ReadAhead(block_size=1, window_bytes=32)
    fetched: set[int] = set()
    first = min(start, count - 1)
    for n in reads:
        last = min(first + n - 1, count - 1)
        window = ra.advise(first, last, count)
        fetched.update(range(first, last + 1))
        end = ra.fetch_end(window, count, span) if window else last + 1
        fetched.update(range(window.start, end) if window else ())
        run = ra.run_blocks
        beyond = len([i for i in fetched if i > last])
        assert end <= count
        assert beyond <= max(1, run // 2)  # at most 1.5 × what was read, and a block
        if run >= 2 * span and end < count:  # a stream: GETs end on span boundaries
            assert end % span == 0
        if last == count - 1:
            break
        first = last + 1


@pytest.mark.parametrize("bad", ["../../etc/passwd", "AB" * 16, "ab" * 15, ""])
def test_a_file_entry_must_carry_a_content_hash(bad: str) -> None:
    with pytest.raises(CorruptDataError):
        Entry("x", "file", 1, 0o644, bad)
    with pytest.raises(CorruptDataError):
        Entry("x", "file", 1, 0o644, "ab" * 16, ("cd" * 16, bad))


def test_names_longer_than_255_bytes_are_refused_on_write_and_on_read() -> None:
    assert validate_path("a" * 255 + "/b") and validate_path("é" * 127)  # 254 bytes
    for bad in ["a" * 256, "d/" + "é" * 128 + "/x", "x/" + "a" * 300]:
        with pytest.raises(InvalidPathError, match="longer than 255 bytes"):
            validate_path(bad)
    entry = {"kind": "file", "path": "d/" + "n" * 300, "size": 1, "mode": 420, "hash": "ab" * 16}
    doc = {"format": 1, "block_size": 1 << 20, "entries": [entry]}
    with pytest.raises(InvalidPathError):
        Manifest.from_bytes(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "text",
    [
        'Could not connect to "http://h:9/b/k?AWSAccessKeyId=AKIA123&Signature=abc%3D&Expires=1"',
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIA123/x, Signature=deadbeef",
        "GET https://storage.googleapis.com/b/o?access_token=ya29.secret&alt=media",
        '{"aws_secret_access_key": "s3cr3t", "X-Amz-Security-Token": "tok"}',
    ],
)
def test_redact_removes_signed_urls_and_credentials(text: str) -> None:
    from artfs.logs import redact

    clean = redact(text)
    for secret in ("AKIA123", "abc%3D", "deadbeef", "ya29.secret", "s3cr3t", 'tok"'):
        assert secret not in clean
    assert "redacted" in clean


# -- format 2: tree objects ---------------------------------------------------------------------
class Chunks:
    """An in-memory chunk source."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def get_chunk(self, key: str) -> bytes:
        return self.objects[key]

    def has_chunk(self, key: str) -> bool:
        return key in self.objects


def file(path: str, h: str = "ab" * 16, mode: int = 0o644, mtime: int = 0, size: int = 1, **kw: Any) -> Entry:
    return Entry(path, "file", size, mode, h, mtime=mtime, **kw)


def decoded(objects: list[tuple[str, bytes]], key: str, chunks: Chunks, parent: str = "") -> list[Entry]:
    from artfs.manifest import decode_line, parse_tree

    store = dict(objects)
    pages, lines = parse_tree(store[key])
    if pages is not None:
        lines = [line for page in pages for line in parse_tree(store[page.key])[1]]
    return [decode_line(line, parent, chunks, 1 << 20) for line in lines]


def test_a_directory_round_trips_and_its_digest_ignores_order_mtimes_and_placement() -> None:
    from artfs.manifest import BlockHashes, chunk_objects, encode_dir

    chunks = Chunks()
    blocks = tuple(f"{i:032x}" for i in range(5000))  # two chunks
    chunks.objects.update(chunk_objects(blocks))
    big = file(
        "d/big",
        "cd" * 16,
        size=5000 << 20,
        blocks=BlockHashes(tuple(k for k, _ in chunk_objects(blocks)), 5000, chunks),
    )
    children = [
        file("d/a b é.txt", mtime=5),
        file("d/x", mode=0o755, pack="ef" * 16, offset=7),
        Entry("d/l", "link", target="x"),
        Entry("d/sub", "dir", 10, 0o755, tree="12" * 16, digest="34" * 16, files=3),
        big,
    ]
    one = encode_dir(children)
    assert decoded(one.objects, one.key, chunks, "d") == sorted(children, key=lambda e: e.name)
    assert list(decoded(one.objects, one.key, chunks, "d")[1].blocks) == list(blocks)  # "big"
    again = encode_dir(
        reversed(
            [
                *children[1:],
                file("d/a b é.txt", mtime=99),
            ]
        )
    )
    assert again.digest == one.digest and again.key != one.key  # mtimes are stored, not digested
    placed = encode_dir([*children[:1], file("d/x", mode=0o755), *children[2:]])
    assert placed.digest == one.digest  # where the bytes are is not what they are
    for changed in (file("d/x", "00" * 16, mode=0o755), file("d/x"), file("d/y", mode=0o755)):
        assert encode_dir([*children[:1], changed, *children[2:]]).digest != one.digest


def test_big_directories_are_paged_by_content_and_one_new_name_rewrites_one_page() -> None:
    from artfs.manifest import PAGE_MIN, encode_dir

    names = [f"img{i:06}.png" for i in range(3 * PAGE_MIN)]
    before = encode_dir(file(n) for n in names)
    assert len(before.objects) > 3  # pages and an index
    after = encode_dir(file(n) for n in [*names, "img001234a.png"])
    new = {k for k, _ in after.objects} - {k for k, _ in before.objects}
    assert len(new) == 2  # the page it falls in, and the index
    assert after.digest != before.digest
    flat = encode_dir(file(n) for n in names[:PAGE_MIN])
    assert len(flat.objects) == 1
    assert decoded(before.objects, before.key, Chunks()) == sorted(
        (file(n) for n in names), key=lambda e: e.name
    )


@pytest.mark.parametrize(
    "line",
    [
        b'["f","../up",420,1,0,"' + b"ab" * 16 + b'",[],"",0]',
        b'["f","a/b",420,1,0,"' + b"ab" * 16 + b'",[],"",0]',
        b'["f","' + b"n" * 256 + b'",420,1,0,"' + b"ab" * 16 + b'",[],"",0]',
        b'["f","x",420,1,0,"../../etc/passwd",[],"",0]',
        b'["d","x","../../etc","' + b"ab" * 16 + b'",0,0]',
        b'["l","x","../../../etc/passwd"]',
        b'["q","x"]',
        b"not json",
        b'["f","x",420,3145728,0,"' + b"ab" * 16 + b'",[],"",0]',  # 3 blocks, no block hashes
    ],
)
def test_hostile_tree_lines_are_refused(line: bytes) -> None:
    from artfs.manifest import decode_line

    with pytest.raises((InvalidPathError, CorruptDataError)):
        decode_line(line, "top", Chunks(), 1 << 20)
