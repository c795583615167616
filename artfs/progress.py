"""How long operations report progress: a factory the caller passes in (the CLI passes tqdm).

A bar counts bytes. Work found as it goes (a push walks and hashes in one pass) starts with a
total of 0 and `extend`s it as it finds more, so a bar moves and its total is honest at every
moment, without a first pass over the disk just to count.
"""

from __future__ import annotations

from typing import Any, Protocol


class Bar(Protocol):
    total: int | float | None

    def update(self, n: int) -> Any: ...
    def __enter__(self) -> Bar: ...
    def __exit__(self, *exc: object) -> Any: ...


class ProgressFactory(Protocol):
    def __call__(self, *, total: int, desc: str) -> Bar: ...


def extend(bar: Bar, n: int) -> None:
    """Add `n` bytes to what `bar` expects to count."""
    if n:
        bar.total = (bar.total or 0) + n
        refresh = getattr(bar, "refresh", None)
        if refresh is not None:
            refresh()


class _Silent:
    total: int | float | None = 0

    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def silent(*, total: int, desc: str) -> Bar:
    """The library default: report nothing."""
    return _Silent()
