"""How long operations report progress: a factory the caller passes in (the CLI passes tqdm)."""

from __future__ import annotations

from typing import Any, Protocol


class Bar(Protocol):
    def update(self, n: int) -> Any: ...
    def __enter__(self) -> Bar: ...
    def __exit__(self, *exc: object) -> Any: ...


class ProgressFactory(Protocol):
    def __call__(self, *, total: int, desc: str) -> Bar: ...


class _Silent:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def silent(*, total: int, desc: str) -> Bar:
    """The library default: report nothing."""
    return _Silent()
