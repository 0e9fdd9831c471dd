"""Run components/stage_model.py with modelscope 1.30.0, as the Job does with install_client
false in a vLLM image of that time (no modelscope-hub package), against the local fake hub.

That client reaches a hub only as https:// + MODELSCOPE_DOMAIN, so the hub serves TLS here
with a certificate made for the test, trusted through REQUESTS_CA_BUNDLE. The interpreter
comes from the virtual environment that .ci/run creates beside the checkout.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from fake_modelscope_hub import FakeModelScopeHub, self_signed_certificate
# model_files and target are fixtures, shared with test_stage_model.
from test_stage_model import (  # noqa: F401
    BIG_SHARD,
    DUPLICATES,
    LOADED,
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
    load_stage_model,
    model_files,
    stage_runner,
    target,
    write_files,
)

OLD_CLIENT_VENV = REPO_ROOT / ".venv-modelscope-1.30"
OLD_CLIENT_PYTHON = OLD_CLIENT_VENV / "bin" / "python"
OLD_CLIENT_VERSION = "1.30.0"
CREATE_OLD_CLIENT_VENV = f"run .ci/run (or only its {OLD_CLIENT_VENV.name} lines, from {REPO_ROOT})"
# What 1.30.0 keeps inside local_dir besides the model files (see stage_model.py).
CLIENT_INDEX_FILES = {".msc", ".mv"}
CLIENT_DOWNLOAD_DIR = "._____temp"


@pytest.fixture(scope="session")
def old_client_problem() -> str:
    """Why the 1.30.0 interpreter cannot be used, or "" when it can."""
    if not OLD_CLIENT_PYTHON.exists():
        return f"{OLD_CLIENT_PYTHON} is missing: {CREATE_OLD_CLIENT_VENV}"
    probe = (
        "import importlib.util, modelscope; "
        "print(modelscope.__version__, importlib.util.find_spec('modelscope_hub') is None)"
    )
    result = subprocess.run(
        [str(OLD_CLIENT_PYTHON), "-c", probe], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )
    if result.stdout.split() != [OLD_CLIENT_VERSION, "True"]:
        return (
            f"{OLD_CLIENT_VENV} must hold modelscope {OLD_CLIENT_VERSION} without modelscope-hub, found "
            f"{result.stdout.strip() or result.stderr.strip()[-500:]}: delete it and {CREATE_OLD_CLIENT_VENV}"
        )
    return ""


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def hub(tls, model_files):
    with FakeModelScopeHub(tls=tls) as fake_hub:
        fake_hub.add_model(MODEL_ID, REVISION, model_files)
        yield fake_hub


@pytest.fixture
def run_stage(tmp_path, tls, hub, target, old_client_problem):
    """Run the script with the 1.30.0 interpreter; keyword arguments as in test_stage_model."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("MODELSCOPE_", "PYTHON"))}
    env.update(
        MODELSCOPE_CACHE=str(tmp_path / "modelscope-cache"),
        MODELSCOPE_HOME=str(tmp_path / "modelscope-home"),
        REQUESTS_CA_BUNDLE=str(tls.certificate),
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )

    if old_client_problem:
        pytest.fail(old_client_problem, pytrace=False)
    return stage_runner(str(OLD_CLIENT_PYTHON), env, hub, target)


def model_files_under(target: Path) -> dict:
    """The files a server would load: without the marker and 1.30.0's own bookkeeping."""
    on_disk = files_under(target)
    return {
        path: content
        for path, content in on_disk.items()
        if path != MARKER_NAME and path not in CLIENT_INDEX_FILES and not path.startswith(CLIENT_DOWNLOAD_DIR + "/")
    }


def assert_complete_store(target: Path, model_files: dict) -> None:
    assert model_files_under(target) == model_files
    assert_marker(target, model_files)


