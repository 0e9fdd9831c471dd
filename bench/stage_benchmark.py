"""Time components/stage_model.py against a plain streaming download of the same files.

    python bench/stage_benchmark.py [--size-gb 2.4] [--files 8] [--rounds 3] [--max-workers 4]
                                    [--dir /tmp] [--small-files 1000]

A local ModelScope hub (tests/fake_modelscope_hub.py, serving from memory) holds a synthetic
repository of --files safetensors shards, --size-gb in all, plus a config.json. Each round
downloads it into a fresh directory under --dir three ways, in an order that rotates from
round to round, each in its own process:

* plain:        requests, streaming each file to disk in 1 MiB chunks, --max-workers files at
                once: the reference;
* plain+sha256: the same, also hashing each chunk with sha256, as the client does to check
                every file against the sha256 of the listing;
* stage:        python components/stage_model.py (modelscope client of this interpreter).

It reports wall time, rate and CPU seconds (user + system, from the process's rusage) of
each, and the ratio of the staging rate to the plain rate. Then it times re-runs of the
script on that store: the no-op re-run (marker present: one stat per file, no hub request);
a resumed run without marker and with one shard missing (the others are taken as they are,
not re-hashed); the re-run with --verify (every file re-hashed, no hub request); and the
re-run on a store of --small-files files, where the script logs how long its size check took.
``--script`` times another version of the script instead (the re-runs it does not support are
left out).

The hub runs in this process and shares the machine's cores with the downloads, so the
absolute rates say more about this machine than about a real hub; the ratio and the CPU
seconds per GB compare the clients. Everything under --dir is removed at the end.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "tests"))

from fake_modelscope_hub import FakeModelScopeHub  # noqa: E402

SCRIPT = PROJECT_DIR / "components" / "stage_model.py"
MODEL_ID = "bench/synthetic-llm"
REVISION = "master"
MARKER_NAME = ".modelstore-complete.json"

PLAIN_DOWNLOAD = r"""
import concurrent.futures, hashlib, os, sys, requests
endpoint, model_id, revision, out, workers, with_hash, *paths = sys.argv[1:]
def fetch(path):
    url = f"{endpoint}/api/v1/models/{model_id}/repo"
    digest = hashlib.sha256() if with_hash == "1" else None
    with requests.get(url, params={"Revision": revision, "FilePath": path}, stream=True, timeout=60) as response:
        response.raise_for_status()
        destination = os.path.join(out, path)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        with open(destination, "wb") as stream:
            for chunk in response.iter_content(1024 * 1024):
                stream.write(chunk)
                if digest is not None:
                    digest.update(chunk)
with concurrent.futures.ThreadPoolExecutor(int(workers)) as pool:
    list(pool.map(fetch, paths))
"""


def timed(command: list, env: dict) -> tuple:
    """Wall seconds, CPU seconds and output of one process; exits if it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    stdout, stderr = process.stdout.read(), process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[1]} failed:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return elapsed, usage.ru_utime + usage.ru_stime, stdout


def fresh_dir(base: str) -> str:
    return tempfile.mkdtemp(prefix="round-", dir=base)


