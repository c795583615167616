"""The `artfs` command. Errors change form here: a domain error becomes one line on stderr and
its exit code (0 ok · 1 differences found or nothing done as asked · 2 usage or invalid input ·
3 other error · 4 not found · 5 conflict · 6 corrupt data · 7 store unusable · 130 interrupted).

Global options (--store, --s3-endpoint, -v) are taken anywhere on the command line: every
command carries a copy, and a value typed after the command wins over one before it.
Every command that reports something takes --json; the shapes are in the README.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource
from rich.console import Console
from rich.filesize import decimal as human_size
from rich.table import Table

from ._version import __version__
from .api import Artifact, Store, Version
from .cache import BlockCache, parse_size
from .config import default_cache_dir
from .daemon import (
    MountOptions,
    check_mountpoint,
    control,
    foreground_argv,
    serve,
    stage_at,
    start_detached,
    unmount,
)
from .errors import ArtfsError, ConflictError, InvalidInputError, NotFoundError, TypeMismatchError
from .logs import redact
from .logs import setup as setup_logging
from .manifest import Difference, Entry
from .names import LATEST, Ref, validate_alias, validate_name
from .refs import MAX_OBJECTS
from .staging.session import Session as StageSession
from .staging.session import SessionInfo as StageInfo
from .staging.tree import Change
from .workers import Cancelled
from .worktree import Changes

log = logging.getLogger(__name__)
# Piped or redirected, tables keep every character (rich would cut them at 80 columns).
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 100_000)

EXIT_CODES = """\b
Exit codes: 0 ok · 1 differences found / nothing done as asked · 2 usage or invalid input ·
3 error · 4 not found · 5 conflict (exists, in use, changed) · 6 corrupt data · 7 store unusable ·
130 interrupted (Ctrl-C)"""
EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by SIGINT
LISTED = 50  # per kind of change, paths shown before "… and N more" (--json lists them all)


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"artfs: error: {redact(message)}", err=True)
    sys.exit(code)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- global options, anywhere on the command line ---------------------------------------------
class Session:
    """What the global options say, and the store they name, opened on first use."""

    def __init__(self) -> None:
        self.store_url: str | None = None
        self.verbose = 0
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.store_url)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _global(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    session = ctx.ensure_object(Session)
    if param.name == "verbose":
        if value:
            session.verbose += value
            setup_logging(session.verbose)
        return
    # A command's copy counts only when typed; the group's also comes from the environment.
    if value is None or (
        ctx.parent is not None and ctx.get_parameter_source(param.name or "") != ParameterSource.COMMANDLINE
    ):
        return
    if param.name == "store":
        session.store_url = value
    elif param.name == "s3_endpoint":  # the environment carries it to daemons started from here
        os.environ["S3_ENDPOINT_URL"] = value


def global_options(top: bool) -> list[click.Parameter]:
    return [
        click.Option(
            ["--store"],
            envvar="ARTFS_STORE" if top else None,
            metavar="URL",
            expose_value=False,
            callback=_global,
            help="Store: file:///path (or a path), s3://bucket/prefix, gs://bucket/prefix. Default: "
            "$ARTFS_STORE, else the embedded store in $XDG_DATA_HOME/artfs/store.",
        ),
        click.Option(
            ["--s3-endpoint"],
            envvar="S3_ENDPOINT_URL" if top else None,
            metavar="URL",
            expose_value=False,
            callback=_global,
            help="S3-compatible server for s3:// stores (MinIO, SeaweedFS, …). Default: "
            "$S3_ENDPOINT_URL, else AWS. Credentials: the AWS chain (AWS_ACCESS_KEY_ID, AWS_PROFILE, …).",
        ),
        click.Option(
            ["-v", "--verbose"],
            count=True,
            expose_value=False,
            callback=_global,
            help="More log output: -v each retry and step, -vv debug, -vvv the SDKs' too.",
        ),
    ]


class ArtfsCommand(click.Command):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(global_options(top=False))


class ArtfsGroup(click.Group):
    """Turns domain errors into one line on stderr and the documented exit code."""

    command_class = ArtfsCommand

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ArtfsError as e:
            log.debug("error", exc_info=True)
            fail(str(e), e.exit_code)
        except OSError as e:
            log.debug("error", exc_info=True)
            where = f"{e.filename}: " if e.filename else ""
            fail(f"{where}{e.strerror or e}", 3)
        except (KeyboardInterrupt, Cancelled):
            # Worker pools have stopped (or were given their grace period) and removed their
            # temp files; a thread still stuck in a network call must not hold the exit up.
            click.echo("artfs: interrupted", err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:
            log.debug("internal error", exc_info=True)
            fail(f"internal error: {type(e).__name__}: {e} (a bug in artfs; -vv shows the traceback)", 3)


class ArtfsSubgroup(ArtfsGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(global_options(top=False))


ArtfsGroup.group_class = ArtfsSubgroup


def progress_bar(*, total: int, desc: str) -> Any:
    """tqdm, shown only on a terminal and only when the transfer lasts more than a moment."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        delay=0.5,
        leave=False,
        disable=None,
    )


def store_of(ctx: click.Context) -> Store:
    return ctx.ensure_object(Session).store


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False))


def when(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


NAMING = ("ID", "NAME", "VERSION", "PATH", "SOURCE")  # what a reader copies: never cut short


def table(*columns: str) -> Table:
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, justify="right" if c in ("SIZE", "FILES", "VERSIONS") else "left", no_wrap=True)
    return t


def show(t: Table) -> None:
    """Print a table; on a narrow terminal the other columns are cut short (…), not the names."""
    for column in t.columns:
        if str(column.header) in NAMING:
            column.min_width = max((len(str(cell)) for cell in column.cells), default=0)
    out.print(t)


