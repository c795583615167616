"""The store's key layout, in one place. Identical on every backend.

config                              format record, read first and checked always
blobs/ab/abcdef…                    file contents, write-once, named by content hash
packs/ab/abcdef…                    small files' contents end to end, write-once, named by hash
trees/ab/abcdef…                    tree, index and block-list objects of format-2 versions, write-once,
                                    named by the hash of their bytes
manifests/ab/abcdef…                format-1 manifests, write-once, named by the hash of their bytes
artifacts/<name>/versions/<N>       version record, created with put-if-absent
artifacts/<name>/versions/<N>.deleted   empty: the version was deleted (so listings need no record)
artifacts/<name>/aliases/<alias>    alias record, moved with compare-and-swap
"""

from __future__ import annotations

CONFIG = "config"
ARTIFACTS = "artifacts/"


def blob(content_hash: str) -> str:
    return f"blobs/{content_hash[:2]}/{content_hash}"


def pack(object_hash: str) -> str:
    return f"packs/{object_hash[:2]}/{object_hash}"


def tree(object_hash: str) -> str:
    return f"trees/{object_hash[:2]}/{object_hash}"


def manifest(object_hash: str) -> str:
    return f"manifests/{object_hash[:2]}/{object_hash}"


def versions(name: str) -> str:
    return f"{ARTIFACTS}{name}/versions/"


def version(name: str, number: int) -> str:
    return f"{versions(name)}{number}"


DELETED_MARK = ".deleted"


def deleted(name: str, number: int) -> str:
    return f"{version(name, number)}{DELETED_MARK}"


def aliases(name: str) -> str:
    return f"{ARTIFACTS}{name}/aliases/"


def alias(name: str, alias_name: str) -> str:
    return f"{aliases(name)}{alias_name}"
