"""Run components/cache_model.py as the node-cache DaemonSet does, on real files.

The shared volume and the node's disk are directories under tmp_path; the Kubernetes API is a
local http.server.
"""

import argparse
import hashlib
import importlib.util
import json
import shutil
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "components" / "cache_model.py"
STAGE_SCRIPT = REPO_ROOT / "components" / "stage_model.py"
TIMEOUT = 60


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cache_model = load("cache_model", SCRIPT)
MARKER = cache_model.MARKER_NAME
FILES = {
    "config.json": b'{"architectures": ["TinyForCausalLM"]}',
    "model-00001-of-00002.safetensors": os.urandom(3 * 1024 * 1024 + 17),
    "model-00002-of-00002.safetensors": os.urandom(2 * 1024 * 1024),
    "tokenizer/tokenizer.json": b'{"model": {}}',
}


def write_store(source: Path, files: dict, hashes: bool = True) -> bytes:
    """Files and a marker as stage_model.py leaves them; returns the marker's bytes."""
    for path, content in files.items():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_bytes(content)
    manifest = [
        {"path": path, "size": len(content), **({"sha256": hashlib.sha256(content).hexdigest()} if hashes else {})}
        for path, content in sorted(files.items())
    ]
    marker = {"format": 2, "modelId": "acme/tiny", "revision": "v1", "source": "modelscope", "files": len(files),
              "bytes": sum(len(c) for c in files.values()), "completedAt": "2026-01-01T00:00:00Z",
              "manifest": manifest}  # fmt: skip
    content = json.dumps(marker, indent=1).encode()
    (source / MARKER).write_bytes(content)
    return content


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "shared" / "acme" / "tiny" / "v1"
    path.mkdir(parents=True)
    write_store(path, FILES)
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    path = tmp_path / "node"
    path.mkdir()
    return path


def command(source: Path, root: Path, *extra: str, name: str = "v1") -> list:
    return [sys.executable, str(SCRIPT), "--source", str(source), "--cache-root", str(root), "--name", name, *extra]


def run(source: Path, root: Path, *extra: str, name: str = "v1") -> subprocess.CompletedProcess:
    return subprocess.run(
        command(source, root, *extra, name=name), capture_output=True, text=True, timeout=TIMEOUT, umask=0o077
    )


def start(tmp_path: Path, arguments: list) -> tuple:
    """A running script whose output goes to a file, and that file."""
    output = tmp_path / f"output-{len(list(tmp_path.glob('output-*')))}.log"
    with open(output, "w") as stream:
        process = subprocess.Popen(arguments, stdout=stream, stderr=subprocess.STDOUT, text=True)
    return process, output