@click.group(cls=ArtfsGroup, epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="artfs")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Versioned artifacts (datasets, models, results) you can use as directories.

    \b
    Quick tour:
      artfs push bike-dataset ./data -t dataset -m rows=1000 -a best
      artfs ls bike-dataset
      artfs download bike-dataset:latest ./work
      artfs verify bike-dataset:v0 ./work
      artfs mount ~/artifacts && ls ~/artifacts/bike-dataset:latest

    Global options (--store, --s3-endpoint, -v) go anywhere: `artfs ls --store s3://b/p`.
    """
    session = ctx.ensure_object(Session)
    if not session.verbose:
        setup_logging(0)
    ctx.call_on_close(session.close)


main.params.extend(global_options(top=True))

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Machine-readable output (see the README)."
)
ref_argument = click.argument("ref", metavar="NAME:REF")


def parse_metadata(items: Sequence[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"metadata {item!r}: use KEY=VALUE")
        try:
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    return meta


metadata_option = click.option(
    "-m",
    "--metadata",
    multiple=True,
    metavar="KEY=VALUE",
    help="Metadata; VALUE is JSON when it parses (1, true, [1,2]), else text. Repeatable.",
)

description_option = click.option("-d", "--description", default="", help="Free text shown with the version.")
alias_option = click.option(
    "-a",
    "--alias",
    "aliases",
    multiple=True,
    metavar="ALIAS",
    help="Alias to point at the new version (latest moves by itself). Repeatable.",
)


@main.command()
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-t",
    "--type",
    "type_",
    metavar="TYPE",
    help="dataset, model, result, … (default: the artifact's type, or dataset).",
)
@description_option
@metadata_option
@alias_option
@click.option(
    "--on-conflict",
    type=click.Choice(["new", "skip", "error", "replace"]),
    default="new",
    show_default=True,
    help="When NAME exists: new = next version; skip = push nothing (exit 1); error = fail; "
    "replace = new version, older ones deleted.",
)
@click.option(
    "--delete-aliases",
    is_flag=True,
    help="With --on-conflict replace: also delete versions that aliases name (and the aliases).",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="PATTERN",
    help="Leave out what matches, gitignore-style: '*.tmp', '.git/', '/build' (from the top only). "
    "Repeatable; added to the lines of a .artfsignore at the top of each directory pushed.",
)
@click.option(
    "-L",
    "--dereference",
    is_flag=True,
    help="Store what symlinks point to instead of the links (as cp -L). Without it, a link that "
    "leaves the directory is an error.",
)
@click.option(
    "-x",
    "--one-file-system",
    is_flag=True,
    help="Do not enter other filesystems below a directory (artfs mounts are never entered).",
)
@json_option
@click.pass_context
def push(
    ctx: click.Context,
    name: str,
    paths: tuple[Path, ...],
    type_: str | None,
    description: str,
    metadata: tuple[str, ...],
    aliases: tuple[str, ...],
    on_conflict: str,
    delete_aliases: bool,
    exclude: tuple[str, ...],
    dereference: bool,
    one_file_system: bool,
    as_json: bool,
) -> None:
    """Commit files and directories as the next version of NAME.

    A directory's contents go to the root of the version; a file goes in under its name (a
    symlink given by name is followed). Inside directories, symlinks are stored as links when
    they stay inside, files keep whether they are executable (stored as mode 755 or 644, as git
    does) and their mtimes, and empty directories are kept.

    Content identical to the newest version creates nothing: it prints "unchanged: NAME:vK",
    and -a, -d and -m are applied to that version (metadata keys added or replaced). Otherwise
    it prints NAME:vN.

    \b
    Examples:
      artfs push bike-dataset ./data README.md -t dataset -m rows=1000 -a best
      artfs push model ./run --exclude '*.ckpt' --exclude .git/
    """
    art = Artifact(name, type=type_, description=description, metadata=parse_metadata(metadata))
    for path in paths:
        if path.is_dir():  # a link to a directory given by name is that directory
            art.add_dir(path, exclude=exclude, dereference=dereference, one_file_system=one_file_system)
        else:
            art.add_file(path)
    v = store_of(ctx).log_artifact(
        art, aliases, on_conflict=on_conflict, delete_aliases=delete_aliases, progress=progress_bar
    )
    report_logged(v, name, as_json)


def report_logged(v: Version, name: str, as_json: bool) -> None:
    """What a push or track made: NAME:vN, or what it did instead."""
    result = v.commit
    assert result is not None
    if as_json:
        emit_json(
            {
                "version": v.qualified_name,
                "created": result.created,
                "skipped": result.skipped,
                "aliases_moved": list(result.aliases_moved),
                "amended": list(result.amended),
                "deleted": list(result.deleted),
                "digest": v.digest,
            }
        )
    elif result.skipped:
        click.echo(f"skipped: {name} exists (newest: {v.qualified_name}); nothing was pushed")
    else:
        click.echo(v.qualified_name if result.created else f"unchanged: {v.qualified_name}")
        notes = [f"alias {a} now names {v.qualified_name}" for a in result.aliases_moved]
        notes += [f"{field} of {v.qualified_name} updated" for field in result.amended]
        notes += [f"deleted {label}" for label in result.deleted]
        for note in notes:
            click.echo(f"artfs: {note}", err=True)
    if result.skipped:
        sys.exit(1)


@main.command()
@click.argument("name")
@click.argument("uris", metavar="URI...", nargs=-1, required=True)
@click.option(
    "--name",
    "prefix",
    metavar="PATH",
    help="Where in the version: a single object's path (ending in / : a folder it goes in), or "
    "the folder a prefix's objects go under (default: the object's basename; a prefix's objects "
    "at the root).",
)
@click.option(
    "--no-checksum",
    is_flag=True,
    help="Pin by size and modification time only (no ETag, generation or content hash): "
    "faster for local files, which are otherwise hashed; such entries are flagged weak.",
)
@click.option(
    "--max-objects",
    type=click.IntRange(min=1),
    metavar="N",
    help=f"Most objects a prefix or folder may hold (default {MAX_OBJECTS:,}); more is an error, "
    "never a partial version.",
)
@click.option("-t", "--type", "type_", metavar="TYPE", help="dataset, model, … (default: dataset).")
@description_option
@metadata_option
@alias_option
@json_option
@click.pass_context
def track(
    ctx: click.Context,
    name: str,
    uris: tuple[str, ...],
    prefix: str | None,
    no_checksum: bool,
    max_objects: int | None,
    type_: str | None,
    description: str,
    metadata: tuple[str, ...],
    aliases: tuple[str, ...],
    as_json: bool,
) -> None:
    """Commit references as the next version of NAME: files that stay where they are.

    URIs are s3://bucket/key, gs://bucket/key, http(s)://host/path, file:///path or a plain
    path. Nothing is uploaded: each file is pinned (S3 ETag and VersionId, GCS generation, HTTP
    ETag or Last-Modified, a local file's size, mtime and content hash) and the mount reads it
    from where it is, by range, never serving other bytes than the pinned ones. A prefix or
    folder expands to the objects under it, by listing. Tracking the same unchanged objects
    again prints "unchanged: NAME:vK". Names follow W&B's add_reference.

    \b
    Examples:
      artfs track raw-images s3://my-bucket/images --name images -a source
      artfs track weights https://example.com/model.safetensors
      artfs track scans /mnt/nfs/scans --no-checksum
    """
    art = Artifact(name, type=type_, description=description, metadata=parse_metadata(metadata))
    for uri in uris:
        art.add_reference(uri, name=prefix, checksum=not no_checksum, max_objects=max_objects)
    v = store_of(ctx).log_artifact(art, aliases, progress=progress_bar)
    report_logged(v, name, as_json)


@main.command("ls")
@click.argument("name", required=False)
@json_option
@click.pass_context
def ls(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """List artifacts, or the versions of NAME with their aliases.

    \b
    Examples:
      artfs ls
      artfs ls bike-dataset --json
    """
    store = store_of(ctx)
    if name:
        versions = store.versions(name)
        if as_json:
            return emit_json([v.to_dict() for v in versions])
        t = table("VERSION", "ALIASES", "SIZE", "FILES", "CREATED", "DIGEST")
        for v in reversed(versions):
            t.add_row(
                v.version,
                ",".join(v.aliases),
                human_size(v.size),
                str(v.file_count),
                when(v.created_at),
                v.digest[:12],
            )
        show(t)
        return None
    summaries = store.catalog.summaries()  # one listing, and a record per artifact
    if as_json:
        return emit_json(
            [
                {
                    "name": newest.name,
                    "type": newest.type,
                    "versions": count,
                    "latest": f"v{newest.number}",
                    "size": newest.size,
                    "updated": newest.created_at,
                }
                for newest, count in summaries
            ]
        )
    t = table("NAME", "TYPE", "VERSIONS", "LATEST", "SIZE", "UPDATED")
    for newest, count in summaries:
        size, updated = human_size(newest.size), when(newest.created_at)
        t.add_row(newest.name, newest.type, str(count), f"v{newest.number}", size, updated)
    show(t)
    return None


def show_version(v: Version, as_json: bool) -> None:
    if as_json:
        return emit_json(v.to_dict())
    t = table("", "")
    t.show_header = False
    for key, value in [
        ("version", v.qualified_name),
        ("type", v.type),
        ("aliases", ", ".join(v.aliases)),
        ("digest", v.digest),
        ("size", f"{human_size(v.size)} in {plural(v.file_count, 'file')}"),
        ("created", f"{when(v.created_at)} by {v.producer.get('user', '?')}@{v.producer.get('host', '?')}"),
        ("description", v.description),
        *([("staged on", f"v{base}")] if (base := v.to_dict().get("base")) is not None else []),
    ] + [(f"metadata.{k}", json.dumps(val)) for k, val in sorted(v.metadata.items())]:
        t.add_row(key, value)
    show(t)
    return None


@main.command()
@ref_argument
@json_option
@click.pass_context
def info(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show a version: digest (Neptune's fetch_hash), type, aliases, size, description,
    metadata, producer. `artfs edit` changes description and metadata.

    \b
    Example:
      artfs info bike-dataset:latest
    """
    show_version(store_of(ctx).artifact(ref), as_json)


@main.command()
@ref_argument
@click.option("-d", "--description", default=None, help="New description.")
@metadata_option
@click.option("--unset", multiple=True, metavar="KEY", help="Remove a metadata key. Repeatable.")
@json_option
@click.pass_context
def edit(
    ctx: click.Context,
    ref: str,
    description: str | None,
    metadata: tuple[str, ...],
    unset: tuple[str, ...],
    as_json: bool,
) -> None:
    """Change a version's description and metadata (its content never changes).

    Like the API's Version.save(): a concurrent change to the same version is a conflict
    (exit 5) rather than silently overwritten; run it again.

    \b
    Example:
      artfs edit bike-dataset:v3 -d "cleaned" -m rows=990 -m source=survey --unset draft
    """
    v = store_of(ctx).artifact(ref)
    if description is None and not metadata and not unset:
        raise click.UsageError("say what to change: -d TEXT, -m KEY=VALUE or --unset KEY")
    missing = [k for k in unset if k not in v.metadata]
    if missing:
        raise NotFoundError(f"{v.qualified_name} has no metadata {', '.join(missing)}")
    if description is not None:
        v.description = description
    v.metadata.update(parse_metadata(metadata))
    for key in unset:
        del v.metadata[key]
    v.save()
    show_version(v, as_json)


@main.command()
@ref_argument
@json_option
@click.pass_context
def files(ctx: click.Context, ref: str, as_json: bool) -> None:
    """List the files of a version: mode, size, content hash (xxh3-128, as xxh128sum), last
    modified, path, and for a reference the URI its bytes stay at ("weak": pinned by size and
    modification time only). --json adds each reference's pin.

    \b
    Example:
      artfs files bike-dataset:v3 --json
    """
    v = store_of(ctx).artifact(ref)
    if as_json:
        return emit_json([{**e.to_dict(), **_file_times(e)} for e in v.manifest])
    t = table("MODE", "SIZE", "HASH", "LAST MODIFIED", "PATH", "SOURCE")
    for e in v.manifest:
        if e.kind == "link":
            t.add_row("link", "", "", "", f"{e.path} -> {e.target}", "")
        elif e.kind == "dir":
            t.add_row("dir", "", "", "", f"{e.path}/", "")
        else:
            source = f"{redact(e.source)}{' (weak)' if e.weak else ''}"
            modified = _file_times(e)["last_modified"][:19].replace("T", " ")
            t.add_row(f"{e.mode:o}", human_size(e.size), e.hash[:12], modified, e.path, source)
    show(t)
    return None


def _file_times(e: Entry) -> dict[str, Any]:
    if e.kind != "file":
        return {}
    extra: dict[str, Any] = {"last_modified": datetime.fromtimestamp(e.mtime / 1e9, UTC).isoformat()}
    if e.source:
        extra["weak"] = e.weak
    return extra


@main.command()
@ref_argument
@click.argument("path")
@click.pass_context
def cat(ctx: click.Context, ref: str, path: str) -> None:
    """Write one file of a version to standard output, verified, without mounting or
    downloading the rest (symlinks inside the version are followed).

    \b
    Example:
      artfs cat bike-dataset:latest rides.csv | head
    """
    with store_of(ctx).artifact(ref).open(path) as f:
        shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)
    sys.stdout.buffer.flush()


