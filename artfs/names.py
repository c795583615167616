"""Names, aliases, refs and in-artifact paths: the rules, checked on the way in and on the way out."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from .errors import InvalidNameError, InvalidPathError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
VERSION_RE = re.compile(r"v?([0-9]+)")
LATEST = "latest"
MAX_PATH = 4096
MAX_NAME = 255  # bytes in one path component: Linux's NAME_MAX, what every mount advertises


def validate_name(name: str, what: str = "artifact name") -> str:
    """Return `name` if it is a valid artifact, alias or type name, else raise InvalidNameError."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid {what} {name!r}: use 1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    return name


def validate_alias(alias: str) -> str:
    """An alias is a name that cannot be mistaken for a version number (`v3`, `3`)."""
    validate_name(alias, "alias")
    if VERSION_RE.fullmatch(alias):
        raise InvalidNameError(f"invalid alias {alias!r}: it would read as a version number")
    return alias


@dataclass(frozen=True)
class Ref:
    """What a user writes to pick a version: `name:v3`, `name:3`, `name:alias` or `name` (= latest)."""

    name: str
    number: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str, default_alias: str = LATEST) -> Ref:
        name, sep, ref = text.partition(":")
        validate_name(name)
        if not sep:
            return cls(name, alias=default_alias)
        if m := VERSION_RE.fullmatch(ref):
            return cls(name, number=int(m.group(1)))
        return cls(name, alias=validate_alias(ref))

    def __str__(self) -> str:
        return f"{self.name}:v{self.number}" if self.number is not None else f"{self.name}:{self.alias}"


def validate_path(path: str) -> str:
    """Return `path` if it is a safe path inside an artifact, else raise InvalidPathError.

    Safe: relative, `/`-separated, no empty, `.` or `..` components, no NUL, at most MAX_PATH
    bytes with components of at most MAX_NAME. Hostile manifests are rejected with this on read
    as well as on write, so no path can escape the tree or be one no filesystem can hold.
    """
    if not isinstance(path, str) or not path:
        raise InvalidPathError(f"invalid path {path!r}: empty")
    if "\0" in path:
        raise InvalidPathError(f"invalid path {path!r}: contains NUL")
    try:  # ASCII, the common case, is measured without encoding (manifests hold many paths)
        raw = path if path.isascii() else path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise InvalidPathError(f"invalid path {path!r}: not a filesystem name") from None
    if len(raw) > MAX_PATH:
        raise InvalidPathError(f"invalid path {path[:64]!r}…: longer than {MAX_PATH} bytes")
    if len(raw) > MAX_NAME and any(len(part) > MAX_NAME for part in _parts(raw)):
        raise InvalidPathError(f"invalid path {path[:64]!r}…: a name longer than {MAX_NAME} bytes")
    if path.startswith("/"):
        raise InvalidPathError(f"invalid path {path!r}: absolute")
    wrapped = f"/{path}/"
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped:
        raise InvalidPathError(f"invalid path {path!r}: empty, '.' or '..' component")
    return path


def _parts(raw: str | bytes) -> list[str] | list[bytes]:
    return raw.split("/") if isinstance(raw, str) else raw.split(b"/")


def validate_link_target(path: str, target: str) -> str:
    """A symlink stored in an artifact must be relative and resolve inside the tree."""
    if not target or "\0" in target or target.startswith("/"):
        raise InvalidPathError(f"symlink {path!r} -> {target!r}: target must be relative")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../"):
        raise InvalidPathError(f"symlink {path!r} -> {target!r}: target leaves the artifact")
    return target


def join_path(prefix: str | None, rel: str) -> str:
    """`prefix/rel` normalised for an artifact (prefix may be None, '' or end in '/')."""
    prefix = (prefix or "").strip("/")
    return validate_path(f"{prefix}/{rel}" if prefix else rel)