def test_fresh_download_stages_every_file_and_writes_marker(run_stage, hub, target, model_files):
    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert f"using modelscope {OLD_CLIENT_VERSION}, hub {hub.endpoint} (MODELSCOPE_DOMAIN)" in result.stdout
    assert_complete_store(target, model_files)
    # 1.30.0 writes its file index into the target; the marker does not count it.
    assert CLIENT_INDEX_FILES <= set(files_under(target))
    assert f"staged {MODEL_ID}@{REVISION}: 4 files" in result.stdout
    # It probes the repository and checks the revision before listing: once for the script,
    # which chooses the files, and once more inside snapshot_download, which fetches them. The
    # script asks which commit the revision names before its listing and again after the download.
    model_path = f"/api/v1/models/{MODEL_ID}"
    check, listing = [model_path, f"{model_path}/revisions"], [f"{model_path}/repo/files"]
    commit = [model_path, f"{model_path}/commits"]
    assert [r.path for r in hub.requests if r.path.startswith(model_path) and "FilePath" not in r.query] == [
        *check, *commit, *listing, *check, *listing, *commit,
    ]
    for path in model_files:
        assert len(hub.downloads_of(path)) == 1, path


def test_rerun_on_complete_store_sends_no_request(run_stage, hub, target, model_files):
    assert run_stage().returncode == 0
    marker_before = (target / MARKER_NAME).read_bytes()
    hub.requests.clear()

    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert hub.requests == []
    assert "already complete" in result.stdout
    assert (target / MARKER_NAME).read_bytes() == marker_before


def test_partial_file_is_resumed_with_a_range_request(run_stage, hub, target, model_files):
    # 1.30.0 downloads into <target>/._____temp and continues what it finds there.
    received = len(model_files[BIG_SHARD]) // 2
    write_files(target, {f"{CLIENT_DOWNLOAD_DIR}/{BIG_SHARD}": model_files[BIG_SHARD][:received]})

    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert_complete_store(target, model_files)
    size = len(model_files[BIG_SHARD])
    assert [request.range for request in hub.downloads_of(BIG_SHARD)] == [f"bytes={received}-{size - 1}"]


def test_leftover_partial_file_fails_verification_with_5(run_stage, target, model_files):
    write_files(target, {f"{CLIENT_DOWNLOAD_DIR}/{BIG_SHARD}": model_files[BIG_SHARD][:100]})

    result = run_stage("--allow-pattern", "*.json")

    assert result.returncode == 5, result.stderr
    [error] = error_lines(result)
    assert f"partial downloads left in {target}: {CLIENT_DOWNLOAD_DIR}/{BIG_SHARD}" in error
    assert not (target / MARKER_NAME).exists()


@pytest.mark.parametrize(
    ("model_id", "revision", "requests_to_model"),
    # An unknown model fails the existence probe; an unknown revision fails the revision check.
    [("acme/no-such-model", REVISION, 1), (MODEL_ID, "no-such-revision", 2)],
    ids=["unknown-model", "unknown-revision"],
)
def test_unknown_model_or_revision_exits_3(run_stage, hub, target, model_id, revision, requests_to_model):
    result = run_stage(model_id=model_id, revision=revision)

    assert result.returncode == 3, result.stderr
    [error] = error_lines(result)
    assert f"{model_id}@{revision}" in error
    assert "not found" in error
    assert hub.listings() == []
    assert len([r for r in hub.requests if r.path.startswith("/api/v1/models/")]) == requests_to_model
    assert not (target / MARKER_NAME).exists()


def test_corrupted_file_exits_4_without_marker(run_stage, hub, target):
    hub.corrupt_file(MODEL_ID, REVISION, BIG_SHARD)

    result = run_stage()

    assert result.returncode == 4, result.stderr
    [error] = error_lines(result)
    assert "FileIntegrityError" in error and BIG_SHARD in error
    assert len(hub.downloads_of(BIG_SHARD)) == 1  # 1.30.0 does not retry a hash mismatch
    assert not (target / MARKER_NAME).exists()
    assert BIG_SHARD not in model_files_under(target)


