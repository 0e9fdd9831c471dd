"""Run components/stage_model.py as the staging Job does, against a local fake hub.

The real modelscope client does the downloading; FakeModelScopeHub stands in for the hub.
"""

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from fake_modelscope_hub import FakeModelScopeHub

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "components" / "stage_model.py"
MARKER_NAME = ".modelstore-complete.json"
STAGING_NAME = ".modelstore-staging.json"
MODEL_ID = "acme/tiny-llm"
REVISION = "v1.0"
BIG_SHARD = "model-00001-of-00002.safetensors"
SUBDIR_SHARD = "shards/model-00002-of-00002.safetensors"
SUBPROCESS_TIMEOUT = 60


@pytest.fixture
def model_files() -> dict:
    return {
        "config.json": json.dumps({"architectures": ["TinyForCausalLM"], "hidden_size": 64}).encode(),
        "tokenizer.json": json.dumps({"model": {"vocab": {"a": 0, "b": 1}}}).encode(),
        BIG_SHARD: os.urandom(48 * 1024),
        SUBDIR_SHARD: os.urandom(20 * 1024),
    }


@pytest.fixture
def hub(model_files):
    with FakeModelScopeHub() as fake_hub:
        fake_hub.add_model(MODEL_ID, REVISION, model_files)
        yield fake_hub


@pytest.fixture
def target(tmp_path) -> Path:
    return tmp_path / "models" / MODEL_ID / REVISION


@pytest.fixture
def run_stage(tmp_path, hub, target):
    """Run the script in a subprocess, as the Job does.

    Keyword arguments replace the model id, revision, target or endpoint, or change the
    environment (a value of None unsets the variable).
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("MODELSCOPE_")}
    env.update(
        MODELSCOPE_CACHE=str(tmp_path / "modelscope-cache"),
        MODELSCOPE_HOME=str(tmp_path / "modelscope-home"),
        # Fail fast: one retry per file, short timeouts, one attempt per listing.
        MODELSCOPE_DOWNLOAD_MAX_RETRIES="1",
        MODELSCOPE_DOWNLOAD_RETRY_MAX_DELAY_SECONDS="1",
        MODELSCOPE_DOWNLOAD_TIMEOUT="5",
        MODELSCOPE_API_TIMEOUT="5",
        MODELSCOPE_REPO_TREE_PAGE_TIMEOUT_SECONDS="5",
        MODELSCOPE_REPO_TREE_PAGE_MAX_ATTEMPTS="1",
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )

    return stage_runner(sys.executable, env, hub, target)


def stage_runner(python: str, env: dict, hub, target: Path, source_args: tuple[str, ...] = ()):
    """A function that runs the script with this interpreter and environment against the hub, as
    the Job does: positional arguments are added to the command line; keyword arguments replace
    the model id, revision, target or endpoint, or change the environment (None unsets)."""

    def run(*extra_args, model_id=MODEL_ID, revision=REVISION, endpoint=None, env_changes=None, target=target):
        command = [
            python,
            str(SCRIPT),
            *source_args,
            "--model-id", model_id,
            "--revision", revision,
            "--target", str(target),
            "--endpoint", endpoint or hub.endpoint,
            *extra_args,
        ]  # fmt: skip
        run_env = {**env, **(env_changes or {})}
        run_env = {name: value for name, value in run_env.items() if value is not None}
        return subprocess.run(
            command, cwd=REPO_ROOT, env=run_env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
        )

    return run


def load_stage_model():
    spec = importlib.util.spec_from_file_location("stage_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_marker_file(target: Path) -> dict:
    return json.loads((target / MARKER_NAME).read_text())


def files_under(target: Path) -> dict:
    return {path.relative_to(target).as_posix(): path.read_bytes() for path in target.rglob("*") if path.is_file()}


def write_files(target: Path, files: dict) -> None:
    for relative_path, content in files.items():
        path = target / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def model_files_in(target: Path) -> dict:
    """files_under without the record of the commit an unfinished store's files come from."""
    return {path: content for path, content in files_under(target).items() if path != STAGING_NAME}


def error_lines(result) -> list:
    return [line for line in result.stderr.splitlines() if line.startswith("stage_model: error:")]


def assert_complete_store(target: Path, model_files: dict) -> None:
    on_disk = files_under(target)
    assert on_disk.pop(MARKER_NAME)
    assert on_disk == model_files
    assert_marker(target, model_files)


def assert_marker(
    target: Path,
    model_files: dict,
    source: str = "modelscope",
    model_id: str = MODEL_ID,
    hashed: Callable[[str], bool] = lambda path: True,
) -> None:
    """The marker names each file with its size, and its sha256 where the hub lists one (the fake
    ModelScope hub lists one for every file; the Hugging Face Hub for LFS files only)."""
    marker = read_marker_file(target)
    assert marker["modelId"] == model_id
    assert marker["revision"] == REVISION
    assert marker["source"] == source
    assert marker["files"] == len(model_files)
    assert marker["bytes"] == sum(len(content) for content in model_files.values())
    assert marker["completedAt"].endswith("Z")
    assert marker["manifest"] == [
        {"path": path, "size": len(content), **({"sha256": hashlib.sha256(content).hexdigest()} if hashed(path) else {})}
        for path, content in sorted(model_files.items())
    ]


def test_fresh_download_stages_every_file_and_writes_marker(run_stage, hub, target, model_files):
    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert_complete_store(target, model_files)
    assert len(hub.listings()) == 1
    for path in model_files:
        assert len(hub.downloads_of(path)) == 1, path
    assert f"staged {MODEL_ID}@{REVISION}: 4 files" in result.stdout


