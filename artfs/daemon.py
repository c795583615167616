"""The mount daemon's lifecycle: mount, serve, unmount; start detached; stop and wait.

`serve` runs in the foreground (systemd, `--foreground`). It says READY=1 over the sd_notify
protocol once the mount is in place; `start_detached` uses the same protocol to wait for a
daemon it starts in the background, so both paths report a failed start the same way.
Teardown happens in the reverse order of set-up (an ExitStack), and on SIGTERM/SIGINT the
daemon unmounts itself. `unmount` blocks until the daemon has exited.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ArtfsError, ConflictError, InvalidInputError, NotFoundError
from .mounttable import is_artfs_mount, mounts, running

if TYPE_CHECKING:
    from .blobs import BlobStore
    from .cache import BlockCache
    from .catalog import Catalog
    from .reader import BlockReader
    from .staging.fs import StagingView
    from .staging.session import Session as Stage
    from .staging.tree import Overlay
    from .storage.aio import Threads

log = logging.getLogger(__name__)

READ_AHEAD_KB = 1024
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt(3)
MALLOC_MMAP_MIN = 32 * 1024 * 1024  # allocations this big are mapped on their own (glibc's upper limit)
MALLOC_TRIM_MIN = 512 * 1024 * 1024  # free heap kept for reuse, at most


@dataclass(frozen=True)
class MountOptions:
    store_url: str
    mountpoint: str
    cache_dir: str
    cache_size: int | None = None
    in_place: bool = True
    allow_other: bool = False
    threads: int = 16
    session: str = ""  # a staging session (staging/session.py): a writable mount that commits on unmount


def _fusermount_u(mountpoint: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)


def check_mountpoint(mountpoint: str) -> None:
    """A directory to mount on. A dead artfs mount left by a killed daemon is cleared first."""
    if is_artfs_mount(mountpoint):
        try:
            os.statvfs(mountpoint)  # always asks the daemon (stat may be answered from cache)
        except OSError as e:  # ENOTCONN: the daemon died; its mount is a husk
            log.warning("%s: clearing a dead artfs mount (%s)", mountpoint, e.strerror)
            _fusermount_u(mountpoint)
        else:
            raise ConflictError(f"{mountpoint} is already an artfs mount; artfs umount {mountpoint} first")
    if not os.path.isdir(mountpoint):
        raise InvalidInputError(f"mount point {mountpoint} is not a directory")


# -- sd_notify ---------------------------------------------------------------------------------
def notify(state: str) -> None:
    """Tell systemd (or `start_detached`) how the daemon is doing; no-op without NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(address)
        s.sendall(state.encode())


# -- serving -----------------------------------------------------------------------------------
def raise_read_ahead(mountpoint: str) -> None:
    """Let the kernel send 1 MiB reads instead of 128 KiB (root only; best effort)."""
    info = mounts().get(mountpoint)
    if info is None:
        return
    device = info.device
    path = Path(f"/sys/class/bdi/{device}/read_ahead_kb")
    try:
        path.write_text(str(READ_AHEAD_KB))
    except OSError as e:
        log.debug("cannot raise %s: %s", path, e.strerror)


def serve(options: MountOptions) -> None:
    """Mount and serve until unmounted or signalled (SIGTERM, SIGINT, SIGHUP).

    Set-up in order, torn down in reverse (an AsyncExitStack): the store (opened and checked
    before anything is mounted), the cache, the worker threads, the view, the mount."""
    import pyfuse3
    import trio

    from .blobs import BlobStore
    from .cache import BlockCache
    from .catalog import Catalog
    from .config import StoreConfig
    from .fuse_ops import Operations, WritableOperations, invalidate
    from .namespace import View
    from .reader import BlockReader
    from .staging.session import Session as Stage
    from .storage import open_backend
    from .storage.aio import Threads
    from .vfs import VersionsView

    mountpoint = os.path.abspath(options.mountpoint)
    check_mountpoint(mountpoint)
    fuse_options = {"fsname=artfs", "subtype=artfs", "default_permissions", "noatime"}
    fuse_options.add("rw" if options.session else "ro")
    if options.allow_other:
        fuse_options.add("allow_other")
    stage = Stage.load(options.session) if options.session else None
    if stage is not None:
        stage.check_resumable()

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            backend = stack.enter_context(open_backend(options.store_url))
            config = StoreConfig.load(backend, create=False)  # a bad store fails before mounting
            blobs = BlobStore(backend, config.block_size)
            cache = BlockCache(Path(options.cache_dir), blobs.block_size, options.cache_size)
            threads = Threads(options.threads)
            nursery = await stack.enter_async_context(trio.open_nursery())  # read-ahead runs here
            stack.callback(nursery.cancel_scope.cancel)  # after the mount is gone (reverse order)
            reader = BlockReader(blobs, cache, threads, nursery, options.in_place)
            info = {**asdict(options), "cache_size": cache.budget, "mountpoint": mountpoint}
            catalog = Catalog(backend, markers=config.format >= 2)
            if stage is None:
                view: View = VersionsView(catalog, blobs, cache, reader, invalidate, info)
                operations = Operations(view)
            else:
                staged = await stage_view(stage, catalog, blobs, cache, reader, mountpoint)
                stack.push_async_callback(finish_stage, stage, staged, catalog, blobs, threads)
                view, operations = staged, WritableOperations(staged)
            stack.callback(view.close)
            tune_memory()
            pyfuse3.init(operations, mountpoint, fuse_options)
            stack.callback(pyfuse3.close, unmount=True)  # a no-op when someone else unmounted

            async def on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                    async for signum in signals:
                        log.info("%s: stopping on signal %d", mountpoint, signum)
                        notify("STOPPING=1")
                        pyfuse3.terminate()
                        return

            async with trio.open_nursery() as serving:
                serving.start_soon(on_signal)

                async def run_loop() -> None:
                    await pyfuse3.main()
                    serving.cancel_scope.cancel()

                serving.start_soon(run_loop)
                # A request through the mount returns once the kernel has our INIT reply, which
                # resets read-ahead: only then can it be raised, and only then are we serving.
                await threads.run(os.statvfs, mountpoint)
                raise_read_ahead(mountpoint)
                log.info("serving %s on %s (cache %s)", backend.url, mountpoint, cache.root)
                notify(f"READY=1\nSTATUS=serving {backend.url}\nMAINPID={os.getpid()}")

    try:
        trio.run(main)
    except BaseExceptionGroup as group:  # a commit that failed at unmount, out of the nurseries
        errors, others = group.split(ArtfsError)
        if errors is None or others is not None:
            raise
        first: BaseException = errors
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    log.info("%s: unmounted", mountpoint)