def test_http_endpoint_is_refused_with_exit_2(run_stage, hub, target):
    result = run_stage(endpoint=f"http://{hub.domain}")

    assert result.returncode == 2, result.stderr
    [error] = error_lines(result)
    assert f"modelscope {OLD_CLIENT_VERSION} cannot use --endpoint http://{hub.domain}" in error
    assert "always connects with https://" in error
    assert hub.requests == []
    assert not (target / MARKER_NAME).exists()


def test_modelscope_dirs_default_to_beside_the_target(run_stage, tmp_path, target, model_files):
    home = tmp_path / "home"
    home.mkdir()

    result = run_stage(env_changes={"MODELSCOPE_CACHE": None, "MODELSCOPE_HOME": None, "HOME": str(home)})

    assert result.returncode == 0, result.stderr
    assert_complete_store(target, model_files)
    state_dir = target.parent / ".modelscope"
    assert (state_dir / "cache" / ".lock").is_dir()
    # 1.30.0 keeps its session under MODELSCOPE_CREDENTIALS_PATH, which the script points there.
    assert (state_dir / "home" / "credentials" / "session").is_file()
    assert list(home.iterdir()) == []


@pytest.mark.parametrize(
    ("endpoint", "domain"),
    [
        ("https://hub.example:8443", "hub.example:8443"),
        ("https://hub.example/", "hub.example"),
        ("HTTPS://mirror.example/modelscope/", "mirror.example/modelscope"),
        ("http://hub.example", None),
        ("https://", None),
        ("https://hub.example/?region=cn", None),
    ],
)
def test_endpoint_as_domain(endpoint, domain):
    stage_model = load_stage_model()
    client = stage_model.ClientSupport(OLD_CLIENT_VERSION, takes_endpoint=False, reads_token=False)
    if domain is not None:
        assert stage_model.endpoint_as_domain(endpoint, client, "m@r") == domain
    else:
        with pytest.raises(stage_model.StageError) as refused:
            stage_model.endpoint_as_domain(endpoint, client, "m@r")
        assert refused.value.exit_code == 2


# -- new behaviours with the old client ----------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_file_damaged_after_completion_is_fetched_again(run_stage, hub, target, model_files, damage):
    # 1.30.0 would take the truncated file as cached: its index (.msc) lists it.
    assert run_stage().returncode == 0
    shard = target / BIG_SHARD
    if damage == "truncated":
        shard.write_bytes(model_files[BIG_SHARD][:1000])
    else:
        shard.unlink()
    hub.requests.clear()

    result = run_stage()

    assert result.returncode == 0, result.stderr
    assert f"1 of 4 files need fetching again: {BIG_SHARD}" in result.stdout
    assert_complete_store(target, model_files)
    assert [path for path in model_files if hub.downloads_of(path)] == [BIG_SHARD]


def test_verify_refetches_a_corrupted_file(run_stage, hub, target, model_files):
    assert run_stage().returncode == 0
    (target / BIG_SHARD).write_bytes(b"\0" * len(model_files[BIG_SHARD]))
    hub.requests.clear()

    result = run_stage("--verify")

    assert result.returncode == 0, result.stderr
    assert f"{BIG_SHARD} (sha256 differs)" in result.stdout
    assert_complete_store(target, model_files)
    assert [path for path in model_files if hub.downloads_of(path)] == [BIG_SHARD]


def test_duplicate_weights_are_skipped_beside_safetensors(run_stage, hub, tmp_path):
    hub.add_model("acme/mixed", REVISION, {**LOADED, **DUPLICATES})
    target = tmp_path / "mixed"

    result = run_stage(model_id="acme/mixed", target=target)

    assert result.returncode == 0, result.stderr
    assert set(model_files_under(target)) == set(LOADED)
    assert all(hub.downloads_of(path) == [] for path in DUPLICATES)
    assert f"skipping {len(DUPLICATES)} files" in result.stdout


