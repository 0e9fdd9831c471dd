"""Time the node cache's verified copy (components/cache_model.py) against cp and sha256sum.

    python bench/cold_start.py [--size-gib 4] [--shard-gib 1] [--rounds 3] [--dir /tmp]

It writes a revision as stage_model.py leaves it under --dir: --size-gib of random weight shards
of --shard-gib each, a few small JSON files, and the completion marker with every file's size
and sha256. Each round then copies it three ways into a fresh directory, in an order that
rotates from round to round:

* cache:       python components/cache_model.py, as the DaemonSet runs it: one read of each
               file, hashed while it is copied, fsynced, checked against the marker;
* cp+sha256sum: ``cp -r``, then ``sha256sum`` of the copied files (checked against the marker);
* cp:          ``cp -r`` alone, which neither verifies nor syncs.

The cp+sha256sum and cp figures come from one run timed in phases (cp, ``sync``, sha256sum), so
each is also given with the ``sync`` that puts the bytes on disk as the cache's fsync does.
Before each way the page cache is dropped (``/proc/sys/vm/drop_caches``, as root) so the source
is read from disk; the output says when that was not possible and the runs were warm. It reports
the median of each way, and the cache's rate over the others'. Everything under --dir that it
wrote is removed at the end.

Sections: main() runs SECTIONS in order; each prints its part and returns figures the later
ones may use (the copy section returns ``cache_mb_s``, the cache's median rate in MB/s). The
last prints prod's modelled time to ready with and without its node cache, from the program
itself rendered offline.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

PROJECT_DIR = Path(__file__).resolve().parent.parent
SCRIPT = PROJECT_DIR / "components" / "cache_model.py"
MARKER_NAME = ".modelstore-complete.json"
GIB = 1024**3
CHUNK = 16 * 1024 * 1024
SMALL_FILES = {
    "config.json": {"architectures": ["SyntheticForCausalLM"], "hidden_size": 4096},
    "generation_config.json": {"temperature": 0.7},
    "tokenizer_config.json": {"model_max_length": 32768},
    "tokenizer.json": {"model": {"vocab": {f"t{i}": i for i in range(20000)}}},
}


def make_revision(directory: Path, size_gib: float, shard_gib: float) -> int:
    """Write the shards, the small files and the marker; return the bytes in all files."""
    total = int(size_gib * GIB)
    shards = max(1, round(size_gib / shard_gib))
    manifest = []
    for index in range(shards):
        name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        size = total // shards + (total % shards if index == shards - 1 else 0)
        digest = hashlib.sha256()
        with open(directory / name, "wb") as stream:
            left = size
            while left:
                block = os.urandom(min(CHUNK, left))
                digest.update(block)
                stream.write(block)
                left -= len(block)
        manifest.append({"path": name, "size": size, "sha256": digest.hexdigest()})
    for name, content in SMALL_FILES.items():
        data = json.dumps(content).encode()
        (directory / name).write_bytes(data)
        manifest.append({"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    manifest.sort(key=lambda entry: entry["path"])
    marker = {"format": 2, "modelId": "bench/synthetic-llm", "revision": "bench", "source": "modelscope",
              "files": len(manifest), "bytes": sum(e["size"] for e in manifest),
              "completedAt": "2026-01-01T00:00:00Z", "manifest": manifest}  # fmt: skip
    (directory / MARKER_NAME).write_text(json.dumps(marker, indent=1))
    os.sync()
    return marker["bytes"]


def drop_page_cache() -> bool:
    """Write back and drop the page cache; False when this process may not."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as control:
            control.write("3\n")
    except OSError:
        return False
    return True


