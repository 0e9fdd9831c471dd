"""Run components/stage_model.py with --source huggingface, as the staging Job does.

The real huggingface_hub client does the downloading; FakeHuggingFaceHub stands in for the
Hub, reached through --endpoint.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_huggingface_hub import FakeHuggingFaceHub
# model_files and target are fixtures, shared with test_stage_model.
from test_stage_model import (  # noqa: F401
    BIG_SHARD,
    MARKER_NAME,
    MODEL_ID,
    REPO_ROOT,
    REVISION,
    SUBDIR_SHARD,
    SUBPROCESS_TIMEOUT,
    assert_a_repair_after_upstream_moved_refuses_to_mix,
    assert_a_retry_after_upstream_moved_refuses_to_mix,
    assert_marker,
    assert_marker_records_the_commit,
    error_lines,
    files_under,
    model_files,
    stage_runner,
    read_marker_file,
    target,
    write_files,
)

HF_STATE_DIR = ".cache/huggingface/"


@pytest.fixture
def hub(model_files):
    with FakeHuggingFaceHub() as fake_hub:
        fake_hub.add_model(MODEL_ID, REVISION, model_files)
        yield fake_hub


@pytest.fixture
def run_stage(tmp_path, hub, target):
    """Run the script in a subprocess with --source huggingface; keyword arguments as in test_stage_model."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")

    return stage_runner(sys.executable, env, hub, target, ("--source", "huggingface"))


def model_files_under(target: Path) -> dict:
    """The files a server would load: without the marker and huggingface_hub's .cache/huggingface."""
    return {
        path: content
        for path, content in files_under(target).items()
        if path != MARKER_NAME and not path.startswith(HF_STATE_DIR)
    }


def assert_complete_store(target: Path, model_files: dict, model_id: str = MODEL_ID) -> None:
    assert model_files_under(target) == model_files
    # The Hub gives a sha256 for LFS files only; the others are recorded with their size.
    assert_marker(target, model_files, "huggingface", model_id, hashed=lambda path: path.endswith(".safetensors"))


def test_fresh_download_stages_every_file_and_writes_marker(run_stage, hub, target, model_files):
    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert "using huggingface_hub 0.35.3" in result.stdout
    assert_complete_store(target, model_files)
    commit = hub.model(MODEL_ID, REVISION).commit
    assert read_marker_file(target)["commit"] == commit
    # The script's listing (with sizes and hashes), then snapshot_download's own, at the commit.
    assert [(r.path, r.query) for r in hub.listings()] == [
        (f"/api/models/{MODEL_ID}/revision/{REVISION}", {"blobs": "True"}),
        (f"/api/models/{MODEL_ID}/revision/{commit}", {}),
    ]
    for path in model_files:
        [download] = hub.downloads_of(path)
        assert download.path == f"/{MODEL_ID}/resolve/{commit}/{path}"
    assert f"staged {MODEL_ID}@{REVISION}: 4 files" in result.stdout


def test_rerun_on_complete_store_sends_no_request(run_stage, hub, target):
    assert run_stage().returncode == 0
    marker_before = (target / MARKER_NAME).read_bytes()
    hub.requests.clear()

    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stdout
    assert hub.requests == []
    assert (target / MARKER_NAME).read_bytes() == marker_before


def test_truncated_file_is_fetched_again(run_stage, hub, target, model_files):
    assert run_stage().returncode == 0
    (target / SUBDIR_SHARD).write_bytes(model_files[SUBDIR_SHARD][:7])
    hub.requests.clear()

    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert f"1 of 4 files need fetching again: {SUBDIR_SHARD} (7 of {20 * 1024} bytes)" in result.stdout
    assert_complete_store(target, model_files)
    assert [path for path in model_files if hub.downloads_of(path)] == [SUBDIR_SHARD]


def test_verify_refetches_a_corrupted_lfs_file(run_stage, hub, target, model_files):
    assert run_stage().returncode == 0
    (target / BIG_SHARD).write_bytes(b"\0" * len(model_files[BIG_SHARD]))
    hub.requests.clear()

    result = run_stage("--verify")

    assert result.returncode == 0, result.stderr
    assert "verified the sha256 of 2 files" in result.stdout
    assert "2 without a recorded sha256 were checked by size only" in result.stdout
    assert_complete_store(target, model_files)
    assert [path for path in model_files if hub.downloads_of(path)] == [BIG_SHARD]


