"""Manifests: the immutable file list of a version, its canonical bytes and its digest.

Stored form (JSON, compact, keys sorted, entries sorted by path):
    {"format": 1, "block_size": 4194304, "entries": [
        {"kind": "file", "path": "a/b.csv", "size": 12, "mode": 420, "hash": "…", "mtime": ns,
         "blocks": ["…", …],                        # blocks only when size > block_size
         "pack": "…", "offset": n},                 # only for a small file stored in a pack
        {"kind": "link", "path": "c", "target": "a/b.csv"},
        {"kind": "dir", "path": "empty"}]}          # only directories with nothing inside
The object is named by the xxh3-128 of these bytes (so a corrupt manifest is detected on read).
The *digest* is a different hash: over kind, mode, content hash or link target and path only, so
touching mtimes or re-ordering inputs does not make a new version (or where its bytes are kept:
a blob of its own or a slice of a pack).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .digest import ALGORITHM, DEFAULT_BLOCK_SIZE, hash_bytes
from .errors import CorruptDataError, InvalidPathError
from .names import validate_link_target, validate_path

FORMAT = 1
HASH_RE = re.compile(r"[0-9a-f]{32}")


def normal_mode(mode: int) -> int:
    """Files are 0o755 when anyone may execute them, else 0o644 (as git records them)."""
    return 0o755 if mode & 0o111 else 0o644


@dataclass(frozen=True)
class Entry:
    """One path in a version: a file (content hash), a symlink (target) or an empty directory."""

    path: str
    kind: str = "file"
    size: int = 0
    mode: int = 0o644
    hash: str = ""
    blocks: tuple[str, ...] = ()
    mtime: int = 0
    target: str = ""
    pack: str = ""  # the pack holding the content at `offset`; "" when it is a blob of its own
    offset: int = 0

    def __post_init__(self) -> None:
        validate_path(self.path)
        hashes = (self.hash, *self.blocks, *((self.pack,) if self.pack else ()))
        if self.kind == "file" and not all(map(HASH_RE.fullmatch, hashes)):
            # hashes become store keys and local paths: nothing else may pass
            raise CorruptDataError(f"{self.path!r}: {self.hash!r} is not an {ALGORITHM} content hash")
        if self.offset < 0:
            raise CorruptDataError(f"{self.path!r}: negative pack offset {self.offset}")
        if self.kind == "link":
            validate_link_target(self.path, self.target)
        elif self.kind not in ("file", "dir"):
            raise InvalidPathError(f"{self.path!r}: unknown entry kind {self.kind!r}")

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    def block(self, index: int, block_size: int) -> tuple[int, int, str]:
        """Offset, length and expected hash of block `index` of this file's content."""
        start = index * block_size
        length = max(0, min(block_size, self.size - start))
        return start, length, self.blocks[index] if self.blocks else self.hash

    def block_count(self, block_size: int) -> int:
        return -(-self.size // block_size)

    def identity(self) -> str:
        """What the digest covers: kind, mode, content, path (never mtime)."""
        what = self.target if self.kind == "link" else self.hash
        return f"{self.kind}\0{self.mode:o}\0{what}\0{self.path}\0"

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "link":
            return {"kind": "link", "path": self.path, "target": self.target}
        if self.kind == "dir":
            return {"kind": "dir", "path": self.path}
        d: dict[str, Any] = {
            "kind": "file",
            "path": self.path,
            "size": self.size,
            "mode": self.mode,
            "hash": self.hash,
            "mtime": self.mtime,
        }
        if self.blocks:
            d["blocks"] = list(self.blocks)
        if self.pack:
            d["pack"], d["offset"] = self.pack, self.offset
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entry:
        try:
            kind = d.get("kind", "file")
            if kind == "file":
                return cls(
                    path=d["path"],
                    size=int(d["size"]),
                    mode=normal_mode(int(d["mode"])),
                    hash=str(d["hash"]),
                    blocks=tuple(d.get("blocks", ())),
                    mtime=int(d.get("mtime", 0)),
                    pack=str(d.get("pack", "")),
                    offset=int(d.get("offset", 0)),
                )
            if kind == "link":
                return cls(path=d["path"], kind="link", target=d["target"])
            return cls(path=d["path"], kind=kind)
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptDataError(f"malformed manifest entry {d!r}: {e}") from None


@dataclass(frozen=True)
class Difference:
    """One way a tree differs from a version."""

    path: str
    change: str  # missing | extra | modified | type | mode | target (added/removed in diffs)

    def __str__(self) -> str:
        return f"{self.change:8} {self.path}"


@dataclass(frozen=True)
class Manifest:
    """An immutable, path-sorted list of entries; files may not sit below files or links."""

    entries: tuple[Entry, ...]
    block_size: int = DEFAULT_BLOCK_SIZE
    _by_path: dict[str, Entry] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, entries: Iterable[Entry], block_size: int = DEFAULT_BLOCK_SIZE) -> Manifest:
        by_path: dict[str, Entry] = {}
        for e in entries:
            if e.path in by_path:
                raise InvalidPathError(f"two entries for {e.path!r}")
            by_path[e.path] = e
        checked: set[str] = set()  # directories whose ancestors are known not to be files
        for path in by_path:
            parent = path.rpartition("/")[0]
            while parent and parent not in checked:
                if parent in by_path and by_path[parent].kind != "dir":
                    raise InvalidPathError(f"{path!r} lies below {parent!r}, which is not a directory")
                checked.add(parent)
                parent = parent.rpartition("/")[0]
        # A "dir" entry only records an empty directory: drop ones that have content.
        parents = {p.rpartition("/")[0] for p in by_path}
        kept = [e for p, e in by_path.items() if not (e.kind == "dir" and p in parents)]
        kept.sort(key=lambda e: e.path)
        return cls(tuple(kept), block_size, {e.path: e for e in kept})

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, path: object) -> bool:
        return path in self._by_path

    def get(self, path: str) -> Entry | None:
        return self._by_path.get(path)

    def files(self) -> Iterator[Entry]:
        return (e for e in self.entries if e.is_file)

    @property
    def size(self) -> int:
        return sum(e.size for e in self.files())

    @property
    def digest(self) -> str:
        return hash_bytes("".join(e.identity() for e in self.entries).encode("utf-8", "surrogateescape"))

    def diff(self, other: Manifest) -> list[Difference]:
        """What changes from self to other: added, removed, modified, type, mode, target."""
        out = [Difference(p, "removed") for p in self._by_path if p not in other]
        out += [Difference(p, "added") for p in other._by_path if p not in self]
        for e in self.entries:
            o = other.get(e.path)
            if o is None or o.identity() == e.identity():
                continue
            if o.kind != e.kind:
                out.append(Difference(e.path, "type"))
            elif e.kind == "link":
                out.append(Difference(e.path, "target"))
            elif o.hash != e.hash:
                out.append(Difference(e.path, "modified"))
            else:
                out.append(Difference(e.path, "mode"))
        return sorted(out, key=lambda d: d.path)

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "block_size": self.block_size,
            "entries": [e.to_dict() for e in self.entries],
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode(
            "utf-8", "surrogateescape"
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse and validate; hostile paths raise InvalidPathError, junk raises CorruptDataError."""
        try:
            doc = json.loads(data.decode("utf-8", "surrogateescape"))
            if doc.get("format") != FORMAT:
                raise CorruptDataError(f"manifest format {doc.get('format')!r} is not {FORMAT}")
            entries = [Entry.from_dict(d) for d in doc["entries"]]
            return cls.build(entries, int(doc["block_size"]))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CorruptDataError(f"malformed manifest: {e}") from None