def differences_json(diffs: list[Difference]) -> list[dict[str, str]]:
    return [{"path": d.path, "change": d.change, **({"detail": d.detail} if d.detail else {})} for d in diffs]


@main.command()
@click.argument("a", metavar="NAME:A")
@click.argument("b", metavar="NAME:B")
@json_option
@click.pass_context
def diff(ctx: click.Context, a: str, b: str, as_json: bool) -> None:
    """Show what changed from one version to another: added, removed, modified, mode, type,
    target (exit 1 when they differ).

    \b
    Example:
      artfs diff bike-dataset:v1 bike-dataset:latest
    """
    changes = store_of(ctx).diff(a, b)
    if as_json:
        emit_json(differences_json(changes))
    for d in [] if as_json else changes:
        click.echo(str(d))
    sys.exit(1 if changes else 0)


def report(v: Version, changes: Changes, as_json: bool) -> None:
    """What a download or checkout did (or would do)."""
    if as_json:
        return emit_json({"version": v.qualified_name, **changes.to_dict()})
    verb = {"added": "added", "replaced": "replaced", "removed": "removed"}
    if changes.dry_run:
        verb = {"added": "would add", "replaced": "would replace", "removed": "would remove"}
    for kind in ("removed", "replaced", "added"):
        paths: list[str] = getattr(changes, kind)
        shown = paths if changes.dry_run else paths[:LISTED]
        for p in shown:
            click.echo(f"{verb[kind]:13} {p}")
        if len(paths) > len(shown):
            click.echo(f"{'':13} … and {len(paths) - len(shown)} more (--json lists them all)")
    counts = ", ".join(
        f"{len(getattr(changes, k))} {verb[k]}"
        for k in ("added", "replaced", "removed")
        if getattr(changes, k)
    )
    summary = f"{counts or 'nothing to change'}, {changes.unchanged} unchanged"
    click.echo(f"{v.qualified_name} → {changes.root}: {summary}{' (dry run)' if changes.dry_run else ''}")
    return None