def wait_for_line(process: subprocess.Popen, output: Path, text: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while text not in output.read_text():
        assert process.poll() is None, output.read_text()
        assert time.monotonic() < deadline, f"no {text!r} within {TIMEOUT} s:\n{output.read_text()}"
        time.sleep(0.05)


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()


def identity(path: Path) -> tuple:
    status = path.stat()
    return status.st_ino, status.st_mtime_ns


def model_files(target: Path) -> dict:
    return {
        p.relative_to(target).as_posix(): p.read_bytes()
        for p in target.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def test_the_first_copy_is_verified_readable_and_marked(source, root):
    result = run(source, root)

    assert result.returncode == 0, result.stderr
    target = root / "v1"
    assert model_files(target) == FILES
    assert (target / MARKER).read_bytes() == (source / MARKER).read_bytes()
    assert "verified (sha256)" in result.stdout and "wrote" in result.stdout.splitlines()[-1]
    # Under a umask of 077 the server, another user, can still read every file and directory.
    for path in [target, target / "tokenizer", *target.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path
    assert not list(target.rglob("*" + cache_model.TEMP_SUFFIX))


def test_the_marker_is_the_last_thing_put_in_place(source, root, monkeypatch):
    renamed = []
    real_replace = os.replace

    def replace(source_path, destination):
        renamed.append(os.path.basename(destination))
        return real_replace(source_path, destination)

    monkeypatch.setattr(cache_model.os, "replace", replace)
    args = cache_model.parse_args(["--source", str(source), "--cache-root", str(root), "--name", "v1"])
    content = (source / MARKER).read_bytes()
    cache_model.cache(args, content, cache_model.read_manifest(json.loads(content)))

    assert renamed[-1] == MARKER
    assert renamed.count(MARKER) == 1
    assert {"config.json", "model-00001-of-00002.safetensors", "tokenizer.json"} <= set(renamed[:-1])


def test_copy_file_hashes_what_it_writes_and_starts_write_back_range_by_range(tmp_path, monkeypatch):
    content = os.urandom(5 * 1024 * 1024 + 3)
    (tmp_path / "source").write_bytes(content)
    ranges = []
    monkeypatch.setattr(cache_model, "BLOCK", 256 * 1024)
    monkeypatch.setattr(cache_model, "WRITE_BACK", 1024 * 1024)
    monkeypatch.setattr(
        cache_model.os, "posix_fadvise", lambda fd, offset, length, advice: ranges.append((offset, length))
    )

    digest = cache_model.copy_file(str(tmp_path / "source"), str(tmp_path / "copy"), len(content))

    assert digest == hashlib.sha256(content).hexdigest()
    assert (tmp_path / "copy").read_bytes() == content
    assert ranges == [(offset, 1024 * 1024) for offset in range(0, 5 * 1024 * 1024, 1024 * 1024)]


def test_a_second_run_finds_the_revision_cached_and_copies_nothing(source, root):
    assert run(source, root).returncode == 0
    before = {path: identity(path) for path in (root / "v1").rglob("*")}

    result = run(source, root)

    assert result.returncode == 0, result.stderr
    assert "already cached" in result.stdout
    assert {path: identity(path) for path in (root / "v1").rglob("*")} == before


def test_an_interrupted_copy_resumes_without_copying_verified_files_again(source, root):
    # The second shard is missing on the first run: the copy stops there, after the first shard.
    second = source / "model-00002-of-00002.safetensors"
    second.rename(source / "aside")
    first = run(source, root)
    assert first.returncode == cache_model.EXIT_SOURCE
    assert "model-00002-of-00002.safetensors is missing from the source" in first.stderr
    target = root / "v1"
    assert not (target / MARKER).exists()
    copied = {path: identity(target / path) for path in ("config.json", "model-00001-of-00002.safetensors")}

    (source / "aside").rename(second)
    result = run(source, root)

    assert result.returncode == 0, result.stderr
    assert "2 of 4 files" in result.stdout and "(2 verified by an earlier run)" in result.stdout
    assert {path: identity(target / path) for path in copied} == copied
    assert model_files(target) == FILES
    assert (target / MARKER).exists()


def test_a_cached_file_changed_since_it_was_verified_is_copied_again(source, root):
    assert run(source, root).returncode == 0
    shard = root / "v1" / "model-00002-of-00002.safetensors"
    shard.write_bytes(bytes(len(FILES[shard.name])))  # same size, other content
    # The source marker was rewritten (a repaired store): the local one no longer matches.
    marker = json.loads((source / MARKER).read_text())
    marker["completedAt"] = "2026-02-01T00:00:00Z"
    (source / MARKER).write_text(json.dumps(marker))

    result = run(source, root)

    assert result.returncode == 0, result.stderr
    assert "1 of 4 files" in result.stdout
    assert model_files(root / "v1") == FILES


def test_a_corrupted_source_file_fails_and_leaves_no_marker(source, root):
    shard = source / "model-00001-of-00002.safetensors"
    shard.write_bytes(b"\0" * len(FILES[shard.name]))

    result = run(source, root)

    assert result.returncode == cache_model.EXIT_MISMATCH
    expected = hashlib.sha256(FILES[shard.name]).hexdigest()
    actual = hashlib.sha256(shard.read_bytes()).hexdigest()
    assert "model-00001-of-00002.safetensors" in result.stderr
    assert expected in result.stderr and actual in result.stderr
    target = root / "v1"
    assert not (target / MARKER).exists()
    assert not (target / shard.name).exists()
    assert not list(target.rglob("*" + cache_model.TEMP_SUFFIX))


def test_a_copy_that_fails_part_way_leaves_no_marker_of_the_earlier_copy(tmp_path, source, root):
    assert run(source, root).returncode == 0
    # The revision is staged again with other content, and a changed file is missing this time.
    changed = {**FILES, "config.json": b'{"architectures": ["Other"]}', "tokenizer/tokenizer.json": b"{}"}
    write_store(source, changed)
    (source / "tokenizer" / "tokenizer.json").unlink()

    result = run(source, root)

    assert result.returncode == cache_model.EXIT_SOURCE
    assert not (root / "v1" / MARKER).exists()
    assert (root / "v1" / "config.json").read_bytes() == changed["config.json"]
    assert not (root / "v1" / "tokenizer" / "tokenizer.json").exists()


def test_a_source_file_of_another_size_fails(source, root):
    (source / "config.json").write_bytes(b"{}")

    result = run(source, root)

    assert result.returncode == cache_model.EXIT_SOURCE
    assert "config.json holds 2 of the" in result.stderr
    assert not (root / "v1" / MARKER).exists()


def test_files_without_a_recorded_sha256_are_checked_by_size(tmp_path, root):
    source = tmp_path / "legacy"
    source.mkdir()
    write_store(source, FILES, hashes=False)

    result = run(source, root)

    assert result.returncode == 0, result.stderr
    assert "size only, no sha256 recorded" in result.stdout
    assert model_files(root / "v1") == FILES


def test_stale_revisions_are_evicted_and_foreign_data_is_never_touched(tmp_path, source, root):
    other = tmp_path / "shared" / "v0"
    other.mkdir()
    write_store(other, {"config.json": b"{}"})
    made = []
    for name in ("v0", "older", "kept"):
        assert run(other, root, *[f"--keep={m}" for m in made], name=name).returncode == 0
        made.append(name)
    assert sorted(p.name for p in root.iterdir() if p.name != cache_model.LOCK_NAME) == sorted(made)
    (root / "foreign").mkdir()
    (root / "foreign" / "weights.bin").write_bytes(b"not ours")
    (root / "notes.txt").write_text("not ours either")
    (root / (cache_model.EVICTING_PREFIX + "cut-short")).mkdir()  # an eviction that was interrupted

    result = run(source, root, "--keep", "kept")

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in root.iterdir() if p.name != cache_model.LOCK_NAME) == [
        "foreign", "kept", "notes.txt", "v1",
    ]  # fmt: skip
    assert (root / "foreign" / "weights.bin").read_bytes() == b"not ours"
    assert "evicted older" in result.stdout and "evicted v0" in result.stdout


def test_revisions_the_model_volume_still_holds_are_kept(tmp_path, root):
    """--keep-stored: the cache keeps what the staging Job keeps (a name is the revision's path
    under the volume's mount, "--" for "/"), and evicts what the Job has removed."""
    store = tmp_path / "store"
    for revision in ("v0", "v1", "v2"):
        write_store(store / "org" / "model" / revision, {"config.json": revision.encode()})
        assert run(store / "org" / "model" / revision, root, "--keep-stored", str(store),
                   name=f"org--model--{revision}").returncode == 0
    shutil.rmtree(store / "org" / "model" / "v0")  # the Job's own eviction on the volume
    (store / "org" / "model" / "v1" / MARKER).unlink()  # a revision being staged again: not complete

    result = run(store / "org" / "model" / "v2", root, "--keep-stored", str(store), name="org--model--v2")

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in root.iterdir() if cache_model.owned(str(p))) == ["org--model--v2"]
    assert "evicted org--model--v0" in result.stdout and "evicted org--model--v1" in result.stdout


def test_a_revision_still_complete_on_the_volume_stays(tmp_path, root):
    store = tmp_path / "store"
    for revision in ("v1", "v2"):
        write_store(store / "org" / "model" / revision, {"config.json": revision.encode()})
        assert run(store / "org" / "model" / revision, root, "--keep-stored", str(store),
                   name=f"org--model--{revision}").returncode == 0

    result = run(store / "org" / "model" / "v2", root, "--keep-stored", str(store), name="org--model--v2")
    without = run(store / "org" / "model" / "v2", root, name="org--model--v2")

    assert result.returncode == 0, result.stderr
    assert "evicted" not in result.stdout
    assert "evicted org--model--v1" in without.stdout, "without --keep-stored only --name and --keep stay"


def test_a_target_directory_made_by_someone_else_is_refused(source, root):
    (root / "v1").mkdir()
    (root / "v1" / "theirs.bin").write_bytes(b"x")

    result = run(source, root)

    assert result.returncode == cache_model.EXIT_USAGE
    assert "was not made by this script" in result.stderr
    assert sorted(p.name for p in (root / "v1").iterdir()) == ["theirs.bin"]


def test_a_target_that_is_a_symlink_is_refused(tmp_path, source, root):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "v1").symlink_to(elsewhere)

    result = run(source, root)

    assert result.returncode == cache_model.EXIT_USAGE
    assert list(elsewhere.iterdir()) == []


