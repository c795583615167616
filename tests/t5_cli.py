"""Layer 5: the `artfs` command as people and scripts use it (real processes, real store)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import artfs
from artfs.storage import open_backend

from .conftest import ARTFS, S3_BUCKET, SeaweedFS, make_tree, run_cli

COMMANDS = [
    "push",
    "ls",
    "info",
    "edit",
    "files",
    "cat",
    "diff",
    "download",
    "checkout",
    "verify",
    "alias",
    "delete",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    r = run_cli(command, "--help")
    assert r.returncode == 0
    assert "Example" in r.stdout and f"artfs {command}" in r.stdout


def test_top_level_help_documents_exit_codes() -> None:
    r = run_cli("--help")
    assert r.returncode == 0 and "Exit codes" in r.stdout
    for c in COMMANDS:
        assert c in r.stdout


def test_push_ls_info_files_json(store_url: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.csv": "x,y\n", "sub/b.txt": "b"})
    readme = make_tree(tmp_path, {"README.md": "hi"}) / "README.md"
    r = run_cli(
        "push",
        "bike",
        str(src),
        str(readme),
        "-t",
        "dataset",
        "-d",
        "first",
        "-m",
        "rows=2",
        "-m",
        "source=survey",
        "-a",
        "best",
        store=store_url,
    )
    assert (r.returncode, r.stdout.strip()) == (0, "bike:v0"), r.stderr
    r = run_cli("push", "bike", str(src), str(readme), store=store_url)
    assert (r.returncode, r.stdout.strip()) == (0, "unchanged: bike:v0")

    names = json.loads(run_cli("ls", "--json", store=store_url).stdout)
    assert [(n["name"], n["type"], n["versions"], n["latest"]) for n in names] == [
        ("bike", "dataset", 1, "v0")
    ]
    info = json.loads(run_cli("info", "bike:best", "--json", store=store_url).stdout)
    assert info["metadata"] == {"rows": 2, "source": "survey"} and info["description"] == "first"
    assert sorted(info["aliases"]) == ["best", "latest"] and len(info["digest"]) == 32
    files = json.loads(run_cli("files", "bike:v0", "--json", store=store_url).stdout)
    assert [f["path"] for f in files] == ["README.md", "a.csv", "sub/b.txt"]
    human = run_cli("ls", "bike", store=store_url).stdout
    assert "VERSION" in human and "best" in human and "v0" in human


def test_file_added_twice_is_an_error(store_url: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.csv": "1"})
    r = run_cli("push", "bike", str(src / "a.csv"), str(src / "a.csv"), store=store_url)
    assert r.returncode == 2 and "already added" in r.stderr


def test_download_verify_checkout_diff_exit_codes(store_url: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": "1", "b": "2"})
    run_cli("push", "ds", str(src), store=store_url)
    (src / "a").write_text("changed")
    run_cli("push", "ds", str(src), store=store_url)

    r = run_cli("diff", "ds:v0", "ds:v1", store=store_url)
    assert r.returncode == 1 and r.stdout.split() == ["modified", "a"]
    assert run_cli("diff", "ds:v1", "ds:latest", store=store_url).returncode == 0

    out = tmp_path / "out"
    assert run_cli("download", "ds:v0", str(out), store=store_url).returncode == 0
    assert run_cli("verify", "ds:v0", str(out), store=store_url).returncode == 0
    r = run_cli("verify", "ds:v1", str(out), store=store_url)
    assert r.returncode == 1 and "modified a" in " ".join(r.stdout.split())
    (out / "extra").write_text("x")
    assert run_cli("checkout", "ds:v1", str(out), store=store_url).returncode == 0
    assert not (out / "extra").exists()
    assert run_cli("verify", "ds:v1", str(out), store=store_url).returncode == 0

    r = run_cli("download", "ds:v1", store=store_url, cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "artifacts/ds:v1/a").read_text() == "changed"


def test_alias_and_delete(store_url: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": "1"})
    run_cli("push", "ds", str(src), store=store_url)
    (src / "a").write_text("2")
    run_cli("push", "ds", str(src), store=store_url)
    assert run_cli("alias", "ds:v0", "best", "prod", store=store_url).returncode == 0
    assert json.loads(run_cli("info", "ds:prod", "--json", store=store_url).stdout)["number"] == 0
    assert run_cli("alias", "ds:v1", "best", store=store_url).returncode == 0  # aliases move
    assert json.loads(run_cli("info", "ds:best", "--json", store=store_url).stdout)["number"] == 1

    r = run_cli("delete", "ds:v0", store=store_url)
    assert r.returncode == 5 and "prod" in r.stderr
    assert run_cli("alias", "--delete", "ds:prod", store=store_url).returncode == 0
    assert run_cli("delete", "ds:v0", store=store_url).returncode == 0
    assert run_cli("info", "ds:v0", store=store_url).returncode == 4
    r = run_cli("alias", "--delete", "ds:latest", store=store_url)
    assert r.returncode == 2 and "latest" in r.stderr


def test_on_conflict_exit_codes(store_url: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": "1"})
    run_cli("push", "ds", str(src), store=store_url)
    (src / "a").write_text("2")
    r = run_cli("push", "ds", str(src), "--on-conflict", "skip", store=store_url)
    assert (r.returncode, r.stdout.strip()) == (1, "skipped: ds exists (newest: ds:v0); nothing was pushed")
    r = run_cli("push", "ds", str(src), "--on-conflict", "error", store=store_url)
    assert r.returncode == 5 and "already exists" in r.stderr
    r = run_cli("push", "ds", str(src), "--on-conflict", "replace", store=store_url)
    assert (r.returncode, r.stdout.strip()) == (0, "ds:v1")
    assert [v["version"] for v in json.loads(run_cli("ls", "ds", "--json", store=store_url).stdout)] == ["v1"]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["push", "bad name", "."], 2, "invalid artifact name"),
        (["push", "ds", "/does/not/exist"], 4, "no such file"),
        (["push", "ds", ".", "-a", "v3"], 2, "version number"),
        (["push", "ds", ".", "-m", "novalue"], 2, "KEY=VALUE"),
        (["info", "ds:v9"], 4, "ds"),
        (["info", "nothing:latest"], 4, "no artifact named 'nothing'"),
        (["info", "ds:no-such-alias"], 4, "no alias"),
        (["--store", "ftp://host/x", "ls"], 2, "unsupported store scheme"),
        (["push", "ds", ".", "--on-conflict", "maybe"], 2, "Invalid value"),
        (["--s3-endpoint", "notaurl", "--store", "s3://artfs-test/x", "ls"], 2, "is not a URL"),
        (["--store", "s3:/artfs-test/x", "ls"], 2, "looks like a URL"),
        (["--store", "s3://ab/x", "ls"], 2, "not a valid bucket name"),
    ],
)
def test_bad_input_is_one_clear_line(
    store_url: str, tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    make_tree(tmp_path / "src", {"a": "1"})
    run_cli("push", "ds", str(tmp_path / "src"), store=store_url)
    r = run_cli(*args, store=store_url, cwd=tmp_path / "src")
    assert r.returncode == code, (r.stdout, r.stderr)
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    if code != 2 or not needle.startswith("Invalid"):
        assert len(r.stderr.strip().splitlines()) == 1


def test_store_with_other_format_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "config").write_text('{"format": 99, "hash": "xxh3-128", "block_size": 4194304}')
    r = run_cli("--store", f"file://{root}", "ls")
    assert r.returncode == 7 and "format 99" in r.stderr and "Traceback" not in r.stderr


def test_default_store_and_env(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": "1"})
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "ARTFS_STORE": ""}
    assert run_cli("push", "ds", str(src), env=env).returncode == 0
    assert (tmp_path / "xdg/artfs/store/config").exists()
    r = run_cli("--store", str(tmp_path / "other"), "ls", env=env)
    assert r.returncode == 4 and "no artfs store" in r.stderr


def test_push_killed_mid_upload_leaves_no_version(store_url: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"small": "s"})
    assert run_cli("push", "ds", str(src), store=store_url).returncode == 0
    with open(src / "big", "wb") as f:
        for _ in range(64):
            f.write(os.urandom(4 << 20))
    store_root = Path(store_url.removeprefix("file://"))
    proc = subprocess.Popen([*ARTFS, "--store", store_url, "push", "ds", str(src)])
    deadline = time.monotonic() + 60
    while not any(store_root.glob(".tmp/*/*.tmp")):  # the upload has begun
        assert proc.poll() is None and time.monotonic() < deadline, "push ended before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    versions = json.loads(run_cli("ls", "ds", "--json", store=store_url).stdout)
    assert [v["version"] for v in versions] == ["v0"]  # nothing partial became visible
    r = run_cli("push", "ds", str(src), store=store_url)
    assert (r.returncode, r.stdout.strip()) == (0, "ds:v1"), r.stderr
    out = tmp_path / "out"
    assert run_cli("checkout", "ds:v1", str(out), store=store_url).returncode == 0
    assert run_cli("verify", "ds:v1", str(src), store=store_url).returncode == 0


def test_s3_endpoint_option_and_permanent_store_errors(seaweedfs: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": "a"})
    env = {k: v for k, v in os.environ.items() if k != "S3_ENDPOINT_URL"}

    def artfs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ARTFS, *args], capture_output=True, text=True, env=env, timeout=120)

    store = f"s3://artfs-test/cli-{os.getpid()}"
    done = artfs("--s3-endpoint", seaweedfs, "--store", store, "push", "ds", str(src))
    assert done.returncode == 0 and done.stdout.strip() == "ds:v0", done.stderr
    assert "v0       latest" in artfs("--s3-endpoint", seaweedfs, "--store", store, "ls", "ds").stdout

    missing = artfs("--s3-endpoint", seaweedfs, "--store", "s3://no-such-bucket/x", "push", "ds", str(src))
    assert missing.returncode == 7 and "bucket 'no-such-bucket' does not exist" in missing.stderr
    assert missing.stderr.count("\n") == 1  # one line, no traceback

    started = time.monotonic()
    down = artfs("--s3-endpoint", "http://127.0.0.1:9", "--store", store, "ls")
    assert down.returncode == 7 and "cannot connect to http://127.0.0.1:9" in down.stderr, down.stderr
    assert time.monotonic() - started < 60  # retried within a bound, then reported
    assert "retrying for up to" in down.stderr  # said while it was retrying, once
    assert down.stderr.count("retrying") == 1
    for secret in ("Signature", "AWSAccessKeyId", "127.0.0.1:9/", "?"):  # no presigned URL, ever
        assert secret not in down.stderr, down.stderr


def test_a_push_through_a_store_outage_completes_or_leaves_no_version(
    tmp_path: Path, own_s3: SeaweedFS
) -> None:
    env = {"S3_ENDPOINT_URL": own_s3.endpoint}
    url = f"s3://{S3_BUCKET}/outage"
    src = make_tree(tmp_path / "src", {"big.bin": os.urandom(48 * 1024 * 1024), "small.txt": "s"})
    push = [*ARTFS, "--store", url, "push", "ds", str(src)]

    # killed in the middle of the upload: either it finished first, or it fails and leaves nothing
    proc = subprocess.Popen(
        push, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    with open_backend(url) as store:
        while proc.poll() is None and not store.exists("config"):  # the push is under way
            time.sleep(0.02)
    own_s3.kill()
    out, err = proc.communicate(timeout=120)
    own_s3.start()
    listing = run_cli("ls", "ds", "--json", store=url, env=env)
    if proc.returncode == 0:
        assert json.loads(listing.stdout)[0]["version"] == "v0"
    else:
        assert proc.returncode == 7 and err.count("artfs: error:") == 1, err  # one clear error
        assert "Traceback" not in err
        assert listing.returncode == 4  # no version at all

    # down when the push starts, back while it retries: it completes
    own_s3.kill()
    proc = subprocess.Popen(
        push, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(1.0)
    own_s3.start()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() in ("ds:v0", "unchanged: ds:v0")
    check = run_cli("verify", "ds:latest", str(src), store=url, env=env)
    assert check.returncode == 0, check.stdout + check.stderr


def test_an_internal_error_is_exit_3_and_says_it_is_a_bug(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from artfs.catalog import Catalog
    from artfs.cli import main

    def broken(self: object) -> list[str]:
        raise RuntimeError("an unexpected state")

    monkeypatch.setattr(Catalog, "summaries", broken)
    artfs.Store(str(tmp_path / "s")).log_artifact(_one_file(tmp_path))
    result = CliRunner().invoke(main, ["--store", str(tmp_path / "s"), "ls"])
    assert result.exit_code == 3, result.output
    assert "internal error: RuntimeError: an unexpected state" in result.output
    assert "a bug in artfs" in result.output and "Traceback" not in result.output


def test_ctrl_c_stops_a_push_at_once_leaving_no_temp_files_and_no_version(
    store_url: str, tmp_path: Path
) -> None:
    chunk = os.urandom(64 << 20)
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big.bin", "wb") as f:
        for _ in range(8):  # 512 MiB
            f.write(chunk)
    store_root = Path(store_url.removeprefix("file://"))
    proc = subprocess.Popen(
        [*ARTFS, "--store", store_url, "push", "ds", str(src)], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not any(store_root.glob(".tmp/*/*.tmp")):  # the upload has begun
        assert proc.poll() is None and time.monotonic() < deadline, "push ended before it could be stopped"
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err, err
    assert "Traceback" not in err
    assert [p for p in store_root.rglob("*") if p.is_file() and p.name != "config"] == []
    assert run_cli("ls", "ds", store=store_url).returncode == 4  # no version, no blob, no temp file


def test_one_file_system_keeps_a_push_off_other_filesystems(store_url: str, small_disk: Path) -> None:
    src = small_disk.parent / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    inner = src / "mounted"
    inner.mkdir()
    subprocess.run(["mount", "--bind", str(small_disk), str(inner)], check=True)
    try:
        (inner / "other.txt").write_text("on another filesystem")
        r = run_cli("push", "ds", str(src), "--one-file-system", store=store_url)
        assert r.returncode == 0 and "not pushing" in r.stderr and "another filesystem" in r.stderr, r.stderr
        files = json.loads(run_cli("files", "ds:v0", "--json", store=store_url).stdout)
        assert [f["path"] for f in files] == ["a.txt"]
        r = run_cli("push", "ds", str(src), store=store_url)
        assert r.stdout.strip() == "ds:v1"  # without -x it is one tree
    finally:
        subprocess.run(["umount", str(inner)], check=True)


def test_global_options_go_anywhere(store_url: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": "1"})
    env = {"ARTFS_STORE": str(tmp_path / "elsewhere")}
    r = run_cli("push", "ds", str(src), "--store", store_url, "-v", env=env)
    assert (r.returncode, r.stdout.strip()) == (0, "ds:v0"), r.stderr
    assert json.loads(run_cli("ls", "--json", "--store", store_url, env=env).stdout)[0]["name"] == "ds"
    r = run_cli("--store", str(tmp_path / "nowhere"), "info", "ds:v0", "--store", store_url, env=env)
    assert r.returncode == 0  # typed after the command wins
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "nowhere").exists()
    r = run_cli("cache", "info", "--store", store_url, "--cache-dir", str(tmp_path / "c"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["blobs"] == 0


def test_every_reporting_command_speaks_json(store_url: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": "1", "b": "2"})

    def j(*args: str, code: int = 0) -> object:
        r = run_cli(*args, "--json", store=store_url)
        assert r.returncode == code, r.stderr
        return json.loads(r.stdout)

    assert j("push", "ds", str(src), "-a", "best") == {
        "version": "ds:v0", "created": True, "skipped": False, "aliases_moved": ["best"],
        "amended": [], "deleted": [], "digest": artfs.Store(store_url).artifact("ds:v0").digest,
    }  # fmt: skip
    (src / "a").write_text("changed")
    assert j("push", "ds", str(src))["version"] == "ds:v1"  # type: ignore[index]
    assert j("diff", "ds:v0", "ds:v1", code=1) == [{"path": "a", "change": "modified"}]
    out = tmp_path / "out"
    got = j("download", "ds:v0", str(out))
    assert got == {"version": "ds:v0", "root": str(out), "added": ["a", "b"], "replaced": [], "removed": [],
                   "unchanged": 0, "dry_run": False}  # fmt: skip
    (out / "extra").write_text("x")
    assert j("checkout", "ds:v1", str(out), "--dry-run") == {
        "version": "ds:v1", "root": str(out), "added": [], "replaced": ["a"], "removed": ["extra"],
        "unchanged": 1, "dry_run": True,
    }  # fmt: skip
    assert j("verify", "ds:v1", str(out), code=1) == {
        "version": "ds:v1", "root": str(out), "matches": False,
        "differences": [{"path": "a", "change": "modified"}, {"path": "extra", "change": "extra"}],
    }  # fmt: skip
    assert j("alias", "ds:v1", "prod") == {"version": "ds:v1", "aliases": ["latest", "prod"]}
    assert j("alias", "--delete", "ds:prod") == {"removed": "ds:prod", "version": "ds:v1"}
    assert j("delete", "ds:v0", "--delete-aliases") == {"deleted": ["ds:v0"], "aliases_removed": ["ds:best"]}
    assert j("edit", "ds:v1", "-m", "rows=3")["metadata"] == {"rows": 3}  # type: ignore[index]


def test_edit_cat_and_delete_need_what_they_act_on(store_url: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"rides.csv": "id\n1\n", "link": "->rides.csv"})
    run_cli("push", "ds", str(src), "-m", "draft=true", "-m", "rows=1", store=store_url)
    r = run_cli("edit", "ds:v0", "-d", "cleaned", "-m", "rows=2", "--unset", "draft", store=store_url)
    assert r.returncode == 0, r.stderr
    info = json.loads(run_cli("info", "ds:latest", "--json", store=store_url).stdout)
    assert (info["description"], info["metadata"]) == ("cleaned", {"rows": 2})
    assert run_cli("edit", "ds:v0", store=store_url).returncode == 2  # nothing to change
    assert run_cli("edit", "ds:v0", "--unset", "nope", store=store_url).returncode == 4
    assert run_cli("cat", "ds:v0", "link", store=store_url).stdout == "id\n1\n"
    assert run_cli("cat", "ds:v0", "missing.csv", store=store_url).returncode == 4

    r = run_cli("delete", "ds", store=store_url)  # no version: never `latest` by default
    assert r.returncode == 2 and "name a version" in r.stderr
    assert run_cli("info", "ds:v0", store=store_url).returncode == 0
    r = run_cli("delete", "ds", "--all", store=store_url)  # not a terminal, nobody to ask
    assert r.returncode == 2 and "--yes" in r.stderr
    r = run_cli("delete", "ds", "--all", "--yes", store=store_url)
    assert r.returncode == 0 and r.stdout.splitlines() == ["deleted ds:v0"]
    assert run_cli("info", "ds:latest", store=store_url).returncode == 4
    assert "gc" not in run_cli("delete", "--help").stdout  # no promise of a command that is not there


def test_checkout_output_says_what_it_removed_added_and_replaced(store_url: str, tmp_path: Path) -> None:
    run_cli("push", "ds", str(make_tree(tmp_path / "src", {"a": "1", "b": "2"})), store=store_url)
    project = make_tree(tmp_path / "project", {"a": "mine", "notes.txt": "keep me"})
    r = run_cli("checkout", "ds:v0", str(project), store=store_url)
    assert r.returncode == 5 and "not a checkout of ds" in r.stderr and "--force" in r.stderr
    assert (project / "notes.txt").read_text() == "keep me"
    r = run_cli("checkout", "ds:v0", str(project), "--dry-run", store=store_url)
    assert [line.split() for line in r.stdout.splitlines()[:3]] == [
        ["would", "remove", "notes.txt"],
        ["would", "replace", "a"],
        ["would", "add", "b"],
    ]
    assert (project / "notes.txt").exists()
    r = run_cli("checkout", "ds:v0", str(project), "--force", store=store_url)
    assert r.returncode == 0 and "removed       notes.txt" in r.stdout
    assert r.stdout.splitlines()[-1].endswith(": 1 added, 1 replaced, 1 removed, 0 unchanged")
    (project / "a").write_text("x")
    r = run_cli("verify", "ds:v0", str(project), store=store_url)
    assert r.returncode == 1 and "differs from ds:v0 in 1 path" in r.stderr and "1 paths" not in r.stderr


def test_ctrl_c_stops_a_download_and_leaves_the_destination_as_it_was(store_url: str, tmp_path: Path) -> None:
    chunk = os.urandom(32 << 20)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):  # 384 MiB in 12 files
        (src / f"part{i:02d}.bin").write_bytes(chunk[i:] + chunk[:i])
    assert run_cli("push", "ds", str(src), store=store_url).returncode == 0
    dest = make_tree(tmp_path / "dest", {"mine.txt": "untouched"})
    proc = subprocess.Popen(
        [*ARTFS, "--store", store_url, "download", "ds:v0", str(dest)], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not any(p.is_file() for p in dest.glob(".artfs-staging.*/*")):  # fetching has begun
        assert proc.poll() is None and time.monotonic() < deadline, "download ended before it was stopped"
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err, err
    assert sorted(p.name for p in dest.iterdir()) == ["mine.txt"]  # no file of the version, no staging


def test_verbose_output_has_timestamps_and_no_sdk_flood(seaweedfs: str, tmp_path: Path) -> None:
    import re

    src = make_tree(tmp_path / "src", {"a.txt": "a"})
    r = run_cli("-vv", "push", "ds", str(src), store=f"s3://{S3_BUCKET}/logs-{os.getpid()}")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert any("claimed ds:v0" in line for line in lines)  # -v and up show the steps
    stamped = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d artfs: (DEBUG|INFO|WARNING|ERROR) artfs\.")
    assert lines and all(stamped.match(line) for line in lines), lines  # ours only, each with a time


def _one_file(tmp_path: Path) -> artfs.Artifact:
    art = artfs.Artifact("ds")
    art.add_file(make_tree(tmp_path / "one", {"a": "1"}) / "a")
    return art


def test_piped_tables_keep_every_name_whole(store_url: str, tmp_path: Path) -> None:
    name = "a" * 127 + "z"  # the longest name there is
    path = "/".join(["deep-directory-name"] * 8) + "/file-at-the-bottom.txt"
    src = make_tree(tmp_path / "src", {path: "x"})
    assert run_cli("push", name, str(src), store=store_url).returncode == 0
    assert name in run_cli("ls", store=store_url).stdout.split()
    assert path in run_cli("files", f"{name}:v0", store=store_url).stdout.split()