def test_duplicate_weights_are_skipped_beside_safetensors(run_stage, hub, tmp_path, model_files):
    duplicates = {"pytorch_model.bin": os.urandom(2000), "original/consolidated.00.pth": os.urandom(1000)}
    hub.add_model("acme/mixed", REVISION, {**model_files, **duplicates})
    target = tmp_path / "mixed"

    result = run_stage(model_id="acme/mixed", target=target)

    assert result.returncode == 0, result.stderr
    assert model_files_under(target) == model_files
    assert all(hub.downloads_of(path) == [] for path in duplicates)
    assert "skipping 2 files (2.9 KiB)" in result.stdout


def test_hf_token_reaches_the_hub_only_from_the_environment(run_stage, hub, tmp_path, model_files):
    token = "hf_secrettoken0123456789"
    hub.add_model("acme/private-llm", REVISION, model_files, token=token)
    target = tmp_path / "private"

    result = run_stage(model_id="acme/private-llm", target=target, env_changes={"HF_TOKEN": token})

    assert result.returncode == 0, result.stderr
    assert_complete_store(target, model_files, "acme/private-llm")
    private = [r for r in hub.requests if "/acme/private-llm/" in r.path]
    assert private and all(r.authorization == f"Bearer {token}" for r in private)
    assert token not in " ".join(map(str, result.args))
    assert token not in result.stdout + result.stderr
    # Nor is it written anywhere: not beside the model, not in the clients' state directories.
    assert not any(token.encode() in path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())

    denied = run_stage(model_id="acme/private-llm", target=tmp_path / "denied")

    assert denied.returncode == 3, denied.stderr
    [error] = error_lines(denied)
    assert "not found" in error and "HF_TOKEN" in error


@pytest.mark.parametrize(
    ("model_id", "revision"),
    [("acme/no-such-model", REVISION), (MODEL_ID, "no-such-revision")],
    ids=["unknown-model", "unknown-revision"],
)
def test_unknown_model_or_revision_exits_3(run_stage, hub, target, model_id, revision):
    result = run_stage(model_id=model_id, revision=revision)

    assert result.returncode == 3, result.stderr
    [error] = error_lines(result)
    assert f"{model_id}@{revision}: model or revision not found" in error
    assert len(hub.listings()) == 1
    assert not (target / MARKER_NAME).exists()


def test_file_failing_with_server_error_exits_4_without_marker(run_stage, hub, target):
    hub.fail_file(MODEL_ID, REVISION, SUBDIR_SHARD)

    result = run_stage()

    assert result.returncode == 4, result.stderr
    [error] = error_lines(result)
    assert f"{MODEL_ID}@{REVISION}: download failed: HTTPError: 500 Server Error" in error
    # huggingface_hub retries a server error five times, waiting 1, 2, 4, 8 and 8 s
    # (utils/_http.py http_backoff); no setting changes that.
    assert len([r for r in hub.requests if r.path.endswith(SUBDIR_SHARD)]) == 6
    assert not (target / MARKER_NAME).exists()


def test_stalled_hub_ends_the_run_with_exit_4(run_stage, hub, target, model_files):
    hub.stall_file(MODEL_ID, REVISION, BIG_SHARD, after_bytes=10 * 1024)

    started = time.monotonic()
    result = run_stage("--stall-timeout", "3")
    elapsed = time.monotonic() - started

    print(f"stalled run with huggingface_hub ended after {elapsed:.1f} s (stall timeout 3 s)")
    assert result.returncode == 4, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"stage_model: error: {MODEL_ID}@{REVISION}: stalled: no byte arrived in {target}")
    assert not (target / MARKER_NAME).exists()

    hub.model(MODEL_ID, REVISION).stalling.clear()
    resumed = run_stage("--stall-timeout", "3")

    assert resumed.returncode == 0, resumed.stderr
    assert_complete_store(target, model_files)


def test_leftover_partial_download_fails_verification_with_5(run_stage, target):
    # An earlier run's partial file of a file this selection leaves out.
    write_files(target, {f"{HF_STATE_DIR}download/{BIG_SHARD}.0123abcd.incomplete": b"x" * 100})

    result = run_stage("--allow-pattern", "*.json")

    assert result.returncode == 5, result.stderr
    [error] = error_lines(result)
    assert "partial downloads left" in error


def test_importing_the_module_does_not_import_huggingface_hub():
    check = "import sys, components.stage_model; print(sorted(m for m in sys.modules if 'huggingface' in m))"
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_retry_after_upstream_moved_refuses_to_mix(run_stage, hub, target, model_files):
    commit = hub.model(MODEL_ID, REVISION).commit
    assert_a_retry_after_upstream_moved_refuses_to_mix(run_stage, hub, target, model_files, commit)


def test_a_repair_after_upstream_moved_refuses_to_mix(run_stage, hub, target, model_files):
    commit = hub.model(MODEL_ID, REVISION).commit
    assert_a_repair_after_upstream_moved_refuses_to_mix(run_stage, hub, target, model_files, commit)