@main.command()
@ref_argument
@click.argument("dest", required=False, type=click.Path(path_type=Path))
@click.option(
    "--path-prefix", metavar="PREFIX", help="Only the paths that start with PREFIX (as W&B's path_prefix)."
)
@json_option
@click.pass_context
def download(ctx: click.Context, ref: str, dest: Path | None, path_prefix: str | None, as_json: bool) -> None:
    """Add a version's files to DEST (default ./artifacts/NAME:vN).

    Files that differ from the version are replaced; files the version does not have are left
    alone (checkout removes them). Everything is fetched before anything in DEST changes, so an
    error or Ctrl-C leaves DEST as it was. Refuses where DEST has a directory in the way of a
    file of the version, or a file in the way of a directory.

    \b
    Examples:
      artfs download bike-dataset:best ./data
      artfs download bike-dataset:best ./data --path-prefix images/
    """
    v = store_of(ctx).artifact(ref)
    report(v, v.materialize(dest, path_prefix=path_prefix, progress=progress_bar), as_json)


@main.command()
@ref_argument
@click.argument("dest", type=click.Path(path_type=Path))
@click.option(
    "--dry-run", "-n", is_flag=True, help="List what would be added, replaced and removed; change nothing."
)
@click.option(
    "--force",
    is_flag=True,
    help="Remove and replace even in a directory artfs did not fill from this artifact before.",
)
@json_option
@click.pass_context
def checkout(ctx: click.Context, ref: str, dest: Path, dry_run: bool, force: bool, as_json: bool) -> None:
    """Make DEST exactly the version: what the version does not have is DELETED.

    A file counts as the version's only if its content is (artfs hashes it, unless it wrote or
    hashed that very file itself and nothing has touched it since). Everything is fetched before
    anything in DEST changes. In a directory artfs has not filled from this artifact (a
    checkout or download of any of its versions), checkout refuses to remove or replace
    anything unless --force; --dry-run shows what it would do.

    \b
    Examples:
      artfs checkout bike-dataset:v2 ./data --dry-run
      artfs checkout bike-dataset:v2 ./data
    """
    v = store_of(ctx).artifact(ref)
    report(v, v.materialize(dest, exact=True, force=force, dry_run=dry_run, progress=progress_bar), as_json)