def test_rerun_on_complete_store_sends_no_request(run_stage, hub, target, model_files):
    assert run_stage().returncode == 0
    marker_before = (target / MARKER_NAME).read_bytes()
    hub.requests.clear()

    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert hub.requests == []
    assert "already complete" in result.stdout
    assert (target / MARKER_NAME).read_bytes() == marker_before


def test_store_without_marker_is_verified_and_marked(run_stage, hub, target, model_files):
    write_files(target, model_files)  # a run killed after the last file, before the marker

    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert_complete_store(target, model_files)
    assert len(hub.listings()) == 1
    assert all(hub.downloads_of(path) == [] for path in model_files)


def test_partial_file_is_resumed_with_a_range_request(run_stage, hub, target, model_files):
    received = len(model_files[BIG_SHARD]) // 2
    write_files(target, {BIG_SHARD + ".incomplete": model_files[BIG_SHARD][:received]})

    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert_complete_store(target, model_files)
    assert [request.range for request in hub.downloads_of(BIG_SHARD)] == [f"bytes={received}-"]


def test_partial_file_with_wrong_bytes_is_downloaded_again(run_stage, hub, target, model_files):
    write_files(target, {BIG_SHARD + ".incomplete": b"\0" * 1000})

    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert_complete_store(target, model_files)
    # The resumed file fails its hash check, is discarded and fetched from the start.
    assert [request.range for request in hub.downloads_of(BIG_SHARD)] == ["bytes=1000-", None]


def test_allow_pattern_stages_only_matching_files(run_stage, target, model_files):
    result = run_stage("--allow-pattern", "*.json", "--allow-pattern", "tokenizer*")

    assert result.returncode == 0, result.stderr
    json_files = {path: content for path, content in model_files.items() if path.endswith(".json")}
    assert_complete_store(target, json_files)


def test_modelscope_dirs_default_to_beside_the_target(run_stage, tmp_path, target, model_files):
    home = tmp_path / "home"
    home.mkdir()

    result = run_stage(env_changes={"MODELSCOPE_CACHE": None, "MODELSCOPE_HOME": None, "HOME": str(home)})

    assert result.returncode == 0, result.stderr
    assert_complete_store(target, model_files)
    state_dir = target.parent / ".modelscope"
    assert len(list((state_dir / "cache" / ".lock").glob("*.lock"))) == len(model_files)
    assert (state_dir / "home" / "credentials").is_dir()
    assert list(home.iterdir()) == []


@pytest.mark.parametrize(
    ("model_id", "revision"),
    [("acme/no-such-model", REVISION), (MODEL_ID, "no-such-revision")],
    ids=["unknown-model", "unknown-revision"],
)
def test_unknown_model_or_revision_exits_3(run_stage, hub, target, model_id, revision):
    result = run_stage(model_id=model_id, revision=revision)

    assert result.returncode == 3, result.stderr
    [error] = error_lines(result)
    assert f"{model_id}@{revision}" in error
    assert "not found" in error
    assert len(hub.listings()) == 1
    assert not (target / MARKER_NAME).exists()


def test_file_failing_with_server_error_exits_4_without_marker(run_stage, hub, target, model_files):
    hub.fail_file(MODEL_ID, REVISION, SUBDIR_SHARD)

    result = run_stage()

    assert result.returncode == 4, result.stderr
    [error] = error_lines(result)
    assert f"{MODEL_ID}@{REVISION}: 1 of 4 files failed" in error
    assert SUBDIR_SHARD in error
    assert len(hub.downloads_of(SUBDIR_SHARD)) == 2  # first try + MODELSCOPE_DOWNLOAD_MAX_RETRIES=1
    assert not (target / MARKER_NAME).exists()
    expected_kept = {path: content for path, content in model_files.items() if path != SUBDIR_SHARD}
    assert model_files_in(target) == expected_kept


def test_corrupted_file_exits_4_without_marker(run_stage, hub, target, model_files):
    hub.corrupt_file(MODEL_ID, REVISION, BIG_SHARD)

    result = run_stage()

    assert result.returncode == 4, result.stderr
    [error] = error_lines(result)
    assert BIG_SHARD in error and "Hash mismatch" in error
    # modelscope retries a hash mismatch a fixed three times, whatever the retry settings.
    assert len(hub.downloads_of(BIG_SHARD)) == 3
    assert not (target / MARKER_NAME).exists()
    assert BIG_SHARD not in files_under(target)
    assert BIG_SHARD + ".incomplete" not in files_under(target)


def test_unreachable_hub_exits_4(run_stage, target):
    with FakeModelScopeHub() as stopped_hub:
        closed_endpoint = stopped_hub.endpoint

    result = run_stage(endpoint=closed_endpoint)

    assert result.returncode == 4, result.stderr
    [error] = error_lines(result)
    assert f"{MODEL_ID}@{REVISION}: download failed" in error
    assert not (target / MARKER_NAME).exists()


def test_leftover_partial_file_fails_verification_with_5(run_stage, target, model_files):
    # Left by an earlier run that downloaded more files; this selection never touches it.
    write_files(target, {BIG_SHARD + ".incomplete": model_files[BIG_SHARD][:100]})

    result = run_stage("--allow-pattern", "*.json")

    assert result.returncode == 5, result.stderr
    [error] = error_lines(result)
    assert f"partial downloads left in {target}: {BIG_SHARD}.incomplete" in error
    assert not (target / MARKER_NAME).exists()


def test_selection_without_files_fails_verification_with_5(run_stage, hub, target):
    result = run_stage("--allow-pattern", "*.gguf")

    assert result.returncode == 5, result.stderr
    [error] = error_lines(result)
    assert "no file of this revision is selected (4 listed)" in error
    assert len(hub.listings()) == 1
    assert not (target / MARKER_NAME).exists()


