"""Run every benchmark in this folder, one process each, and print their markdown tables.

    python benchmarks/run_all.py --threads 2          # the tables that go in docs/benchmarks.md
    python benchmarks/run_all.py --only fusion        # one of them

Each bench_*.py compares vlblocks with the peer a user would otherwise pick, in one process, on the same inputs,
after warm-up, and prints a markdown table last. Extra arguments after `--` go to every script.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--only", default=None, help="run bench_<ONLY>.py only")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments after -- go to every script")
    args = p.parse_args()
    extra = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem == f"bench_{args.only}"]
        if not scripts:
            p.error(f"no benchmarks/bench_{args.only}.py")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    print(f"# vlblocks benchmarks: torch {torch.__version__}, {device}, {args.threads} thread(s)\n")
    failed = 0
    for script in scripts:
        print(f"## {script.stem}\n", flush=True)
        proc = subprocess.run([sys.executable, str(script), "--threads", str(args.threads), *extra])
        failed += proc.returncode != 0
        print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
