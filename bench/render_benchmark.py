"""Time the offline render of each stack as a whole process, the way a user runs it.

    python bench/render_benchmark.py [--runs 7] [stack ...]

Prints the median, min and max wall time of `python -m stack.render <stack>` and the peak
resident memory of those processes. Targets for the prod stack on a 2-core machine: at most
2.0 s median and 250 MB peak.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
TARGETS = {"prod": (2.0, 250.0)}


def run_once(stack: str, out_dir: str) -> tuple[float, float]:
    """Wall seconds and peak RSS in MB of one render process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "stack.render", stack, "--out", out_dir],
        cwd=PROJECT_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"render of {stack} failed: {process.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stacks", nargs="*", default=["dev", "prod"])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"{'stack':6} {'runs':>4} {'median s':>9} {'min s':>7} {'max s':>7} {'peak MB':>8}  target")
    missed = False
    with tempfile.TemporaryDirectory() as out_dir:
        for stack in args.stacks:
            run_once(stack, out_dir)  # warm the file cache and bytecode, as a second run would
            results = [run_once(stack, out_dir) for _ in range(args.runs)]
            times = [seconds for seconds, _ in results]
            peak = max(rss for _, rss in results)
            median = statistics.median(times)
            target = TARGETS.get(stack)
            verdict = ""
            if target:
                met = median <= target[0] and peak <= target[1]
                missed |= not met
                verdict = f"<= {target[0]} s, <= {target[1]:.0f} MB: {'met' if met else 'MISSED'}"
            figures = f"{median:>9.3f} {min(times):>7.3f} {max(times):>7.3f} {peak:>8.1f}"
            print(f"{stack:6} {args.runs:>4} {figures}  {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