def test_too_little_free_space_is_refused_before_any_byte_is_copied(source, root):
    result = run(source, root, "--reserve-gb", "1000000")

    assert result.returncode == cache_model.EXIT_NO_SPACE
    total = sum(len(c) for c in FILES.values())
    assert f"{total} bytes" in result.stderr and "1000000000000000 bytes" in result.stderr
    assert "are free" in result.stderr
    assert model_files(root / "v1") == {}


def test_the_copy_waits_for_the_marker_and_starts_once_it_appears(tmp_path, source, root):
    marker = (source / MARKER).read_bytes()
    (source / MARKER).unlink()
    process, output = start(tmp_path, command(source, root, "--wait-seconds", "0.1"))
    try:
        wait_for_line(process, output, "waiting for the staging Job")
        assert not (root / "v1").exists()
        writer = threading.Thread(target=(source / MARKER).write_bytes, args=(marker,))
        writer.start()
        writer.join(timeout=TIMEOUT)
        assert process.wait(timeout=TIMEOUT) == 0, output.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    assert model_files(root / "v1") == FILES
    assert output.read_text().count("copying acme/tiny@v1") == 1


def test_a_marker_without_a_file_list_is_refused(source, root):
    marker = json.loads((source / MARKER).read_text())
    del marker["manifest"]
    (source / MARKER).write_text(json.dumps(marker))

    result = run(source, root)

    assert result.returncode == cache_model.EXIT_SOURCE
    assert 'no file list ("manifest")' in result.stderr
    assert not (root / "v1").exists()


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a/../../b", "", ".node-cache-progress.json", MARKER])
def test_manifest_paths_that_leave_the_directory_or_clash_with_bookkeeping_are_refused(path):
    marker = {"manifest": [{"path": path, "size": 1}]}
    with pytest.raises(cache_model.CacheError) as error:
        cache_model.read_manifest(marker)
    assert error.value.exit_code == cache_model.EXIT_SOURCE