@main.command()
@ref_argument
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Leave out what matches (as push does).")
@click.option(
    "--references",
    is_flag=True,
    help="Check only that the origins of the version's references still hold what they pinned "
    "(no DIRECTORY, nothing read but listings and HEADs).",
)
@json_option
@click.pass_context
def verify(
    ctx: click.Context,
    ref: str,
    directory: Path | None,
    exclude: tuple[str, ...],
    references: bool,
    as_json: bool,
) -> None:
    """Check DIRECTORY against a version, hashing every file; exit 1 and list the differences
    when it does not match.

    \b
    Differences: missing, extra, modified (content), type (a file where the version has a
    directory, …), target (a symlink's), mode. A version records whether a file is executable
    (755) or not (644), as git does, so mode differs only when that does: 600 and 644 match.
    What a push would leave out (a .artfsignore at the top, --exclude) is left out here too.
    References are checked at their origin as well: drifted (other bytes there now, even where
    a versioned bucket still serves the pinned ones) or vanished.

    \b
    Examples:
      artfs verify bike-dataset:latest ./data
      artfs verify raw-images:v3 --references
    """
    if (directory is None) != references:
        raise click.UsageError("give a DIRECTORY to check, or --references (and no DIRECTORY)")
    v = store_of(ctx).artifact(ref)
    diffs = v.drifted() if directory is None else v.differences(directory, exclude, progress=progress_bar)
    where = directory or "the references' origins"
    if as_json:
        emit_json(
            {
                "version": v.qualified_name,
                "root": str(where),
                "matches": not diffs,
                "differences": differences_json(diffs),
            }
        )
    else:
        for d in diffs:
            click.echo(str(d))
        if diffs:
            differ = "differs" if directory else "differ"
            click.echo(f"{where} {differ} from {v.qualified_name} in {plural(len(diffs), 'path')}", err=True)
        else:
            click.echo(f"{where} {'matches' if directory else 'match'} {v.qualified_name}")
    if diffs:
        sys.exit(1)


@main.command()
@ref_argument
@click.argument("aliases", nargs=-1)
@click.option("--delete", is_flag=True, help="Remove the alias named in NAME:ALIAS.")
@json_option
@click.pass_context
def alias(ctx: click.Context, ref: str, aliases: tuple[str, ...], delete: bool, as_json: bool) -> None:
    """Point ALIAS… at a version, or remove an alias with --delete.

    \b
    Examples:
      artfs alias bike-dataset:v3 best prod
      artfs alias --delete bike-dataset:prod
    """
    store = store_of(ctx)
    if delete:
        parsed = Ref.parse(ref, default_alias="")
        if parsed.alias in (None, "") or aliases:
            raise click.UsageError("--delete takes one NAME:ALIAS and nothing else")
        if parsed.alias == LATEST:
            raise InvalidInputError("'latest' moves by itself and cannot be removed")
        v = store.artifact(ref)
        v.aliases.remove(parsed.alias)
        v.save()
        if as_json:
            return emit_json({"removed": f"{parsed.name}:{parsed.alias}", "version": v.qualified_name})
        click.echo(f"removed {parsed.name}:{parsed.alias} (was {v.qualified_name})")
        return None
    if not aliases:
        raise click.UsageError("name at least one ALIAS")
    v = store.artifact(ref)
    v.aliases.extend(a for a in aliases if a not in v.aliases)
    v.save()
    if as_json:
        return emit_json({"version": v.qualified_name, "aliases": v.aliases})
    click.echo(f"{v.qualified_name}: {', '.join(v.aliases)}")
    return None


@main.command()
@click.argument("ref", metavar="NAME:REF | NAME --all")
@click.option("--delete-aliases", is_flag=True, help="Also remove the aliases that point at it.")
@click.option(
    "--all", "whole", is_flag=True, help="Delete every version of NAME (asks first; --yes does not)."
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask (with --all).")
@json_option
@click.pass_context
def delete(ctx: click.Context, ref: str, delete_aliases: bool, whole: bool, yes: bool, as_json: bool) -> None:
    """Delete a version. Refuses while aliases (other than latest) point at it, unless
    --delete-aliases. The version number is never reused.

    \b
    Examples:
      artfs delete bike-dataset:v1 --delete-aliases
      artfs delete bike-dataset --all
    """
    store = store_of(ctx)
    parsed = Ref.parse(ref, default_alias="")
    if whole:
        if ":" in ref:
            raise click.UsageError("--all takes a NAME, not NAME:REF")
        doomed = store.versions(parsed.name)
        question = f"Delete all {plural(len(doomed), 'version')} of {parsed.name} and its aliases?"
        if not yes:
            if not sys.stdin.isatty():
                raise click.UsageError(f"{question} Say so with --yes (standard input is not a terminal)")
            click.confirm(question, abort=True, err=True)
    elif not parsed.alias and parsed.number is None:
        raise click.UsageError(f"name a version: {ref}:vN or {ref}:ALIAS (or --all for every version)")
    else:
        doomed = [store.artifact(ref)]
    removed: list[str] = []
    for v in doomed:
        held = [a for a in v.aliases if a != LATEST]
        v.delete(delete_aliases=delete_aliases or whole)
        removed += [f"{v.name}:{a}" for a in held]
    deleted = [v.qualified_name for v in doomed]
    if as_json:
        return emit_json({"deleted": deleted, "aliases_removed": removed})
    for label in deleted:
        click.echo(f"deleted {label}")
    for a in removed:
        click.echo(f"removed alias {a}")
    return None


class SizeParam(click.ParamType):
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except InvalidInputError as e:
            self.fail(str(e), param, ctx)


cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_cache_dir,
    envvar="ARTFS_CACHE",
    show_default="$ARTFS_CACHE or $XDG_CACHE_HOME/artfs",
    help="Block cache, shared by every mount and store of this user.",
)
in_place_option = click.option(
    "--in-place/--no-in-place",
    default=True,
    show_default=True,
    help="Read a file:// store's blobs where they lie; --no-in-place copies blocks into the cache "
    "(for a store on a slow network filesystem).",
)