def test_stalled_hub_ends_the_run_with_exit_4(run_stage, hub, target, model_files):
    # 1.30.0 reads each chunk with a fixed 60 s timeout (hub/constants.py
    # API_FILE_DOWNLOAD_TIMEOUT): only the watchdog ends this within the test's time.
    hub.stall_file(MODEL_ID, REVISION, BIG_SHARD, after_bytes=10 * 1024)

    started = time.monotonic()
    result = run_stage("--stall-timeout", "3")
    elapsed = time.monotonic() - started

    print(f"stalled run with modelscope {OLD_CLIENT_VERSION} ended after {elapsed:.1f} s (stall timeout 3 s)")
    assert result.returncode == 4, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert f"{MODEL_ID}@{REVISION}: stalled: no byte arrived in {target}" in last_line
    assert not (target / MARKER_NAME).exists()
    # It reads 1 MiB chunks (API_FILE_DOWNLOAD_CHUNK_SIZE) and writes whole chunks, so of a
    # file that stops after 10 KiB the partial file may hold nothing yet.
    received = (target / CLIENT_DOWNLOAD_DIR / BIG_SHARD).stat().st_size
    assert received <= 10 * 1024

    hub.release_file(MODEL_ID, REVISION, BIG_SHARD)
    resumed = run_stage("--stall-timeout", "3")

    assert resumed.returncode == 0, resumed.stderr
    assert_complete_store(target, model_files)
    size = len(model_files[BIG_SHARD])
    assert hub.downloads_of(BIG_SHARD)[-1].range == f"bytes={received}-{size - 1}"


def test_progress_lines_while_downloading(run_stage, hub, target):
    hub.pace_file(MODEL_ID, REVISION, BIG_SHARD, seconds=2.5)

    result = run_stage("--progress-interval", "0.5")

    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("stage_model: progress: ")]
    assert lines, result.stdout
    assert all("/4 files, " in line and "/s, ETA " in line for line in lines)


def test_token_is_exchanged_for_a_session_by_the_client(run_stage, hub, tmp_path, model_files):
    # 1.30.0 sends no token with downloads; its HubApi.login() reads MODELSCOPE_API_TOKEN,
    # trades it for the m_session_id cookie, and the downloads carry that cookie.
    token = "ms-secret-token-0123456789"
    hub.add_model("acme/private-llm", REVISION, model_files, token=token)
    target = tmp_path / "models" / "acme" / "private-llm" / REVISION

    result = run_stage(model_id="acme/private-llm", target=target, env_changes={"MODELSCOPE_API_TOKEN": token})

    assert result.returncode == 0, result.stderr
    assert_complete_store_of(target, model_files, "acme/private-llm")
    [login] = [r for r in hub.requests if r.path == "/api/v1/login"]
    assert json.loads(login.body) == {"AccessToken": token}
    downloads = [r for r in hub.requests if r.query.get("FilePath")]
    assert downloads and all("m_session_id=session-" in (r.cookie or "") for r in downloads)
    assert token not in " ".join(map(str, result.args))
    assert token not in result.stdout + result.stderr
    # The session is kept in a private directory that is gone with the process, not beside the model.
    assert not any(token in path.read_bytes().decode("latin-1") for path in tmp_path.rglob("*") if path.is_file())

    denied = run_stage(model_id="acme/private-llm", target=tmp_path / "denied")

    assert denied.returncode == 4, denied.stderr
    [error] = error_lines(denied)
    assert "access denied" in error and "MODELSCOPE_API_TOKEN" in error


def assert_complete_store_of(target: Path, model_files: dict, model_id: str) -> None:
    assert model_files_under(target) == model_files
    assert_marker(target, model_files, model_id=model_id)


def test_the_marker_records_the_commit_the_revision_named(run_stage, hub, target, model_files):
    commit = hub.add_model(MODEL_ID, REVISION, model_files)
    assert_marker_records_the_commit(run_stage, hub, target, model_files, commit)


def test_a_retry_after_upstream_moved_refuses_to_mix(run_stage, hub, target, model_files):
    commit = hub.add_model(MODEL_ID, REVISION, model_files)
    assert_a_retry_after_upstream_moved_refuses_to_mix(run_stage, hub, target, model_files, commit)
