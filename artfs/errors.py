"""Domain errors: one tree, each class carrying the errno a mount answers and the CLI's exit code.

    ArtfsError                      exit 3, EIO
    ├── InvalidInputError           exit 2, EINVAL   bad names, refs, paths, options
    │   ├── InvalidNameError
    │   ├── InvalidPathError        also raised for hostile manifests on read
    │   └── UnsupportedSchemeError
    ├── NotFoundError               exit 4, ENOENT
    │   ├── ObjectNotFoundError     a key the backend does not have
    │   ├── ArtifactNotFoundError
    │   ├── VersionNotFoundError
    │   ├── StoreNotFoundError      no artfs store at that URL yet
    │   ├── SourceNotFoundError     a local PATH given to push does not exist
    │   └── ReferenceGoneError      EIO: a reference's origin object is gone (a listed file fails)
    ├── ConflictError               exit 5, EEXIST
    │   ├── PreconditionFailedError put-if-absent / compare-and-swap lost
    │   ├── ArtifactExistsError     --on-conflict error
    │   ├── TypeMismatchError
    │   ├── VersionInUseError       aliases still point at a version being deleted
    │   └── ContentChangedError     a source file changed while it was being pushed
    ├── CorruptDataError            exit 6, EIO      bytes whose hash does not match their name
    │   └── StaleReferenceError     ESTALE: a reference's origin holds other bytes than it pinned
    ├── VerificationError           exit 1           a directory differs from a version (also a
    │                                                ValueError, as W&B's verify raises)
    ├── FsError                     exit 3, its own  a staging tree refused an operation (ENOTEMPTY, …)
    └── StoreError                  exit 7, EIO
        ├── StoreFormatError        a store written by an incompatible artfs
        └── StoreUnavailableError   unreachable, 5xx, throttled, timed out: retried, then raised

The CLI turns these into one line on stderr and the exit code; the FUSE layer into the errno.
Everything else raises domain errors, never bare OSError or ValueError across a module border.
"""

from __future__ import annotations

import errno as _errno
import os as _os
from collections.abc import Sequence


class ArtfsError(Exception):
    errno = _errno.EIO
    exit_code = 3


class InvalidInputError(ArtfsError):
    errno = _errno.EINVAL
    exit_code = 2


class InvalidNameError(InvalidInputError):
    pass


class InvalidPathError(InvalidInputError):
    pass


class UnsupportedSchemeError(InvalidInputError):
    pass


class NotFoundError(ArtfsError):
    errno = _errno.ENOENT
    exit_code = 4


class ObjectNotFoundError(NotFoundError):
    def __init__(self, key: str) -> None:
        super().__init__(f"no object {key!r} in the store")
        self.key = key


class ArtifactNotFoundError(NotFoundError):
    pass


class VersionNotFoundError(NotFoundError):
    pass


class StoreNotFoundError(NotFoundError):
    pass


class SourceNotFoundError(NotFoundError):
    pass


class ReferenceGoneError(NotFoundError):
    errno = _errno.EIO


class ConflictError(ArtfsError):
    errno = _errno.EEXIST
    exit_code = 5


class PreconditionFailedError(ConflictError):
    def __init__(self, key: str) -> None:
        super().__init__(f"{key!r} was changed concurrently")
        self.key = key


class ArtifactExistsError(ConflictError):
    pass


class TypeMismatchError(ConflictError):
    pass


class VersionInUseError(ConflictError):
    pass


class ContentChangedError(ConflictError):
    pass


class CorruptDataError(ArtfsError):
    exit_code = 6


class StaleReferenceError(CorruptDataError):
    errno = _errno.ESTALE


class VerificationError(ArtfsError, ValueError):
    def __init__(self, message: str, differences: Sequence[object]) -> None:
        super().__init__(message)
        self.differences = list(differences)

    exit_code = 1


class FsError(ArtfsError):
    """A file system operation refused with the errno a local file system would answer."""

    def __init__(self, errno: int, message: str = "") -> None:
        super().__init__(message or _os.strerror(errno))
        self.errno = errno


class StoreError(ArtfsError):
    exit_code = 7


class StoreFormatError(StoreError):
    pass


class StoreUnavailableError(StoreError):
    """A failure that may go away: the retry helper retries these within a bound."""
