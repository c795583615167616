"""Layer 5: the README's command blocks run as written, in order, in a fresh home directory, so
every example it shows is one that works (and a changed command breaks this test, not a user)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from artfs.mounttable import is_artfs_mount

from .conftest import make_tree

README = Path(__file__).parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- not run by tests/t5_readme\.py[^>]*-->\n)?```(sh|python)\n(.*?)```", re.S)


def test_the_readme_blocks_run_as_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    rides = "ride_id,station,minutes\n" + "".join(
        f"{i},station-{i % 17},{i % 53 + 3}\n" for i in range(1, 1001)
    )
    make_tree(
        home,
        {
            "data/rides.csv": rides,
            "data/images/bike-1.jpg": b"\xff\xd8 one",
            "data/images/bike-2.jpg": b"\xff\xd8 two",
            "data/train.sh": "#!/bin/sh\necho training\n",
            "data/scratch.tmp": "left out by --exclude",
            "model.h5": b"weights",
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "ARTFS_"))}
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    blocks = BLOCK.findall(README.read_text())
    ran = 0
    try:
        for skipped, language, code in blocks:
            if skipped:
                continue
            argv = (
                ["bash", "-e", "-o", "pipefail", "-c", code]
                if language == "sh"
                else [sys.executable, "-c", code]
            )
            done = subprocess.run(argv, cwd=home, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (
                f"README block failed:\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )
            ran += 1
    finally:
        for mounted in ("artfs", "stage"):
            if is_artfs_mount(str(home / mounted)):
                subprocess.run(["fusermount3", "-u", "-z", str(home / mounted)], check=False)
    assert ran >= 4 and ran == len([b for b in blocks if not b[0]])
    assert len([b for b in blocks if b[0]]) == 3  # the quick start itself, systemctl, a crashed stage