def test_marker_of_another_revision_exits_2(run_stage, hub, target):
    write_files(target, {MARKER_NAME: json.dumps({"modelId": MODEL_ID, "revision": "v0.9"}).encode()})

    result = run_stage()

    assert result.returncode == 2, result.stderr
    [error] = error_lines(result)
    assert f"already holds {MODEL_ID}@v0.9" in error
    assert hub.requests == []
    assert read_marker_file(target)["revision"] == "v0.9"


@pytest.mark.parametrize(
    "bad_args",
    [["--model-id", "no-owner"], ["--model-id", f"{MODEL_ID}\n"], ["--max-workers", "0"], ["--keep-revisions", "-1"]],
    ids=["model-id-without-owner", "model-id-with-newline", "zero-workers", "negative-keep-revisions"],
)
def test_bad_arguments_exit_2(run_stage, hub, bad_args):
    result = run_stage(*bad_args)

    assert result.returncode == 2
    assert "stage_model: error:" in result.stderr
    assert hub.requests == []


def test_importing_the_module_does_not_import_modelscope():
    check = "import sys, components.stage_model; print(sorted(m for m in sys.modules if 'modelscope' in m))"
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_read_marker(tmp_path):
    stage_model = load_stage_model()
    assert stage_model.MARKER_NAME == MARKER_NAME
    marker_path = tmp_path / MARKER_NAME

    assert stage_model.read_marker(str(tmp_path)) is None
    assert stage_model.read_marker(str(tmp_path / "missing-dir")) is None

    marker = {"modelId": MODEL_ID, "revision": REVISION, "files": 4, "bytes": 10, "completedAt": "x"}
    marker_path.write_text(json.dumps(marker))
    assert stage_model.read_marker(str(tmp_path)) == marker

    marker_path.write_text('{"modelId": "acme/tiny-llm", "revis')
    assert stage_model.read_marker(str(tmp_path)) is None

    marker_path.write_text("[1, 2]")
    assert stage_model.read_marker(str(tmp_path)) is None


# -- re-runs: the marker's file list -----------------------------------------------------


def test_fresh_download_makes_one_listing_and_records_every_file(run_stage, hub, target, model_files):
    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert_marker(target, model_files)
    # The script's listing is the only one: the client gets the chosen files with it.
    assert len(hub.listings()) == 1
    assert "using modelscope 1.40.2 (modelscope-hub)" in result.stdout


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_file_damaged_after_completion_is_fetched_again(run_stage, hub, target, model_files, damage):
    assert run_stage().returncode == 0
    shard = target / BIG_SHARD
    if damage == "truncated":
        shard.write_bytes(model_files[BIG_SHARD][:1000])
    else:
        shard.unlink()
    hub.requests.clear()

    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert_complete_store(target, model_files)
    assert "checked the sizes of 4 files" in result.stdout
    what = f"1000 of {len(model_files[BIG_SHARD])} bytes" if damage == "truncated" else "missing"
    assert f"1 of 4 files need fetching again: {BIG_SHARD} ({what})" in result.stdout
    assert len(hub.listings()) == 1
    assert [path for path in model_files if hub.downloads_of(path)] == [BIG_SHARD]
    assert [request.range for request in hub.downloads_of(BIG_SHARD)] == [None]


def test_damaged_file_is_fetched_again_on_a_store_without_marker(run_stage, hub, target, model_files):
    # A run killed after the last file, before the marker; one file was cut short since.
    write_files(target, {**model_files, SUBDIR_SHARD: model_files[SUBDIR_SHARD][:10]})

    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert_complete_store(target, model_files)
    assert [path for path in model_files if hub.downloads_of(path)] == [SUBDIR_SHARD]


def test_size_check_does_not_hash_and_verify_does(run_stage, hub, target, model_files):
    assert run_stage().returncode == 0
    shard = target / BIG_SHARD
    corrupted = bytearray(shard.read_bytes())
    corrupted[100] ^= 0xFF  # same size, other content
    shard.write_bytes(bytes(corrupted))
    hub.requests.clear()

    plain = run_stage()

    assert plain.returncode == 0, plain.stderr
    assert "already complete" in plain.stdout
    assert hub.requests == []
    assert shard.read_bytes() == bytes(corrupted)

    verified = run_stage("--verify")

    assert verified.returncode == 0, verified.stderr
    assert "verified the sha256 of 4 files" in verified.stdout
    assert f"1 of 4 files need fetching again: {BIG_SHARD} (sha256 differs)" in verified.stdout
    assert_complete_store(target, model_files)
    assert [path for path in model_files if hub.downloads_of(path)] == [BIG_SHARD]

    hub.requests.clear()
    again = run_stage("--verify")

    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout
    assert hub.requests == []


def test_verify_without_marker_rehashes_files_in_place(run_stage, hub, target, model_files):
    corrupted = b"\0" * len(model_files[BIG_SHARD])
    write_files(target, {**model_files, BIG_SHARD: corrupted})

    result = run_stage("--verify")

    assert result.returncode == 0, result.stderr
    assert_complete_store(target, model_files)
    assert [path for path in model_files if hub.downloads_of(path)] == [BIG_SHARD]


def old_marker(model_files: dict, completed_at: str = "2026-01-01T00:00:00Z") -> bytes:
    """A marker as earlier versions wrote it: counts, no file list."""
    return json.dumps(
        {
            "modelId": MODEL_ID,
            "revision": REVISION,
            "files": len(model_files),
            "bytes": sum(len(content) for content in model_files.values()),
            "completedAt": completed_at,
        }
    ).encode()