@main.command()
@click.argument("mountpoint", metavar="MNT", type=click.Path(file_okay=False, path_type=Path))
@click.option("--foreground", "-f", is_flag=True, help="Stay in the foreground (systemd, debugging).")
@click.option(
    "--cache-size",
    type=SizeParam(),
    envvar="ARTFS_CACHE_SIZE",
    help="Hard budget for the block cache, e.g. 50G (default: a quarter of the free disk space).",
)
@cache_dir_option
@in_place_option
@click.option("--allow-other", is_flag=True, help="Let other users read the mount (needs user_allow_other).")
@click.pass_context
def mount(
    ctx: click.Context,
    mountpoint: Path,
    foreground: bool,
    cache_size: int | None,
    cache_dir: Path,
    in_place: bool,
    allow_other: bool,
) -> None:
    """Mount the store read-only at MNT: every version and alias is a directory.

    \b
      MNT/NAME:vN/…        the files of version N, fetched lazily as they are read
      MNT/NAME:ALIAS/…     the version ALIAS names now (latest, best, …)
      MNT/.artfs/          JSON about the mount, its cache and each version

    Starts a daemon in the background and returns once the mount is ready (its log goes to
    $XDG_STATE_HOME/artfs/logs/). Stop it with `artfs umount MNT`.

    \b
    Example:
      artfs mount ~/artifacts && ls ~/artifacts && cp -r ~/artifacts/bike-dataset:latest ./data
    """
    store = store_of(ctx)
    store.catalog  # noqa: B018 - opens (or, for the embedded store, creates) it before mounting
    options = MountOptions(
        store.url, str(mountpoint.absolute()), str(cache_dir), cache_size, in_place, allow_other
    )
    if foreground:
        store.close()
        serve(options)
        return
    check_mountpoint(options.mountpoint)
    log_file = start_detached(
        foreground_argv(options, ctx.ensure_object(Session).verbose), options.mountpoint
    )
    click.echo(f"mounted {store.url} on {options.mountpoint} (log: {log_file})")


@main.command()
@click.argument("mountpoint", metavar="MNT", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    help="Seconds to wait for a read-only mount's daemon to exit (a stage's commit is waited for).",
)
@json_option
def umount(mountpoint: Path, timeout: float, as_json: bool) -> None:
    """Unmount MNT and wait until its daemon has exited.

    A staging mount commits first: this blocks until the version is durable in the store and
    prints NAME:vN (or "unchanged: NAME:vK"), with what the version could not carry. If the
    commit fails, the staged work is kept: `artfs commit ID` finishes it later.

    Fails (exit 5) while a process has a file or directory open in the mount.

    \b
    Example:
      artfs umount ~/artifacts
    """
    session_id = unmount(str(mountpoint), timeout)
    if session_id:
        report_commit(StageSession.load(session_id), as_json)


NOTES_SHOWN = 20  # what a commit could not carry, printed; all of them go to a file


def report_commit(stage: StageSession, as_json: bool) -> None:
    """What a stage's last commit made, or why it failed (then exit non-zero)."""
    outcome, sid = stage.info.outcome, stage.info.id
    if "error" in outcome or not outcome:
        reason = outcome.get("error", "the daemon stopped before committing")
        fail(f"{stage.info.name}: the commit failed: {reason}. The staged work is kept: `artfs "
             f"commit {sid}` finishes it, `artfs stage --resume {sid} MNT` mounts it again", 3)  # fmt: skip
    if as_json:
        return emit_json({"session": sid, **outcome})
    version = outcome.get("version")
    if version is None:
        click.echo(f"nothing staged: {stage.info.name} has no version")
    else:
        click.echo(version if outcome.get("created") else f"unchanged: {version}")
    for alias in outcome.get("aliases_moved", []):
        click.echo(f"artfs: alias {alias} now names {version}", err=True)
    notes = outcome.get("notes", [])
    for note in notes[:NOTES_SHOWN]:
        click.echo(f"artfs: {note}", err=True)
    if len(notes) > NOTES_SHOWN:  # fsstress leaves thousands: the rest go to a file
        from .config import state_dir

        path = state_dir() / "logs" / f"commit-{sid}.notes"
        path.write_text("".join(f"{note}\n" for note in notes))
        click.echo(f"artfs: … and {len(notes) - NOTES_SHOWN:,} more: {path}", err=True)
    return None


