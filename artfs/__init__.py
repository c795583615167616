"""artfs: versioned artifacts you can use as directories.

import artfs
store = artfs.Store()                        # the embedded store, or artfs.Store("s3://…")
art = artfs.Artifact("bike-dataset", type="dataset", metadata={"rows": 10})
art.add_dir("data/")
v = store.log_artifact(art, aliases=["best"])   # Version bike-dataset:v0
store.artifact("bike-dataset:latest").download("out/")
"""

from ._version import __version__
from .api import Artifact, ArtifactFile, FileData, Store, Version
from .errors import (
    ArtfsError,
    ArtifactExistsError,
    ArtifactNotFoundError,
    ConflictError,
    ContentChangedError,
    CorruptDataError,
    InvalidInputError,
    InvalidNameError,
    InvalidPathError,
    NotFoundError,
    StoreError,
    StoreFormatError,
    StoreNotFoundError,
    TypeMismatchError,
    VerificationError,
    VersionInUseError,
    VersionNotFoundError,
)
from .manifest import Difference, Entry, Manifest

__all__ = [
    "ArtfsError",
    "Artifact",
    "ArtifactExistsError",
    "ArtifactFile",
    "ArtifactNotFoundError",
    "ConflictError",
    "ContentChangedError",
    "CorruptDataError",
    "Difference",
    "Entry",
    "FileData",
    "InvalidInputError",
    "InvalidNameError",
    "InvalidPathError",
    "Manifest",
    "NotFoundError",
    "Store",
    "StoreError",
    "StoreFormatError",
    "StoreNotFoundError",
    "TypeMismatchError",
    "VerificationError",
    "Version",
    "VersionInUseError",
    "VersionNotFoundError",
    "__version__",
]