def test_old_marker_is_upgraded_without_contacting_the_hub(run_stage, hub, target, model_files):
    write_files(target, {**model_files, MARKER_NAME: old_marker(model_files)})

    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert "upgraded the marker" in result.stdout
    assert "already complete" in result.stdout
    assert hub.requests == []
    marker = read_marker_file(target)
    assert marker["completedAt"] == "2026-01-01T00:00:00Z"
    assert marker["manifest"] == [
        {"path": path, "size": len(content)} for path, content in sorted(model_files.items())
    ]

    (target / BIG_SHARD).write_bytes(b"short")
    rerun = run_stage()

    assert rerun.returncode == 0, rerun.stderr
    assert f"1 of 4 files need fetching again: {BIG_SHARD}" in rerun.stdout
    assert_complete_store(target, model_files)


def test_old_marker_that_no_longer_matches_is_checked_against_the_hub(run_stage, hub, target, model_files):
    write_files(target, {**model_files, BIG_SHARD: b"short", MARKER_NAME: old_marker(model_files)})

    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert "no longer match its marker" in result.stdout
    assert_complete_store(target, model_files)
    assert [path for path in model_files if hub.downloads_of(path)] == [BIG_SHARD]


def test_size_check_of_a_thousand_files(run_stage, hub, target):
    """The re-run of a complete store stats each file once; the script logs how long it took."""
    files = {f"shard-{index:04d}.safetensors": b"x" * (index % 7) for index in range(1000)}
    write_files(target, files)
    manifest = [{"path": path, "size": len(content)} for path, content in sorted(files.items())]
    marker = {"format": 2, "modelId": MODEL_ID, "revision": REVISION, "files": 1000, "bytes": 0, "completedAt": "x"}
    (target / MARKER_NAME).write_text(json.dumps({**marker, "manifest": manifest}))

    started = time.monotonic()
    result = run_stage()
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    [check] = re.findall(r"checked the sizes of 1000 files in ([0-9.]+) s: 0 missing or truncated", result.stdout)
    print(f"size check of 1000 files: {float(check):.3f} s in the script, {elapsed:.2f} s for the whole run")
    assert hub.requests == []


# -- which files -------------------------------------------------------------------------

WEIGHTS = os.urandom(4096)
DUPLICATES = {
    "pytorch_model.bin": os.urandom(3000),
    "original/consolidated.00.pth": os.urandom(2000),
    "original/params.json": b"{}",
    "consolidated.safetensors": os.urandom(2500),
    "flax_model.msgpack": os.urandom(1000),
    "onnx/model.onnx": os.urandom(1000),
}
LOADED = {"config.json": b"{}", "model-00001-of-00001.safetensors": WEIGHTS, "model.safetensors.index.json": b"{}"}


@pytest.fixture
def mixed_hub(hub):
    hub.add_model("acme/mixed", REVISION, {**LOADED, **DUPLICATES})
    return hub


def test_duplicate_weights_are_skipped_beside_safetensors(run_stage, mixed_hub, tmp_path):
    target = tmp_path / "mixed"

    result = run_stage(model_id="acme/mixed", target=target)

    assert result.returncode == 0, result.stderr
    assert {path for path in files_under(target) if path != MARKER_NAME} == set(LOADED)
    assert f"skipping {len(DUPLICATES)} files" in result.stdout
    assert all(mixed_hub.downloads_of(path) == [] for path in DUPLICATES)
    assert read_marker_file(target)["files"] == len(LOADED)


def test_allow_patterns_win_over_the_automatic_skip(run_stage, mixed_hub, tmp_path):
    target = tmp_path / "mixed"

    result = run_stage("--allow-pattern", "*", model_id="acme/mixed", target=target)

    assert result.returncode == 0, result.stderr
    assert {path for path in files_under(target) if path != MARKER_NAME} == {*LOADED, *DUPLICATES}
    assert "skipping" not in result.stdout


def test_ignore_patterns_leave_out_more(run_stage, mixed_hub, tmp_path):
    target = tmp_path / "mixed"

    result = run_stage(
        "--ignore-pattern", "*.index.json", "--ignore-pattern", "config.json", model_id="acme/mixed", target=target
    )

    assert result.returncode == 0, result.stderr
    assert {path for path in files_under(target) if path != MARKER_NAME} == {"model-00001-of-00001.safetensors"}


def repo(*paths: str) -> list:
    stage_model = load_stage_model()
    return [stage_model.RepoFile(path, 1, None) for path in paths]


@pytest.mark.parametrize(
    ("paths", "skipped"),
    [
        # Sharded safetensors beside PyTorch, Llama's original/ and Mistral's consolidated copies.
        (
            ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "pytorch_model-00001.bin",
             "original/consolidated.00.pth", "original/tokenizer.model", "consolidated.safetensors", "tf_model.h5",
             "training_args.bin", "tokenizer.json"],
            ["pytorch_model-00001.bin", "original/consolidated.00.pth", "original/tokenizer.model",
             "consolidated.safetensors", "tf_model.h5", "training_args.bin"],
        ),
        # A Mistral-format repository: its consolidated.safetensors are the weights.
        (["consolidated.safetensors", "params.json", "tekken.json"], []),
        # No safetensors at the top: vLLM loads *.bin, so nothing is skipped.
        (["pytorch_model.bin", "config.json", "original/x.pth"], []),
        # Safetensors only in a subdirectory are not what vLLM loads from the model directory.
        (["sub/model.safetensors", "pytorch_model.bin"], []),
    ],
    ids=["sharded-with-copies", "mistral-only", "bin-only", "nested-safetensors"],
)
def test_duplicate_weights(paths, skipped):
    stage_model = load_stage_model()
    assert [f.path for f in stage_model.duplicate_weights(repo(*paths))] == skipped


def test_select_files():
    stage_model = load_stage_model()
    files = repo("model.safetensors", "pytorch_model.bin", "config.json", "docs/a.md", "docs/b.md")

    def chosen(allow, ignore):
        selected, skipped = stage_model.select_files(files, allow, ignore)
        return [f.path for f in selected], [f.path for f in skipped]

    assert chosen([], []) == (["model.safetensors", "config.json", "docs/a.md", "docs/b.md"], ["pytorch_model.bin"])
    assert chosen(["*.bin", "*.json"], []) == (["pytorch_model.bin", "config.json"], [])
    assert chosen([], ["docs/"]) == (["model.safetensors", "config.json"], ["pytorch_model.bin"])
    assert chosen(["docs/*"], ["*b.md"]) == (["docs/a.md"], [])