# -- staging -----------------------------------------------------------------------------------
@main.command()
@click.argument("ref", metavar="NAME[:BASE]", required=False)
@click.argument("mountpoint", metavar="MNT", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--list", "list_", is_flag=True, help="List staging sessions and their state (committed ones for a week)."
)
@click.option("--resume", metavar="ID", help="Mount a stopped session again (after a crash or reboot).")
@click.option("-t", "--type", "type_", metavar="TYPE", help="Type of a new artifact (default: dataset).")
@description_option
@metadata_option
@alias_option
@click.option(
    "--on-conflict",
    type=click.Choice(["new", "error"]),
    default="new",
    show_default=True,
    help="When someone committed NAME after BASE: new = commit the next version all the same "
    "(recording its base, with a warning); error = refuse and keep the staged work.",
)
@click.option("--foreground", "-f", is_flag=True, help="Stay in the foreground (systemd, debugging).")
@click.option("--cache-size", type=SizeParam(), envvar="ARTFS_CACHE_SIZE", help="As for `artfs mount`.")
@cache_dir_option
@click.option(
    "--allow-other", is_flag=True, help="Let other users use the stage, with the kernel checking permissions."
)
@json_option
@click.pass_context
def stage(
    ctx: click.Context,
    ref: str | None,
    mountpoint: Path | None,
    list_: bool,
    resume: str | None,
    type_: str | None,
    description: str,
    metadata: tuple[str, ...],
    aliases: tuple[str, ...],
    on_conflict: str,
    foreground: bool,
    cache_size: int | None,
    cache_dir: Path,
    allow_other: bool,
    as_json: bool,
) -> None:
    """Mount a writable copy of NAME:BASE at MNT; unmounting commits it as the next version.

    BASE is a version or alias (default: latest); a NAME with no versions starts empty and
    becomes v0. Nothing is downloaded up front: unchanged files are read lazily, through the
    same cache as `artfs mount`. Edit with any tool; `artfs status MNT` shows what changed,
    `artfs commit MNT` commits without unmounting, `artfs umount MNT` commits and unmounts
    (printing NAME:vN, or "unchanged: NAME:vK" when nothing changed: no version is made).

    Nothing written is lost: a session outlives its daemon. After a crash, `artfs stage --list`
    shows it, `--resume ID MNT` mounts it again, `artfs commit ID` commits it and `artfs abort
    ID` drops it. A version holds files, directories and relative links: hard links become
    files of their own, owners and set-id bits are not kept, links that leave the tree are left
    out — the commit says which.

    \b
    Examples:
      artfs stage bike-dataset ~/stage && cp new/*.csv ~/stage/ && artfs umount ~/stage
      artfs stage model:best ~/edit -a candidate -m note=pruned
      artfs stage --list
    """
    if list_:
        if ref or mountpoint or resume:
            raise click.UsageError("--list takes no arguments")
        return list_stages(as_json)
    if resume:
        if ref is None or mountpoint is not None:
            raise click.UsageError("usage: artfs stage --resume ID MNT")
        staged, mountpoint = StageSession.load(resume), Path(ref)
        staged.check_resumable()
        store_url = staged.info.store
    else:
        if ref is None or mountpoint is None:
            raise click.UsageError("usage: artfs stage NAME[:BASE] MNT (or --list, or --resume ID MNT)")
        staged = new_stage(
            store_of(ctx), ref, type_, description, parse_metadata(metadata), aliases, on_conflict
        )
        store_url = staged.info.store
    options = MountOptions(store_url, str(mountpoint.absolute()), str(cache_dir), cache_size,
                           allow_other=allow_other, session=staged.info.id)  # fmt: skip
    if foreground:
        ctx.ensure_object(Session).close()
        serve(options)
        return None
    try:
        check_mountpoint(options.mountpoint)
        log_file = start_detached(
            foreground_argv(options, ctx.ensure_object(Session).verbose), options.mountpoint
        )
    except BaseException:
        if not resume:
            staged.remove()  # nothing was staged in it yet
        raise
    base = (
        f"{staged.info.name}:v{staged.info.base}"
        if staged.info.base is not None
        else f"{staged.info.name} (new)"
    )
    if as_json:
        return emit_json({"session": staged.info.id, "base": base, "mountpoint": options.mountpoint})
    click.echo(f"staging {base} on {options.mountpoint} (session {staged.info.id}; log: {log_file})")
    return None


def new_stage(
    store: Store,
    ref: str,
    type_: str | None,
    description: str,
    metadata: dict[str, Any],
    aliases: Sequence[str],
    on_conflict: str,
) -> StageSession:
    parsed = Ref.parse(ref)
    aliases = [validate_alias(a) for a in aliases]  # now, not at the commit after the work
    if type_ is not None:
        validate_name(type_, "type")
    if ":" not in ref:
        store.create()  # a first stage of a new name in a new store, as a first push
    catalog = store.catalog
    # NAME alone: latest, or empty (then it becomes v0); NAME:REF must exist
    base = catalog.latest(parsed.name) if ":" not in ref else catalog.resolve(parsed)
    if type_ is not None and base is not None and base.type != type_:
        raise TypeMismatchError(f"{parsed.name} is a {base.type!r} artifact, not {type_!r}")
    info = StageInfo("", store.url, parsed.name, base.number if base is not None else None, type_,
                     description, metadata, aliases, on_conflict)  # fmt: skip
    return StageSession.create(info)


def list_stages(as_json: bool) -> None:
    sessions = StageSession.all()
    if as_json:
        return emit_json([{**asdict(s.info), "state": s.state()} for s in sessions])
    if not sessions:
        click.echo("no staging sessions")
        return None
    t = table("ID", "STATE", "BASE", "MOUNTED ON", "STARTED")
    for s in sessions:
        i, state = s.info, s.state()
        base = f"{i.name}:v{i.base}" if i.base is not None else f"{i.name} (new)"
        if state == "committed":
            state = f"committed {i.outcome.get('version') or '(nothing)'}"
        t.add_row(i.id, state, base, i.mountpoint if state == "mounted" else "", when(i.created_at))
    show(t)
    return None


def stage_arg(target: str) -> tuple[StageSession, str | None]:
    """A session named by its mount point (mounted: also returned) or its ID."""
    if os.path.isdir(target):
        sid = stage_at(target)
        if sid is None:
            raise NotFoundError(f"{os.path.abspath(target)} is not a staging mount")
        return StageSession.load(sid), os.path.abspath(target)
    return StageSession.load(target), None