async def stage_view(
    stage: Stage, catalog: Catalog, blobs: BlobStore, cache: BlockCache, reader: BlockReader, mountpoint: str
) -> StagingView:
    """The staging session's tree (its journal replayed), served with commits on request."""
    from .staging.fs import StagingView

    overlay = await reader.threads.run(stage.overlay, catalog, blobs)

    async def commit() -> None:
        async with view.paused():
            await reader.threads.run(commit_stage, stage, view.overlay, catalog, blobs, False)

    async def status() -> None:
        async with view.paused():
            changes = await reader.threads.run(view.overlay.status)
            stage.write_status(changes)

    async def abort() -> None:
        view.aborted = True  # the unmount that follows drops the session instead of committing

    info = {"session": stage.info.id, "name": stage.info.name, "base": stage.info.base}
    controls = {"commit": commit, "status": status, "abort": abort}
    view = StagingView(overlay, blobs, cache, reader, info, controls)
    stage.info.pid, stage.info.mountpoint = os.getpid(), mountpoint
    stage.save()
    return view


def commit_stage(stage: Stage, overlay: Overlay, catalog: Catalog, blobs: BlobStore, final: bool) -> None:
    """Commit a session (`final`: as it ends), its outcome (or its error) written into the
    session for the command that asked (`artfs umount`, `artfs commit`) to print."""
    try:
        stage.commit(overlay, catalog, blobs, final=final)
    except Exception as e:
        stage.info.outcome = {"error": str(e)}
        stage.save()
        raise


async def finish_stage(
    stage: Stage, view: StagingView, catalog: Catalog, blobs: BlobStore, threads: Threads
) -> None:
    """Unmounted: commit what is staged. Committed, the session's work is done (its record
    stays for `artfs umount` to report); failed, everything is kept for `artfs commit ID`."""
    stage.info.pid = 0
    if view.aborted:
        view.overlay.close()
        stage.remove()
        log.info("%s: aborted, nothing committed", stage.info.id)
        return
    try:
        await threads.run(commit_stage, stage, view.overlay, catalog, blobs, True)
    except ArtfsError as e:
        log.error("%s: the commit failed, the staged work is kept (artfs commit %s): %s",
                  stage.info.id, stage.info.id, e)  # fmt: skip
        raise
    finally:
        view.overlay.close()
    log.info("%s: %s", stage.info.id, stage.info.outcome)


def tune_memory() -> None:
    """Settings for a process that streams: a cold read allocates and frees a buffer per GET
    and per block, which glibc by default hands back to the kernel (munmap, heap trimming), so
    that every next one costs page faults (≈5% of the daemon's CPU in a cold read). Fixed
    thresholds keep freed buffers in the heap for reuse; what the daemon holds is bounded by
    RECENT_BYTES and the fetches in flight. The objects alive once the store is open (modules,
    botocore's models) are moved out of the cyclic garbage collector's way."""
    import ctypes
    import gc

    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its defaults stay
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_MIN)
        libc.mallopt(M_TRIM_THRESHOLD, MALLOC_TRIM_MIN)


# -- starting in the background ----------------------------------------------------------------
def log_path(mountpoint: str) -> Path:
    from .config import state_dir

    name = os.path.abspath(mountpoint).strip("/").replace("/", "-") or "root"
    return state_dir() / "logs" / f"mount-{name}.log"