@pytest.mark.parametrize("path", ["plain.json", "we[ir]d*name?.bin", "dir/[x].safetensors"])
def test_literal_pattern_matches_only_its_path(path):
    import fnmatch

    pattern = load_stage_model().literal_pattern(path)
    assert fnmatch.fnmatch(path, pattern)
    assert not fnmatch.fnmatch(path + "x", pattern)
    assert not fnmatch.fnmatch("we[ir]dXnameY.bin", pattern) or path == "we[ir]dXnameY.bin"


# -- bounded and observable --------------------------------------------------------------


def test_stalled_hub_ends_the_run_with_exit_4(run_stage, hub, target, model_files):
    hub.stall_file(MODEL_ID, REVISION, BIG_SHARD, after_bytes=10 * 1024)

    started = time.monotonic()
    result = run_stage("--stall-timeout", "3")
    elapsed = time.monotonic() - started

    print(f"stalled run ended after {elapsed:.1f} s (stall timeout 3 s)")
    assert result.returncode == 4, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"stage_model: error: {MODEL_ID}@{REVISION}: stalled: no byte arrived in {target}")
    assert "while downloading (--stall-timeout 3)" in last_line
    assert not (target / MARKER_NAME).exists()
    # What arrived stays for the next attempt, which resumes it.
    received = (target / (BIG_SHARD + ".incomplete")).stat().st_size
    assert 0 < received <= 10 * 1024

    hub.release_file(MODEL_ID, REVISION, BIG_SHARD)
    resumed = run_stage("--stall-timeout", "3")

    assert resumed.returncode == 0, resumed.stderr
    assert_complete_store(target, model_files)
    assert hub.downloads_of(BIG_SHARD)[-1].range == f"bytes={received}-"


def test_progress_lines_while_downloading(run_stage, hub, target, model_files):
    hub.pace_file(MODEL_ID, REVISION, BIG_SHARD, seconds=2.5)

    result = run_stage("--progress-interval", "0.5")

    assert result.returncode == 0, result.stderr
    total = f"{sum(len(content) for content in model_files.values()) / 1024:.1f} KiB"
    lines = [line for line in result.stdout.splitlines() if line.startswith("stage_model: progress: ")]
    assert lines, result.stdout
    pattern = re.compile(
        rf"stage_model: progress: (\d)/4 files, ([0-9.]+ (?:bytes|KiB)) of {re.escape(total)} \((\d+)%\), "
        r"[0-9.]+ (?:bytes|KiB|MiB)/s, ETA (?:\d+ s|unknown)"
    )
    assert all(pattern.fullmatch(line) for line in lines), lines
    percents = [int(pattern.fullmatch(line)[3]) for line in lines]
    assert percents == sorted(percents) and all(0 <= percent <= 100 for percent in percents)


def test_token_reaches_the_hub_only_from_the_environment(run_stage, hub, tmp_path, model_files):
    token = "ms-secret-token-0123456789"
    hub.add_model("acme/private-llm", REVISION, model_files, token=token)
    target = tmp_path / "private"

    result = run_stage(model_id="acme/private-llm", target=target, env_changes={"MODELSCOPE_API_TOKEN": token})

    assert result.returncode == 0, result.stderr
    private = [r for r in hub.requests if r.path.startswith("/api/v1/models/acme/private-llm")]
    assert private and all(r.authorization == f"Bearer {token}" for r in private)
    assert token not in " ".join(map(str, result.args))
    assert token not in result.stdout + result.stderr
    # Nor is it written anywhere: not beside the model, not in the clients' state directories.
    assert not any(token.encode() in path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())

    denied = run_stage(model_id="acme/private-llm", target=tmp_path / "denied")

    assert denied.returncode == 4, denied.stderr
    [error] = error_lines(denied)
    assert "access denied" in error and "MODELSCOPE_API_TOKEN" in error