@main.command()
@click.argument("target", metavar="MNT|ID")
@json_option
def status(target: str, as_json: bool) -> None:
    """Changes staged in a session, as `git status --short` shows them.

    \b
      A path      added            D path      deleted
      M path      modified         R old -> new  renamed
    Directories end in /. A file written counts as modified even if its bytes came back the
    same (the commit hashes it; an unchanged tree makes no version).

    \b
    Example:
      artfs status ~/stage
    """
    staged, mounted = stage_arg(target)
    if mounted is not None:
        control(mounted, "status")
        changes = staged.read_status()
    else:
        changes = stopped_status(staged)
    if as_json:
        return emit_json([asdict(c) for c in changes])
    for c in changes:
        click.echo(f"{c.code} {c.old} -> {c.path}" if c.code == "R" else f"{c.code} {c.path}")
    return None


def stopped_status(staged: StageSession) -> list[Change]:
    with Store(staged.info.store) as store:
        return staged.overlay(store.catalog, store.blobs, attach=False).status()


@main.command()
@click.argument("target", metavar="MNT|ID")
@json_option
def commit(target: str, as_json: bool) -> None:
    """Commit a staging session as the next version: a mounted one (MNT) goes on staging on top
    of it; a stopped one (ID, after a crash) is done once committed.

    Prints NAME:vN, or "unchanged: NAME:vK" when nothing changed (no version is made). A commit
    interrupted in any phase is finished by running it again, and makes one version.

    \b
    Examples:
      artfs commit ~/stage
      artfs commit bike-dataset-1f2e3d4c
    """
    staged, mounted = stage_arg(target)
    if mounted is not None:
        control(mounted, "commit")
        return report_commit(StageSession.load(staged.info.id), as_json)
    if staged.state() == "mounted":
        raise ConflictError(f"session {staged.info.id} is mounted at {staged.info.mountpoint}: commit that")
    if not staged.info.finished:  # finished: committed already, by a run that was cut short after
        with Store(staged.info.store) as store:
            overlay = staged.overlay(store.catalog, store.blobs)
            try:
                staged.commit(overlay, store.catalog, store.blobs, progress_bar, final=True)
            finally:
                overlay.close()
    return report_commit(staged, as_json)


@main.command()
@click.argument("target", metavar="MNT|ID")
def abort(target: str) -> None:
    """Drop a staging session and everything staged in it (a mounted one is unmounted first).

    \b
    Example:
      artfs abort ~/stage
    """
    staged, mounted = stage_arg(target)
    if mounted is not None:
        control(mounted, "abort")
        unmount(mounted)
    elif staged.state() == "mounted":
        raise ConflictError(f"session {staged.info.id} is mounted at {staged.info.mountpoint}: abort that")
    staged.remove()
    click.echo(f"dropped {staged.info.id}")


@main.group()
def cache() -> None:
    """Inspect and manage the local block cache.

    Blocks fetched by mounts are kept in one cache per user, shared by every version (content is
    stored once), with a hard size budget. Pinned versions are never evicted.

    \b
    Examples:
      artfs cache info
      artfs cache pin bike-dataset:best      # everything local, for offline use
      artfs cache prune --to 10G
    """


def open_cache(ctx: click.Context, cache_dir: Path) -> BlockCache:
    return BlockCache(cache_dir, store_of(ctx).blobs.block_size)


@cache.command("info")
@cache_dir_option
@json_option
@click.pass_context
def cache_info(ctx: click.Context, cache_dir: Path, as_json: bool) -> None:
    """Show where the cache is, how much it holds and what is pinned.

    \b
    Example:
      artfs cache info
    """
    c = open_cache(ctx, cache_dir)
    blobs = c.scan()
    pins = c.pins()
    doc: dict[str, Any] = {
        "dir": str(c.root),
        "blobs": len(blobs),
        "bytes": sum(b.bytes for b in blobs),
        "pinned": [{"store": p.store, "version": p.version, "blobs": len(p.blobs)} for p in pins],
    }
    if as_json:
        emit_json(doc)
        return
    click.echo(f"cache:  {doc['dir']}")
    click.echo(f"holds:  {human_size(doc['bytes'])} in {plural(doc['blobs'], 'blob')}")
    for p in pins:
        click.echo(f"pinned: {p.version} ({plural(len(p.blobs), 'blob')}) from {p.store}")


@cache.command("prune")
@cache_dir_option
@click.option("--to", "target", type=SizeParam(), default="0", help="Keep at most this much (default: 0).")
@click.pass_context
def cache_prune(ctx: click.Context, cache_dir: Path, target: int) -> None:
    """Evict cached blobs, least recently used first, down to --to.

    Pinned versions and files open in a mount are kept.

    \b
    Example:
      artfs cache prune --to 10G
    """
    count, freed = open_cache(ctx, cache_dir).prune(target)
    click.echo(f"evicted {plural(count, 'blob')}, {human_size(freed)}")


@cache.command("pin")
@ref_argument
@cache_dir_option
@in_place_option
@click.pass_context
def cache_pin(ctx: click.Context, ref: str, cache_dir: Path, in_place: bool) -> None:
    """Fetch a whole version into the cache and keep it there (offline use).

    \b
    Example:
      artfs cache pin bike-dataset:best
    """
    store = store_of(ctx)
    v = store.artifact(ref)
    blobs = store.blobs
    if in_place and blobs.on_this_machine:
        click.echo(f"{store.url} is read in place: {v.qualified_name} is always available here")
        return
    c = open_cache(ctx, cache_dir)
    fetched = c.pin(store.url, v.qualified_name, v.manifest, blobs, progress_bar)
    click.echo(f"pinned {v.qualified_name} (fetched {human_size(fetched)})")


@cache.command("unpin")
@ref_argument
@cache_dir_option
@click.pass_context
def cache_unpin(ctx: click.Context, ref: str, cache_dir: Path) -> None:
    """Let a pinned version be evicted again.

    \b
    Example:
      artfs cache unpin bike-dataset:best
    """
    store = store_of(ctx)
    label = store.artifact(ref).qualified_name
    if not open_cache(ctx, cache_dir).unpin(store.url, label):
        click.echo(f"{label} was not pinned")
        sys.exit(1)
    click.echo(f"unpinned {label}")
