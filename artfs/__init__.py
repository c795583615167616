"""artfs: versioned artifacts you can use as directories.

import artfs
store = artfs.Store()                        # the embedded store, or artfs.Store("s3://…")
art = artfs.Artifact("bike-dataset", type="dataset", metadata={"rows": 10})
art.add_dir("data/")
v = store.log_artifact(art, aliases=["best"])   # Version bike-dataset:v0
store.artifact("bike-dataset:latest").download("out/")
"""

__version__ = "0.1.0"

from .api import Artifact, ArtifactFile, Store, Version
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
    "Version",
    "VersionInUseError",
    "VersionNotFoundError",
    "__version__",
]