def test_stay_keeps_running_until_sigterm(tmp_path, source, root):
    process, output = start(tmp_path, command(source, root, "--stay"))
    try:
        wait_for_line(process, output, "staying until SIGTERM")
        assert process.poll() is None
    finally:
        code = stop(process)
    assert code == 0, output.read_text()
    assert (root / "v1" / MARKER).exists()


class FakeApi:
    """Answers every GET with a fixed status and body, and remembers the requests' headers."""

    def __init__(self, status: int, body: dict) -> None:
        self.headers = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
                api.headers.append(dict(self.headers))
                content = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - fixed by http.server
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/apis/apps/v1/namespaces/ns/daemonsets/cache"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeApi":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


DAEMONSET = {"kind": "DaemonSet", "metadata": {"name": "cache", "namespace": "ns"}}


@pytest.mark.parametrize(
    "status, body, removed",
    [
        (404, {"kind": "Status", "reason": "NotFound"}, True),
        (200, {**DAEMONSET, "metadata": {**DAEMONSET["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}}, True),
        (200, DAEMONSET, False),
        (500, {"kind": "Status", "reason": "InternalError"}, False),
    ],
    ids=["gone", "being-deleted", "alive", "api-error"],
)
def test_sigterm_removes_the_cache_only_when_the_daemonset_is_being_deleted(
    tmp_path, source, root, status, body, removed
):
    (root / "foreign").mkdir()
    (root / "foreign" / "weights.bin").write_bytes(b"not ours")
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    with FakeApi(status, body) as api:
        arguments = command(source, root, "--stay", "--remove-when-gone", api.url, "--token-file", str(token))
        process, output = start(tmp_path, arguments)
        try:
            wait_for_line(process, output, "staying until SIGTERM")
        finally:
            code = stop(process)
    assert code == 0, output.read_text()
    assert [headers.get("Authorization") for headers in api.headers] == ["Bearer secret-token"]
    assert (root / "v1").exists() is not removed, output.read_text()
    assert (root / cache_model.LOCK_NAME).exists() is not removed
    assert (root / "foreign" / "weights.bin").read_bytes() == b"not ours"
    assert ("keeping the cache" in output.read_text()) is not removed


def test_sigterm_keeps_the_cache_when_the_api_cannot_be_reached(tmp_path, source, root):
    with FakeApi(404, {}) as api:
        url = api.url  # a port that is closed once the server is gone
    process, output = start(tmp_path, command(source, root, "--stay", "--remove-when-gone", url))
    try:
        wait_for_line(process, output, "staying until SIGTERM")
    finally:
        code = stop(process)
    assert code == 0
    assert "keeping the cache: could not ask" in output.read_text()
    assert (root / "v1" / MARKER).exists()


def test_a_marker_written_by_stage_model_is_read(tmp_path):
    stage_model = load("stage_model", STAGE_SCRIPT)
    assert stage_model.MARKER_NAME == cache_model.MARKER_NAME
    files = [
        stage_model.RepoFile("model.safetensors", 10, "AB" * 32),
        stage_model.RepoFile("config.json", 3, None),
    ]
    args = argparse.Namespace(model_id="acme/tiny", revision="v1", source="modelscope")
    stage_model.write_marker(str(tmp_path), stage_model.new_marker(args, files, "c" * 40, stage_model.now_text()))

    content = cache_model.read_marker_bytes(str(tmp_path), cache_model.MARKER_NAME)
    entries = cache_model.read_manifest(cache_model.parse_marker(content))

    assert entries == [
        cache_model.Entry("config.json", 3, None),
        cache_model.Entry("model.safetensors", 10, "ab" * 32),
    ]
    assert [(f.path, f.size) for f in stage_model.recorded_files(json.loads(content))] == [
        (e.path, e.size) for e in entries
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--name", "a/b"], "--name: must be one directory name"),
        (["--name", ".hidden"], "--name: must be one directory name"),
        (["--keep", ".."], "--keep: must be one directory name"),
        (["--reserve-gb", "-1"], "--reserve-gb: must be a number of at least 0"),
        (["--wait-seconds", "0"], "--wait-seconds: must be a positive number"),
        (["--remove-when-gone", "kubernetes.default.svc/x"], "--remove-when-gone must be an http(s) URL"),
    ],
)
def test_bad_arguments_exit_2_naming_the_option(source, root, extra, message):
    result = subprocess.run(command(source, root) + extra, capture_output=True, text=True, timeout=TIMEOUT)

    assert result.returncode == 2
    assert message in result.stderr
    assert not (root / "v1").exists()


def test_a_cache_root_that_is_not_a_directory_exits_2(tmp_path, source):
    result = run(source, tmp_path / "absent")

    assert result.returncode == 2
    assert "--cache-root" in result.stderr and "is not a directory" in result.stderr
