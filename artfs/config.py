"""Where things live by default, and the store's own format record (`<root>/config`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from . import keys
from .digest import ALGORITHM, DEFAULT_BLOCK_SIZE
from .errors import (
    InvalidInputError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreFormatError,
    StoreNotFoundError,
)
from .storage import Backend

log = logging.getLogger(__name__)

FORMAT = 2  # of stores this artfs writes: format-2 versions (trees)
READS = (1, 2)  # format 1: stores whose versions are all one-document manifests


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback)


def default_store_url() -> str:
    """`$ARTFS_STORE`, else the embedded store under `$XDG_DATA_HOME/artfs/store`."""
    return (
        os.environ.get("ARTFS_STORE") or f"file://{_xdg('XDG_DATA_HOME', '.local/share') / 'artfs' / 'store'}"
    )


def default_cache_dir() -> Path:
    """`$ARTFS_CACHE`, else `$XDG_CACHE_HOME/artfs`: one cache per user, shared by every store."""
    return Path(os.environ.get("ARTFS_CACHE") or _xdg("XDG_CACHE_HOME", ".cache") / "artfs")


def state_dir() -> Path:
    """Where artfs keeps what it knows about this machine (daemon logs, what it wrote where):
    `$XDG_STATE_HOME/artfs`."""
    return _xdg("XDG_STATE_HOME", ".local/state") / "artfs"


PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner can read, created so (with any missing parents).
    The cache holds blocks of private buckets, and the state directory logs and file records:
    on a shared machine (a GPU server, /scratch) other users must not read them. A directory
    that exists with wider modes is left as it is, with a warning: widening or narrowing what
    someone set up on purpose is theirs to decide."""
    missing = []
    here = path
    while not here.exists():
        missing.append(here)
        here = here.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process got there first
            d.mkdir(mode=PRIVATE_DIR)
    mode = path.stat().st_mode & 0o777
    if not missing and mode & 0o077 and path not in _warned:
        _warned.add(path)
        log.warning(
            "%s is readable by other users (mode %o); artfs leaves it so: `chmod 700 %s` makes it private",
            path,
            mode,
            path,
        )
    return path


_warned: set[Path] = set()


@dataclass(frozen=True)
class StoreConfig:
    """Written once when a store is created; every open checks it before touching anything."""

    format: int = FORMAT
    hash: str = ALGORITHM
    block_size: int = DEFAULT_BLOCK_SIZE

    def check(self, url: str) -> StoreConfig:
        if self.format not in READS:
            readable = " and ".join(map(str, READS))
            raise StoreFormatError(
                f"{url} has store format {self.format}; this artfs reads formats {readable}"
            )
        if self.hash != ALGORITHM:
            raise StoreFormatError(f"{url} hashes with {self.hash!r}; this artfs uses {ALGORITHM!r}")
        if not (64 * 1024 <= self.block_size <= 1 << 30):
            raise StoreFormatError(f"{url}: unusable block size {self.block_size}")
        return self

    @classmethod
    def load(cls, backend: Backend, create: bool) -> StoreConfig:
        """Read the store's config; with `create`, make a new store if there is none.

        Two processes creating the same store at once both end up reading the winner's config.
        """
        try:
            doc, _ = backend.get_json(keys.CONFIG)
        except ObjectNotFoundError:
            if not create:
                raise StoreNotFoundError(
                    f"no artfs store at {backend.url} (the first push or stage creates one)"
                ) from None
            if backend.may_create_store():
                with contextlib.suppress(PreconditionFailedError):  # a concurrent creator won
                    backend.put_json(keys.CONFIG, asdict(cls()), if_absent=True)
            try:  # refused: unless a concurrent creator has just made it a store
                doc, _ = backend.get_json(keys.CONFIG)
            except ObjectNotFoundError:
                raise InvalidInputError(
                    f"{backend.url} holds other files and no artfs store: refusing to create one "
                    "there (a typo in --store? give a new or empty directory)"
                ) from None
        except json.JSONDecodeError:
            raise StoreFormatError(f"{backend.url}: config is not valid JSON") from None
        try:
            config = cls(int(doc["format"]), str(doc["hash"]), int(doc["block_size"]))
        except (KeyError, TypeError, ValueError):
            raise StoreFormatError(f"{backend.url}: config is malformed: {doc!r}") from None
        return config.check(backend.url)

    @staticmethod
    def upgrade(backend: Backend) -> None:
        """Mark a format-1 store as format 2 before the first format-2 version goes in, so an
        older artfs refuses the store with a clear message instead of failing on a version it
        cannot read (compare-and-swap: a concurrent upgrade is as good as ours)."""
        doc, etag = backend.get_json(keys.CONFIG)
        if doc.get("format") == 1:
            with contextlib.suppress(PreconditionFailedError):
                backend.put_json(keys.CONFIG, {**doc, "format": FORMAT}, if_match=etag)
                log.info(
                    "%s: store format 1 → %d (it now holds versions older artfs cannot read)",
                    backend.url,
                    FORMAT,
                )