def run(command: List[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        output = result.stdout[-2000:] + result.stderr[-2000:]
        raise SystemExit(f"{' '.join(command[:3])} ... failed ({result.returncode}):\n{output}")
    return result.stdout


def time_cache(source: Path, out: Path) -> Dict[str, float]:
    out.mkdir()
    started = time.perf_counter()
    run([sys.executable, str(SCRIPT), "--source", str(source), "--cache-root", str(out), "--name", "bench"])
    return {"cache": time.perf_counter() - started}


def time_cp_and_sha256sum(source: Path, out: Path, manifest: List[dict]) -> Dict[str, float]:
    marks = [time.perf_counter()]
    run(["cp", "-r", str(source), str(out)])
    marks.append(time.perf_counter())
    os.sync()
    marks.append(time.perf_counter())
    listing = run(["sha256sum", "--", *(str(out / entry["path"]) for entry in manifest)])
    marks.append(time.perf_counter())
    digests = [line.split()[0] for line in listing.splitlines()]
    if digests != [entry["sha256"] for entry in manifest]:
        raise SystemExit("sha256sum of the copy differs from the marker")
    cp, sync, sha = marks[1] - marks[0], marks[2] - marks[1], marks[3] - marks[2]
    return {"cp+sha256sum": cp + sha, "cp+sync+sha256sum": cp + sync + sha, "cp": cp, "cp+sync": cp + sync}


def hash_rates(path: Path) -> tuple:
    """MB/s of hashlib's and sha256sum's sha256 over one file in the page cache."""
    size = path.stat().st_size
    data = path.read_bytes()
    started = time.perf_counter()
    hashlib.sha256(data).hexdigest()
    in_python = time.perf_counter() - started
    del data
    started = time.perf_counter()
    run(["sha256sum", str(path)])
    return size / 1e6 / in_python, size / 1e6 / (time.perf_counter() - started)


def copy_rates(args: argparse.Namespace, base: Path, figures: dict) -> dict:
    """The copy section: the cache's verified copy against cp+sha256sum and cp."""
    source = base / "source"
    source.mkdir()
    print(f"writing {args.size_gib:g} GiB of shards of {args.shard_gib:g} GiB under {source} ...", flush=True)
    total = make_revision(source, args.size_gib, args.shard_gib)
    manifest = json.loads((source / MARKER_NAME).read_text())["manifest"]
    ways: Dict[str, Callable[[Path], Dict[str, float]]] = {
        "cache": lambda out: time_cache(source, out),
        "cp+sha256sum": lambda out: time_cp_and_sha256sum(source, out, manifest),
    }
    names = list(ways)
    results: Dict[str, List[float]] = {}
    cold = True
    for round_number in range(args.rounds):
        order = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in order:
            out = base / f"out-{name}"
            cold = drop_page_cache() and cold
            for way, seconds in ways[name](out).items():
                results.setdefault(way, []).append(seconds)
            shutil.rmtree(out)
        print(f"round {round_number + 1}: " + ", ".join(f"{w} {s[-1]:.2f} s" for w, s in results.items()), flush=True)

    medians = {way: statistics.median(seconds) for way, seconds in results.items()}
    rates = {way: total / 1e6 / seconds for way, seconds in medians.items()}
    print()
    reads = (
        "page cache dropped before each way (cold reads)"
        if cold
        else "the page cache could not be dropped (not root?): the runs are WARM, the source may come from memory"
    )
    size = f"{total / 1e9:.2f} GB ({total / GIB:.2f} GiB)"
    print(f"revision: {len(manifest)} files, {size}; {args.rounds} rounds; {reads}")
    print()
    print(f"{'way':<18} | {'median s':>8} | {'MB/s':>7} | {'cache rate / rate':>17}")
    print("-" * 60)
    for way in ("cache", "cp+sha256sum", "cp+sync+sha256sum", "cp", "cp+sync"):
        print(f"{way:<18} | {medians[way]:8.2f} | {rates[way]:7.0f} | {rates['cache'] / rates[way]:17.2f}")
    print()
    target = rates["cache"] / rates["cp+sha256sum"]
    print(f"(a)/(b) cache / cp+sha256sum: {target:.2f} (target at least 0.9: {'met' if target >= 0.9 else 'NOT met'})")
    print(f"(a)/(c) cache / cp:           {rates['cache'] / rates['cp']:.2f}")
    hashlib_rate, sha256sum_rate = hash_rates(source / max(manifest, key=lambda e: e["size"])["path"])
    print(f"sha256 of one shard from memory: hashlib {hashlib_rate:.0f} MB/s, sha256sum {sha256sum_rate:.0f} MB/s "
          f"({run(['sha256sum', '--version']).splitlines()[0]})")
    print()
    return {"cache_mb_s": rates["cache"], "cold": cold}


# Each section takes (args, base directory, figures so far) and returns figures to add.
# A section on the modelled time to ready goes after copy_rates.
def modelled_time_to_ready(args: argparse.Namespace, base: Path, figures: dict) -> dict:
    """prod's time to ready as the plan states it (the real program, rendered offline), with and
    without its node cache, and what every wait derives from it."""
    sys.path.insert(0, str(PROJECT_DIR))
    from stack.render import render_stack

    prod = (PROJECT_DIR / "Pulumi.prod.yaml").read_text()
    without = base / "Pulumi.prod-without-node-cache.yaml"
    without.write_text(prod.replace("vllm-serving:nodeCache: true", "vllm-serving:nodeCache: false"))
    print("\nprod's time to ready, as rendered (modelSizeGB 470; the stack's stated rates):")
    for label, stack_file in (("without the node cache", without), ("with the node cache", None)):
        rendering = render_stack("prod", stack_file=stack_file)
        server = next(o for o in rendering.objects if o.kind == "Deployment")
        probe = server.manifest["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
        timeouts = server.options.timeouts
        print(f"  {label}: {rendering.outputs['timeToReady']}")
        print(f"    startup probe {probe['periodSeconds'] * probe['failureThreshold'] // 60} min, "
              f"progress deadline {server.manifest['spec']['progressDeadlineSeconds'] // 60} min, "
              f"up waits create {timeouts['create']}, update {timeouts['update']}")
    if "cache_mb_s" in figures:
        print(f"  the node cache's own copy verifies at {figures['cache_mb_s']:.0f} MB/s here: "
              "on a node it is bound by the model volume's rate (modelLoadMinReadMBps), once per node and revision")
    return {}


SECTIONS = [copy_rates, modelled_time_to_ready]


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=4.0, help="bytes of weights to copy, in GiB (default 4)")
    parser.add_argument("--shard-gib", type=float, default=1.0, help="size of each weight shard in GiB (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (default 3)")
    parser.add_argument("--dir", default="/tmp", help="where the temporary directory goes (default /tmp)")
    args = parser.parse_args(argv)
    # A terminated run still removes what it wrote (the finally clause below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Path(tempfile.mkdtemp(prefix="cold-start-benchmark-", dir=args.dir))
    figures: dict = {}
    try:
        for section in SECTIONS:
            figures.update(section(args, base, figures))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
