"""Crash drills at scale: tests/t5_crash.py's two drills — the staging daemon killed with SIGKILL
after seeded fsynced and unfsynced edits (then resumed: every fsynced write must be there byte for
byte), and `artfs commit` killed first in the phase its seed picks, then at random moments, up to
three times (then finished: exactly one complete version) — run over many seeds instead of CI's
five. Prints where the commit kills landed, by phase (as the store and the process showed it).

    .venv/bin/python bench/crash.py [--drills 50]      (half of them of each kind)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from access import parser

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.t5_crash import PHASES  # the order a commit goes through, as the drill sees it

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--drills", type=int, default=50)
    args = ap.parse_args()
    landed = Path(tempfile.mkdtemp()) / "landed"
    env = {**os.environ, "ARTFS_CRASH_SEEDS": str(args.drills // 2), "ARTFS_CRASH_LOG": str(landed)}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/t5_crash.py"]
    if args.dir:
        argv.append(f"--basetemp={args.dir / 'crash'}")
    t = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", tail)) else 0
    if failed or done.returncode:
        print(done.stdout[-20_000:])
    print(f"{passed + failed} drills in {took:.0f} s: {passed} passed, {failed} failed", flush=True)
    kills = [line.split() for line in landed.read_text().splitlines()] if landed.exists() else []
    first = Counter(k[1] for k in kills if len(k) > 1)
    every = Counter(phase for k in kills for phase in k[1:])
    print(f"commit kills by phase ({sum(every.values())} kills in {len(kills)} commit drills; the first "
          "kill of each waited for the phase its seed picks):")  # fmt: skip
    for phase in PHASES:
        print(f"  {phase:10} first kill {first[phase]:3}   any kill {every[phase]:3}")
    print("(a failure is a lost fsynced write, a partial or second version, or a session left behind)")
    sys.exit(1 if failed or done.returncode else 0)


if __name__ == "__main__":
    main()
