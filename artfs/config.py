"""Where things live by default, and the store's own format record (`<root>/config`)."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from . import keys
from .digest import ALGORITHM, DEFAULT_BLOCK_SIZE
from .errors import ObjectNotFoundError, PreconditionFailedError, StoreFormatError, StoreNotFoundError
from .storage import Backend

FORMAT = 1


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
    """Where detached daemons write their logs: `$XDG_STATE_HOME/artfs`."""
    return _xdg("XDG_STATE_HOME", ".local/state") / "artfs"


@dataclass(frozen=True)
class StoreConfig:
    """Written once when a store is created; every open checks it before touching anything."""

    format: int = FORMAT
    hash: str = ALGORITHM
    block_size: int = DEFAULT_BLOCK_SIZE

    def check(self, url: str) -> StoreConfig:
        if self.format != FORMAT:
            raise StoreFormatError(f"{url} has store format {self.format}; this artfs reads format {FORMAT}")
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
                    f"no artfs store at {backend.url} (the first push creates one)"
                ) from None
            with contextlib.suppress(PreconditionFailedError):  # a concurrent creator won
                backend.put_json(keys.CONFIG, asdict(cls()), if_absent=True)
            doc, _ = backend.get_json(keys.CONFIG)
        except json.JSONDecodeError:
            raise StoreFormatError(f"{backend.url}: config is not valid JSON") from None
        try:
            config = cls(int(doc["format"]), str(doc["hash"]), int(doc["block_size"]))
        except (KeyError, TypeError, ValueError):
            raise StoreFormatError(f"{backend.url}: config is malformed: {doc!r}") from None
        return config.check(backend.url)