def discard(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.sync()  # no write-back of one run left to slow the next


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.4, help="repository size in GB (10^9 bytes)")
    parser.add_argument("--files", type=int, default=8, help="number of weight shards")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-workers", type=int, default=4, help="parallel files, for both downloads")
    parser.add_argument("--dir", default="/tmp", help="where the temporary directory goes")
    parser.add_argument("--small-files", type=int, default=1000, help="files of the size-check store")
    parser.add_argument("--script", default=str(SCRIPT), help="staging script to time (e.g. an earlier version)")
    parser.add_argument("--rounds-only", action="store_true", help="skip the re-run and size-check timings")
    args = parser.parse_args()

    shard_size = int(args.size_gb * 1e9 / args.files)
    # A terminated run still removes what it wrote (the finally clause below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = tempfile.mkdtemp(prefix="stage-benchmark-", dir=args.dir)
    env = {name: value for name, value in os.environ.items() if not name.startswith(("MODELSCOPE_", "PYTHON"))}
    env.update(
        MODELSCOPE_CACHE=os.path.join(base, "modelscope-cache"),
        MODELSCOPE_HOME=os.path.join(base, "modelscope-home"),
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    try:
        print(f"making {args.files} shards of {shard_size / 1e6:.0f} MB ...", flush=True)
        files = {
            f"model-{i + 1:05d}-of-{args.files:05d}.safetensors": os.urandom(shard_size) for i in range(args.files)
        }
        files["config.json"] = json.dumps({"architectures": ["SyntheticForCausalLM"]}).encode()
        total = sum(len(content) for content in files.values())
        paths = sorted(files)
        with FakeModelScopeHub() as hub:
            hub.add_model(MODEL_ID, REVISION, files)
            del files

            def plain(with_hash: bool) -> tuple:
                out = fresh_dir(base)
                try:
                    command = [sys.executable, "-c", PLAIN_DOWNLOAD, hub.endpoint, MODEL_ID, REVISION, out,
                               str(args.max_workers), "1" if with_hash else "0", *paths]  # fmt: skip
                    wall, cpu, _ = timed(command, env)
                finally:
                    discard(out)
                return wall, cpu

            def stage(keep: bool = False) -> tuple:
                out = fresh_dir(base)
                target = os.path.join(out, MODEL_ID, REVISION)
                command = [sys.executable, args.script, "--model-id", MODEL_ID, "--revision", REVISION,
                           "--target", target, "--endpoint", hub.endpoint, "--max-workers", str(args.max_workers)]  # fmt: skip
                wall, cpu, _ = timed(command, env)
                if keep:
                    return wall, cpu, out, command
                discard(out)
                return wall, cpu

            ways = {"plain": lambda: plain(False), "plain+sha256": lambda: plain(True), "stage": stage}
            names = list(ways)
            results = {name: [] for name in names}
            rows = []
            for round_number in range(args.rounds):
                order = names[round_number % len(names) :] + names[: round_number % len(names)]
                measured = {}
                for name in order:
                    measured[name] = ways[name]()
                    results[name].append(measured[name])
                rows.append((round_number + 1, measured))
                print(
                    f"round {round_number + 1}: "
                    + ", ".join(f"{name} {measured[name][0]:.2f} s" for name in names)
                    + f" (order {' -> '.join(order)})",
                    flush=True,
                )

            if args.rounds_only:
                print_table(args, rows, results, names, paths, total)
                return 0
            # The no-op re-run: the store is complete, its marker lists every file.
            _, _, out, command = stage(keep=True)
            target = command[command.index("--target") + 1]
            extras = {}
            wall, cpu, output = timed(command, env)
            assert "already complete" in output, output
            extras["no-op re-run on the complete store"] = (wall, cpu)
            # A resumed run: no marker yet and one shard missing, the others in place.
            shard = next(path for path in paths if path.endswith(".safetensors"))
            os.unlink(os.path.join(target, MARKER_NAME))
            os.unlink(os.path.join(target, shard))
            os.sync()
            extras[f"re-run with 1 of {len(paths)} files ({shard_size / 1e6:.0f} MB) missing, no marker"] = timed(
                command, env
            )[:2]
            if "--verify" in timed([sys.executable, args.script, "--help"], env)[2]:
                requests_before = len(hub.requests)
                extras[f"re-run with --verify (re-hash {total / 1e9:.2f} GB)"] = timed(command + ["--verify"], env)[:2]
                assert len(hub.requests) == requests_before
            discard(out)

        check = None
        if "--verify" in timed([sys.executable, args.script, "--help"], env)[2]:
            check = size_check(args, base, env)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print_table(args, rows, results, names, paths, total)
    for what, (wall, cpu) in extras.items():
        print(f"{what}: {wall:.2f} s wall, {cpu:.2f} s CPU")
    if check is not None:
        print(
            f"size check of {args.small_files} files: {check[0] * 1000:.1f} ms in the script "
            f"({check[1]:.2f} s for the whole process)"
        )
    return 0


def size_check(args: argparse.Namespace, base: str, env: dict) -> tuple:
    """Seconds the script's size check of a store of many files takes, and the whole run's."""
    small = os.path.join(fresh_dir(base), "acme", "many", REVISION)
    os.makedirs(small)
    manifest = []
    for index in range(args.small_files):
        name = f"part-{index:05d}.bin"
        content = hashlib.sha256(str(index).encode()).digest() * (1 + index % 4)
        Path(small, name).write_bytes(content)
        manifest.append({"path": name, "size": len(content)})
    marker = {"format": 2, "modelId": "acme/many", "revision": REVISION, "files": len(manifest),
              "bytes": sum(m["size"] for m in manifest), "completedAt": "2026-01-01T00:00:00Z", "manifest": manifest}  # fmt: skip
    Path(small, MARKER_NAME).write_text(json.dumps(marker))
    # The marker lists every file, so the hub (an address nothing listens on) is never asked.
    command = [sys.executable, args.script, "--model-id", "acme/many", "--revision", REVISION,
               "--target", small, "--endpoint", "http://127.0.0.1:9"]  # fmt: skip
    wall, _, output = timed(command, env)
    [seconds] = re.findall(r"checked the sizes of \d+ files in ([0-9.]+) s", output)
    return float(seconds), wall


def print_table(args: argparse.Namespace, rows: list, results: dict, names: list, paths: list, total: int) -> float:
    gigabytes = total / 1e9
    print()
    print(f"repository: {len(paths)} files, {gigabytes:.2f} GB; {args.max_workers} files at once; {args.rounds} rounds")
    print()
    print(f"{'round':>5} | {'way':<13} | {'wall s':>7} | {'MB/s':>7} | {'CPU s/GB':>8} | {'rate / plain':>12}")
    print("-" * 66)
    for round_number, measured in rows:
        for name in names:
            wall, cpu = measured[name]
            ratio = measured["plain"][0] / wall
            print(
                f"{round_number:>5} | {name:<13} | {wall:7.2f} | {total / 1e6 / wall:7.0f} | "
                f"{cpu / gigabytes:8.2f} | {ratio:12.2f}"
            )
    print("-" * 66)
    medians = {name: statistics.median(wall for wall, _ in results[name]) for name in names}
    for name in names:
        cpu = statistics.median(cpu for _, cpu in results[name])
        print(
            f"{'median':>5} | {name:<13} | {medians[name]:7.2f} | {total / 1e6 / medians[name]:7.0f} | "
            f"{cpu / gigabytes:8.2f} | {medians['plain'] / medians[name]:12.2f}"
        )
    print()
    return gigabytes


if __name__ == "__main__":
    sys.exit(main())