@pytest.mark.parametrize(
    ("stall_timeout", "expected"),
    [
        (120, {"MODELSCOPE_DOWNLOAD_TIMEOUT": None, "MODELSCOPE_API_TIMEOUT": None, "HF_HUB_ETAG_TIMEOUT": None}),
        (30, {"MODELSCOPE_DOWNLOAD_TIMEOUT": "15", "MODELSCOPE_API_TIMEOUT": "15", "HF_HUB_ETAG_TIMEOUT": None}),
        (3, {"MODELSCOPE_DOWNLOAD_TIMEOUT": "1", "MODELSCOPE_API_TIMEOUT": "1", "HF_HUB_ETAG_TIMEOUT": "1"}),
    ],
)
def test_client_timeouts_follow_the_stall_timeout(monkeypatch, stall_timeout, expected):
    """Per-request timeouts at most half the stall timeout, never above the clients' defaults."""
    for name in [*expected, "TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "7")  # set by the user: kept

    load_stage_model().quiet_and_bounded_clients(stall_timeout)

    assert {name: os.environ.get(name) for name in expected} == expected
    assert os.environ["HF_HUB_DOWNLOAD_TIMEOUT"] == "7"
    assert os.environ["TQDM_DISABLE"] == os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"

# -- --keep-revisions -------------------------------------------------------------------


def stage_revision(model_root: Path, revision: str, completed_at: str, model_id: str = MODEL_ID) -> Path:
    """A complete revision as an earlier run leaves it: files and a marker."""
    directory = model_root / revision
    files = {"config.json": b"{}", "model.safetensors": os.urandom(2048)}
    write_files(directory, files)
    marker = {
        "modelId": model_id,
        "revision": revision,
        "files": len(files),
        "bytes": sum(len(content) for content in files.values()),
        "completedAt": completed_at,
    }
    (directory / MARKER_NAME).write_text(json.dumps(marker))
    return directory


def revisions_on_disk(model_root: Path) -> set:
    """Revisions under model_root that hold a marker, as paths relative to it."""
    return {
        marker.parent.relative_to(model_root).as_posix()
        for marker in model_root.rglob(MARKER_NAME)
        if ".modelscope" not in marker.parts
    }


def removal_lines(result) -> list:
    return [line for line in result.stdout.splitlines() if line.startswith("stage_model: removed ")]


def removal_line(model_root: Path, revision: str, keep: int) -> str:
    """The line that logs the removal of a revision, taken before it is removed."""
    size = sum(
        os.lstat(os.path.join(directory, name)).st_size
        for directory, _, names in os.walk(model_root / revision)
        for name in names
    )
    assert 1024 <= size < 1024 * 1024
    return f"stage_model: removed {MODEL_ID}@{revision} ({size / 1024:.1f} KiB) to keep {keep} revisions"


@pytest.mark.parametrize(("keep", "kept_others"), [(2, {"v0.9"}), (3, {"v0.9", "v0.8"})])
def test_keep_revisions_removes_the_oldest_before_staging(run_stage, target, model_files, keep, kept_others):
    model_root = target.parent
    for revision, month in (("v0.7", 1), ("v0.9", 3), ("v0.8", 2)):
        stage_revision(model_root, revision, f"2026-0{month}-01T00:00:00Z")
    removed = {"v0.7", "v0.8", "v0.9"} - kept_others
    expected_lines = sorted(removal_line(model_root, revision, keep) for revision in removed)

    result = run_stage("--keep-revisions", str(keep))

    assert result.returncode == 0, result.stderr
    assert_complete_store(target, model_files)
    assert revisions_on_disk(model_root) == {REVISION, *kept_others}
    assert not any((model_root / revision).exists() for revision in removed)
    lines = removal_lines(result)
    assert sorted(lines) == expected_lines
    # Old revisions go before the download starts, so they free room for it.
    stdout = result.stdout.splitlines()
    assert max(stdout.index(line) for line in lines) < next(
        index for index, line in enumerate(stdout) if line.startswith("stage_model: staging ")
    )


def test_keep_revisions_on_a_complete_target_removes_without_contacting_the_hub(run_stage, hub, target):
    model_root = target.parent
    stage_revision(model_root, REVISION, "2026-05-01T00:00:00Z")
    stage_revision(model_root, "v0.8", "2026-03-01T00:00:00Z")
    stage_revision(model_root, "v0.9", "2026-04-01T00:00:00Z")

    result = run_stage("--keep-revisions", "2")

    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stdout
    assert hub.requests == []
    assert revisions_on_disk(model_root) == {REVISION, "v0.9"}
    assert read_marker_file(target)["completedAt"] == "2026-05-01T00:00:00Z"


def test_keep_revisions_on_a_rollback_keeps_the_newest_other(run_stage, hub, target):
    # The target is an older revision, complete from before; the server runs the newest.
    model_root = target.parent
    stage_revision(model_root, REVISION, "2026-01-01T00:00:00Z")
    stage_revision(model_root, "v1.1", "2026-02-01T00:00:00Z")
    stage_revision(model_root, "v1.2", "2026-03-01T00:00:00Z")
    expected_lines = [removal_line(model_root, "v1.1", 2)]

    result = run_stage("--keep-revisions", "2")

    assert result.returncode == 0, result.stderr
    assert revisions_on_disk(model_root) == {REVISION, "v1.2"}
    assert removal_lines(result) == expected_lines
    assert "already complete" in result.stdout
    assert read_marker_file(target)["completedAt"] == "2026-01-01T00:00:00Z"
    assert hub.requests == []


def test_keep_revisions_leaves_partial_foreign_and_outside_directories(run_stage, tmp_path, target, model_files):
    model_root = target.parent
    oldest = stage_revision(model_root, "v0.1", "2026-01-01T00:00:00Z")
    stage_revision(model_root, "v0.2", "2026-02-01T00:00:00Z")
    write_files(model_root / "v0.3", {"model.safetensors.incomplete": b"x" * 100})
    untouched = {
        # a download in progress, or one that failed: no marker
        "partial": model_root / "v0.3",
        # markers that do not describe the directory they are in
        "other-model": stage_revision(model_root, "v0.4", "2020-01-01T00:00:00Z", model_id="acme/other-llm"),
        "renamed-copy": stage_revision(model_root, "v0.5", "2020-01-01T00:00:00Z").rename(model_root / "v0.5-copy"),
        "bad-time": stage_revision(model_root, "v0.6", "yesterday"),
        "bad-json": stage_revision(model_root, "v0.7", "2020-01-01T00:00:00Z"),
        # another model beside this one
        "sibling-model": stage_revision(
            target.parents[1] / "other-llm", "v0.1", "2020-01-01T00:00:00Z", model_id="acme/other-llm"
        ),
    }
    (model_root / "v0.7" / MARKER_NAME).write_text('{"modelId": "acme/tiny-llm", "revis')
    # A complete old revision outside the model root, linked from inside it and from a
    # revision that is removed.
    outside = stage_revision(tmp_path / "elsewhere", "v0.0", "2020-01-01T00:00:00Z")
    (model_root / "v0.0").symlink_to(outside, target_is_directory=True)
    (oldest / "linked-out").symlink_to(outside, target_is_directory=True)
    before = {path: files_under(path) for path in [*untouched.values(), outside]}
    expected_lines = [removal_line(model_root, "v0.1", 2)]

    result = run_stage("--keep-revisions", "2")

    assert result.returncode == 0, result.stderr
    assert removal_lines(result) == expected_lines
    assert not oldest.exists()
    assert (model_root / "v0.2" / MARKER_NAME).exists()
    assert {path: files_under(path) for path in before} == before
    assert (model_root / "v0.0").is_symlink()
    assert_complete_store(target, model_files)


def test_keep_revisions_with_nested_revision_names(run_stage, hub, tmp_path, model_files):
    model_root = tmp_path / "models" / MODEL_ID
    target = model_root / "release" / "v2.0"
    hub.add_model(MODEL_ID, "release/v2.0", model_files)
    stage_revision(model_root, "release/v1.0", "2026-01-01T00:00:00Z")
    stage_revision(model_root, "hotfix/v1.0.1", "2026-02-01T00:00:00Z")
    stage_revision(model_root, "release/v1.1", "2026-03-01T00:00:00Z")
    expected_lines = sorted(removal_line(model_root, revision, 2) for revision in ("hotfix/v1.0.1", "release/v1.0"))

    result = run_stage("--keep-revisions", "2", revision="release/v2.0", target=target)

    assert result.returncode == 0, result.stderr
    assert revisions_on_disk(model_root) == {"release/v2.0", "release/v1.1"}
    assert sorted(removal_lines(result)) == expected_lines
    assert not (model_root / "hotfix").exists()  # emptied parents go too
    assert read_marker_file(target)["revision"] == "release/v2.0"


@pytest.mark.parametrize("keep_args", [[], ["--keep-revisions", "0"]], ids=["default", "zero"])
def test_keep_revisions_zero_keeps_every_revision(run_stage, target, keep_args):
    model_root = target.parent
    for month in range(1, 5):
        stage_revision(model_root, f"v0.{month}", f"2026-0{month}-01T00:00:00Z")

    result = run_stage(*keep_args)

    assert result.returncode == 0, result.stderr
    assert revisions_on_disk(model_root) == {REVISION, "v0.1", "v0.2", "v0.3", "v0.4"}
    assert removal_lines(result) == []


def test_keep_one_revision_is_refused(run_stage, hub, target):
    model_root = target.parent
    stage_revision(model_root, "v0.9", "2026-01-01T00:00:00Z")

    result = run_stage("--keep-revisions", "1")

    assert result.returncode == 2
    assert "--keep-revisions: must be 0 (keep every revision) or at least 2, got 1" in result.stderr
    assert "running server" in result.stderr
    assert hub.requests == []
    assert revisions_on_disk(model_root) == {"v0.9"}


def test_keep_revisions_needs_a_target_named_after_the_revision(run_stage, hub, tmp_path):
    result = run_stage("--keep-revisions", "2", target=tmp_path / "models" / MODEL_ID / "current")

    assert result.returncode == 2
    assert "--keep-revisions needs a --target that ends with the revision" in result.stderr
    assert hub.requests == []


@pytest.mark.parametrize(
    ("target", "revision", "model_root"),
    [
        ("/models/acme/m/v1.0", "v1.0", "/models/acme/m"),
        ("/models/acme/m/v1.0/", "v1.0", "/models/acme/m"),
        ("/models/acme/m/release/v1.0", "release/v1.0", "/models/acme/m"),
        ("/models/acme/m/v1.0", "release/v1.0", None),
        ("/models/acme/m/other", "v1.0", None),
        ("/v1.0", "v1.0", None),
        ("/models/acme/m/v1.0", "../v1.0", None),
        ("/models/acme/m/v1.0", "release//v1.0", None),
    ],
)
def test_model_root_of(target, revision, model_root):
    assert load_stage_model().model_root_of(target, revision) == model_root


# -- a revision that moves ------------------------------------------------------------------


def moved_files(model_files: dict) -> dict:
    """The files of a newer commit: the same names and sizes, other bytes."""
    return {path: bytes(b ^ 0x5A for b in content) for path, content in model_files.items()}


def assert_marker_records_the_commit(run_stage, hub, target, model_files, commit: str) -> None:
    result = run_stage()
    assert result.returncode == 0, result.stderr
    assert read_marker_file(target)["commit"] == commit
    assert f"{REVISION} names commit {commit}" in result.stdout
    assert STAGING_NAME not in files_under(target)


def assert_a_retry_after_upstream_moved_refuses_to_mix(run_stage, hub, target, model_files, commit: str) -> None:
    """An attempt fails part-way; upstream moves; the next attempt stops instead of fetching the
    rest from the new commit, and says which commits and what to do."""
    hub.fail_file(MODEL_ID, REVISION, SUBDIR_SHARD)
    assert run_stage().returncode == 4
    kept = files_under(target)
    new_commit = hub.move_branch(MODEL_ID, REVISION, moved_files(model_files))
    downloads_before = len(hub.downloads_of(SUBDIR_SHARD))

    result = run_stage()

    assert result.returncode == 6, result.stderr
    [error] = error_lines(result)
    assert f"upstream moved: {REVISION} now names commit {new_commit}, but the files in {target} come from commit {commit}" in error
    assert f"Pin the revision to a commit ({commit} for these weights, {new_commit} for the new ones" in error
    assert len(hub.downloads_of(SUBDIR_SHARD)) == downloads_before
    assert files_under(target) == kept and not (target / MARKER_NAME).exists()


def assert_a_repair_after_upstream_moved_refuses_to_mix(run_stage, hub, target, model_files, commit: str) -> None:
    """A complete store loses a file; upstream moved meanwhile: the repair stops, nothing is fetched."""
    assert run_stage().returncode == 0
    (target / BIG_SHARD).unlink()
    new_commit = hub.move_branch(MODEL_ID, REVISION, moved_files(model_files))

    result = run_stage()

    assert result.returncode == 6, result.stderr
    [error] = error_lines(result)
    assert f"now names commit {new_commit}, but the files in {target} come from commit {commit}" in error
    assert hub.downloads_of(BIG_SHARD)[1:] == []
    # Pinned to the commit the store holds, the repair goes on in its own directory.
    assert not (target / BIG_SHARD).exists()


def test_the_marker_records_the_commit_the_revision_named(run_stage, hub, target, model_files):
    commit = hub.add_model(MODEL_ID, REVISION, model_files)
    assert_marker_records_the_commit(run_stage, hub, target, model_files, commit)
    # Once before the listing, once after the download: modelscope fetches by name, not by commit.
    assert [r.query for r in hub.requests if r.path == f"/api/v1/models/{MODEL_ID}/commits"] == 2 * [
        {"Ref": REVISION, "PageNumber": "1", "PageSize": "1"}
    ]


def test_a_retry_after_upstream_moved_refuses_to_mix(run_stage, hub, target, model_files):
    commit = hub.add_model(MODEL_ID, REVISION, model_files)
    assert_a_retry_after_upstream_moved_refuses_to_mix(run_stage, hub, target, model_files, commit)


def test_a_repair_after_upstream_moved_refuses_to_mix(run_stage, hub, target, model_files):
    commit = hub.add_model(MODEL_ID, REVISION, model_files)
    assert_a_repair_after_upstream_moved_refuses_to_mix(run_stage, hub, target, model_files, commit)


def test_a_move_during_the_download_is_found(run_stage, hub, target, model_files):
    # Every file's download starts at once (4 workers); the big one takes 2 s, and upstream moves
    # after 1 s. The client fetches by name, so the script asks again once the files are in.
    commit = hub.add_model(MODEL_ID, REVISION, model_files)
    hub.pace_file(MODEL_ID, REVISION, BIG_SHARD, 2.0)
    moved: dict = {}
    mover = threading.Timer(1.0, lambda: moved.setdefault("commit", hub.move_branch(MODEL_ID, REVISION, model_files)))
    mover.start()
    try:
        result = run_stage()
    finally:
        mover.join()
    new_commit = moved["commit"]
    assert result.returncode == 6, result.stderr
    [error] = error_lines(result)
    assert f"now names commit {new_commit}, but the files in {target} come from commit {commit}" in error
    assert not (target / MARKER_NAME).exists()


def test_a_pinned_commit_is_staged_and_recorded(run_stage, hub, tmp_path, model_files):
    commit = hub.add_model(MODEL_ID, REVISION, model_files)
    hub.move_branch(MODEL_ID, REVISION, moved_files(model_files))  # the tag moved on; the commit did not
    target = tmp_path / "models" / MODEL_ID / commit

    result = run_stage(revision=commit, target=target)

    assert result.returncode == 0, result.stderr
    assert {path: content for path, content in files_under(target).items() if path != MARKER_NAME} == model_files
    assert read_marker_file(target)["commit"] == commit


def test_newest_commit_reads_the_first_commit_id():
    stage_model = load_stage_model()
    commit = "A" * 40
    assert stage_model.newest_commit({"Data": {"Commit": [{"Id": commit}, {"Id": "b" * 40}]}}) == commit.lower()
    for body in ({"Data": {"Commit": []}}, {"Data": None}, [], {"Data": {"Commit": [{"Id": "abc"}]}}):
        assert stage_model.newest_commit(body) is None


ADAPTER_ID = "acme/tiny-llm-sql-lora"
ADAPTER_REVISION = "v2"
ADAPTER_FILES = {
    "adapter_config.json": json.dumps({"r": 8, "target_modules": ["q_proj", "v_proj"]}).encode(),
    "adapter_model.safetensors": os.urandom(12 * 1024),
}


def test_adapters_are_staged_after_the_model_each_with_its_marker(run_stage, hub, target, model_files, tmp_path):
    hub.add_model(ADAPTER_ID, ADAPTER_REVISION, ADAPTER_FILES)
    adapter_target = tmp_path / "models" / "adapters" / "sql" / ADAPTER_REVISION

    result = run_stage("--keep-revisions", "2", "--adapter", ADAPTER_ID, ADAPTER_REVISION, str(adapter_target))

    assert result.returncode == 0, result.stderr
    assert_complete_store(target, model_files)
    assert files_under(adapter_target) == {**ADAPTER_FILES, MARKER_NAME: (adapter_target / MARKER_NAME).read_bytes()}
    marker = read_marker_file(adapter_target)
    assert (marker["modelId"], marker["revision"], marker["files"]) == (ADAPTER_ID, ADAPTER_REVISION, 2)
    assert f"staged {ADAPTER_ID}@{ADAPTER_REVISION}: 2 files" in result.stdout

    hub.requests.clear()
    again = run_stage("--adapter", ADAPTER_ID, ADAPTER_REVISION, str(adapter_target))
    assert again.returncode == 0, again.stderr
    assert hub.requests == []


def test_a_missing_adapter_fails_the_run_and_leaves_it_unmarked(run_stage, hub, target, model_files, tmp_path):
    adapter_target = tmp_path / "models" / "adapters" / "sql" / ADAPTER_REVISION

    result = run_stage("--adapter", ADAPTER_ID, ADAPTER_REVISION, str(adapter_target))

    assert result.returncode == 3, result.stderr
    assert_complete_store(target, model_files)
    assert not (adapter_target / MARKER_NAME).exists()
    assert ADAPTER_ID in result.stderr


def test_adapter_directories_must_end_with_their_revision_to_keep_revisions(run_stage, tmp_path):
    result = run_stage("--keep-revisions", "2", "--adapter", ADAPTER_ID, ADAPTER_REVISION, str(tmp_path / "sql"))

    assert result.returncode == 2
    assert "--adapter's DIR to end with its revision v2" in result.stderr