@contextlib.contextmanager
def _notify_socket() -> Iterator[tuple[socket.socket, str]]:
    with tempfile.TemporaryDirectory(prefix="artfs-notify-") as tmp:
        path = os.path.join(tmp, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.bind(path)
            yield s, path


def start_detached(argv: list[str], mountpoint: str, timeout: float = 60.0) -> Path:
    """Run `argv` (a foreground mount) in its own session and wait until it is READY.

    Returns the log file. On failure raises ArtfsError with the daemon's own error message and
    exit code."""
    from .config import PRIVATE_FILE, private_dir

    log_file = log_path(mountpoint)
    private_dir(log_file.parent)
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    with _notify_socket() as (sock, address), open(fd, "ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        start = out.tell()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd="/",  # a daemon must not keep the caller's directory (or its filesystem) busy
            start_new_session=True,
            env={**os.environ, "NOTIFY_SOCKET": address},
        )
        sock.settimeout(0.1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                if b"READY=1" in sock.recv(4096):
                    return log_file
            if proc.poll() is not None:
                break
        else:
            proc.terminate()
            raise ArtfsError(f"the mount daemon did not become ready in {timeout:.0f} s; see {log_file}")
    lines = log_file.read_bytes()[start:].decode(errors="replace").strip().splitlines()
    errors = [line for line in lines if line.startswith("artfs: error:")]
    error = ArtfsError(
        errors[-1].removeprefix("artfs: error: ") if errors else f"the mount daemon failed; see {log_file}"
    )
    error.exit_code = proc.returncode if proc.returncode >= 3 else 3  # 1 and 2 mean other things
    raise error


# -- stopping ----------------------------------------------------------------------------------
def _ask(mountpoint: str, timeout: float = 5.0) -> dict[str, str]:
    """What a daemon says about itself: `pid`, and a stage's `session` (root xattrs), or a
    read-only mount's `.artfs/mount.json`. Empty if it does not answer (dead, or hung: asked in
    a helper thread so that a hung daemon cannot hang us)."""
    result: dict[str, str] = {}

    def read() -> None:
        with contextlib.suppress(OSError):
            for key in ("pid", "session"):
                result[key] = os.getxattr(mountpoint, f"user.artfs.{key}").decode()
            return
        with contextlib.suppress(OSError, ValueError, KeyError):
            result["pid"] = str(json.loads(Path(mountpoint, ".artfs", "mount.json").read_bytes())["pid"])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return dict(result)


def stage_at(mountpoint: str) -> str | None:
    """The staging session mounted at `mountpoint`, if one is."""
    mountpoint = os.path.abspath(mountpoint)
    return _ask(mountpoint).get("session") if is_artfs_mount(mountpoint) else None


def control(mountpoint: str, what: str) -> None:
    """Ask a running stage to `commit`, write its `status` or `abort`; returns when it is done
    (a commit takes as long as its upload)."""
    try:
        os.setxattr(mountpoint, f"user.artfs.{what}", b"1")
    except OSError as e:
        raise ArtfsError(
            f"{mountpoint}: the stage could not {what} ({os.strerror(e.errno or 0)}); see its log"
        ) from None


def unmount(mountpoint: str, timeout: float | None = 60.0) -> str | None:
    """Unmount and wait for the daemon to exit (a stage's for as long as its commit takes:
    `timeout` None). ConflictError while files are open. The staging session, if it was one."""
    mountpoint = os.path.abspath(mountpoint)
    if not is_artfs_mount(mountpoint):
        raise NotFoundError(f"{mountpoint} is not an artfs mount")
    about = _ask(mountpoint)
    pid = int(about["pid"]) if "pid" in about else None
    session = about.get("session")
    if session:
        timeout = None
    done = _fusermount_u(mountpoint)
    if done.returncode != 0:
        if "busy" in done.stderr:
            raise ConflictError(f"{mountpoint} is busy: a process has a file or directory open in it")
        raise ArtfsError(f"cannot unmount {mountpoint}: {done.stderr.strip()}")
    deadline = None if timeout is None else time.monotonic() + timeout
    while pid is not None and running(pid):
        if deadline is not None and time.monotonic() > deadline:
            raise ArtfsError(f"{mountpoint} is unmounted but its daemon (pid {pid}) has not exited")
        time.sleep(0.02)
    return session


def foreground_argv(options: MountOptions, verbosity: int) -> list[str]:
    """The command line that runs the same mount in the foreground. `-P`: whatever the caller's
    directory holds (a folder named `artfs`, say the mount point) is never imported."""
    argv = [sys.executable, "-P", "-m", "artfs", *(["-" + "v" * verbosity] if verbosity else [])]
    argv += ["--store", options.store_url]
    argv += ["stage", "--resume", options.session] if options.session else ["mount"]
    argv += ["--foreground", "--cache-dir", options.cache_dir]
    if options.cache_size is not None:
        argv += ["--cache-size", str(options.cache_size)]
    if not options.in_place:
        argv.append("--no-in-place")
    if options.allow_other:
        argv.append("--allow-other")
    return [*argv, options.mountpoint]
