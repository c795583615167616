"""The version of artfs (its own module, so nothing imports the package face to learn it)."""

__version__ = "0.1.0"
