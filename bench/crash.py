"""Crash drills at scale: tests/t5_crash.py's two drills — the staging daemon killed with SIGKILL
after seeded fsynced and unfsynced edits (then resumed: every fsynced write must be there byte for
byte), and `artfs commit` killed at seeded random moments up to three times (then finished: exactly
one complete version) — run over many seeds instead of CI's five.

    .venv/bin/python bench/crash.py [--drills 50]      (half of them of each kind)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from access import parser

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--drills", type=int, default=50)
    args = ap.parse_args()
    env = {**os.environ, "ARTFS_CRASH_SEEDS": str(args.drills // 2)}
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
    print("(a failure is a lost fsynced write, a partial or second version, or a session left behind)")
    sys.exit(1 if failed or done.returncode else 0)


if __name__ == "__main__":
    main()
