"""Stage one revision of a model from ModelScope or Hugging Face into a directory on the shared volume.

Run by the model-staging Kubernetes Job:

    python stage_model.py --model-id OWNER/NAME --revision REV --target DIR
        [--source {modelscope,huggingface}] [--endpoint URL]
        [--allow-pattern GLOB ...] [--ignore-pattern GLOB ...] [--max-workers N]
        [--keep-revisions N] [--verify] [--stall-timeout SECONDS] [--progress-interval SECONDS]
        [--adapter OWNER/NAME REV DIR ...]

The target directory holds exactly one model revision. When every file is in place the
script writes MARKER_NAME there, last and atomically. The marker lists each staged file with
its size, and its sha256 where the hub gives one.

A later run that finds a marker for the same model and revision checks the files against it
without importing a hub client or touching the network: one stat per file (names and sizes).
When all are there it exits at once; a missing or truncated file is fetched again and the
marker rewritten. ``--verify`` also re-hashes every file against its recorded sha256 and
fetches again the ones that differ. A marker written before markers listed their files (no
``manifest``) still counts as complete when the directory holds the number of files and
bytes it records; it is then rewritten with the file list taken from the disk, so later runs
check each file (see manifest_of).

Without a marker the script lists the repository (one request to the hub's file listing),
chooses the files to stage, and hands the hub client only those that are not yet in place
with their listed size. Files already at their final path were moved there by the client
after its own checks (modelscope verifies size and sha256 before the move; huggingface_hub
checks the size), so they are not hashed again unless ``--verify`` is given.

Which files: ``--allow-pattern`` (only matching files) and ``--ignore-pattern`` (never these),
as globs on the path in the repository. Without allow patterns, a repository with
``*.safetensors`` weights at its top level is staged without the copies of the weights that
vLLM does not load beside them (see SKIPPED_BESIDE_SAFETENSORS); explicit allow patterns are
taken as the exact choice and nothing is skipped automatically (``--allow-pattern '*'``
stages every file).

While the hub client works, a watchdog follows the bytes on the target volume (the sizes of
all files under the target, partial files included). When they do not change for
``--stall-timeout`` seconds the run stops with exit code 4 and a last line naming the stall,
so the Job's next attempt resumes instead of waiting for its deadline. A progress line
(files and bytes done of the total, rate, ETA) is logged every ``--progress-interval``
seconds; the clients' own progress bars are turned off.

Commits: a revision may name a branch (or a tag, which can be moved), and so a commit that
changes upstream. Before listing, the script asks the hub which commit the revision names
(ModelScope: the newest entry of the revision's commit list; Hugging Face: the listing's own
``sha``), records it in STAGING_NAME before fetching anything, and writes it into the marker as
``commit``. huggingface_hub then downloads that commit; the ModelScope clients download by name,
so the script asks again after the download. Whenever the revision names another commit than
the one the files in the target came from (a retry after upstream moved, a repair of a store
whose branch moved since, a move during the download) it stops with exit code 6 rather than mix
two commits' files (see check_commit).

A run that dies part-way leaves no marker (or the old one, listing a file that is now
missing), and the next run resumes: the clients continue partial files with HTTP Range
requests (``<file>.incomplete`` beside the file with modelscope 1.40.2, files under
``<target>/._____temp`` with modelscope 1.30.0, ``<target>/.cache/huggingface/download``
with huggingface_hub).

Sources and clients:
    modelscope   modelscope 1.40.2 with the separate modelscope-hub package (0.5.1 tested), or
                 1.30.0, the generation the vLLM images of that time ship, without
                 modelscope-hub. What the installed client supports is read from it at run
                 time (see ClientSupport).
    huggingface  huggingface_hub (0.35.3 tested, the generation the vLLM 0.11.0 image ships),
                 huggingface_hub.snapshot_download.

Tokens come only from the environment and are read by the clients themselves, never printed:
MODELSCOPE_API_TOKEN (modelscope-hub sends it as a bearer token; modelscope 1.30.0 exchanges it
for a session cookie through its HubApi.login) and HF_TOKEN (huggingface_hub).

With ``--keep-revisions N`` (N >= 2), revisions live in ``<model root>/<revision>`` and the
target is one of them: before the target is staged, complete revisions of the same model
other than the target are removed, oldest first, until the target and at most N - 1 others
remain (see remove_old_revisions).

With ``--adapter OWNER/NAME REV DIR`` (repeatable), the same run then stages each LoRA adapter
repository into its own DIR the same way, each with its own marker, after the model: one
after the other, every one of its files (no allow or ignore patterns of the model's), with the
same --keep-revisions. The run succeeds only when the model and every adapter are complete;
the first that fails ends it with its exit code, and the next run resumes from there.

Exit codes:
    0  the store is complete (now, or already was)
    2  bad arguments (including an endpoint the installed client cannot reach), or the
       target holds the marker of another model or revision
    3  the model or revision does not exist on the hub
    4  the download failed (server errors, network errors, files that failed their
       hash check, access denied, no bytes for --stall-timeout seconds, ...)
    5  the client reported success but the files on disk do not form a complete store
    6  upstream moved: the revision (a branch or tag) now names another commit than the one the
       files in the target came from; staging on would mix the two (see check_commit)

Unless already set, MODELSCOPE_CACHE and MODELSCOPE_HOME (or HF_HOME) point into a
``.modelscope`` (``.huggingface``) directory beside the target (see use_writable_client_dirs).
"""

import argparse
import fnmatch
import hashlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

MARKER_NAME = ".modelstore-complete.json"
MARKER_FORMAT = 2  # 2: with "manifest", the list of files; 1 (no "format"): counts only

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_DOWNLOAD_FAILED = 4
EXIT_VERIFY_FAILED = 5
EXIT_UPSTREAM_MOVED = 6

STAGING_NAME = ".modelstore-staging.json"
"""Written before the first file is fetched, removed once the marker is: the commit the files in
the target come from, while the store is not complete (see check_commit)."""

SOURCES = ("modelscope", "huggingface")

# Files the clients write while a download is in flight: ``.incomplete`` for a single
# stream (modelscope-hub, huggingface_hub), ``.parallel_tmp`` while modelscope-hub merges
# ranged parts. Either one left over means the store is not whole.
PARTIAL_SUFFIXES = (".incomplete", ".parallel_tmp")
# modelscope 1.30.0 keeps its own bookkeeping inside local_dir: the file index ``.msc`` and
# the staged revision ``.mv`` (hub/utils/caching.py FileSystemCache.KEY_FILE_NAME,
# MODEL_VERSION_FILE_NAME), and downloads into ``._____temp`` there, moving each file into
# place once its hash is checked (hub/constants.py TEMPORARY_FOLDER_NAME,
# hub/file_download.py create_temporary_directory_and_cache). The index files are not model
# files; anything left under the download directory is a partial download.
CLIENT_INDEX_FILES = (".msc", ".mv")
CLIENT_DOWNLOAD_DIR = "._____temp"
# huggingface_hub keeps locks, per-file metadata and partial downloads under
# <local_dir>/.cache/huggingface (huggingface_hub/_local_folder.py get_local_download_paths).
HF_STATE_DIR = os.path.join(".cache", "huggingface")

# Copies of the weights in formats vLLM does not load when the repository has safetensors
# weights. vLLM 0.11.0 DefaultModelLoader._prepare_weights
# (vllm/model_executor/model_loader/default_loader.py) globs "*.safetensors", "*.bin" and
# "*.pt" in the model directory, in that order, and loads only the first pattern that finds
# files; LoadConfig.ignore_patterns defaults to ["original/**/*"] (vllm/config/load.py) "to
# avoid repeated loading of llama's checkpoints"; and with model.safetensors.index.json,
# filter_duplicate_safetensors_files (model_executor/model_loader/weight_utils.py) drops the
# safetensors files the index does not name, such as Mistral's consolidated.safetensors
# beside the sharded model-*.safetensors. The other formats here (TensorFlow, Flax, ONNX,
# GGUF, Rust) are never loaded from a safetensors checkpoint.
SKIPPED_BESIDE_SAFETENSORS = (
    "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "*.gguf", "*.ot", "*.tflite",
)  # fmt: skip
SKIPPED_DIRECTORIES_BESIDE_SAFETENSORS = ("original/",)

MARKER_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

MODEL_ID_PATTERN = re.compile(r"^[^/\s]+/[^/\s]+$")
RESUME_HINT = "re-run the Job to resume; files already downloaded are kept"
HASH_BLOCK = 8 * 1024 * 1024


class StageError(Exception):
    """A failure to report as one ``stage_model: error:`` line and an exit code."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RepoFile(NamedTuple):
    """One file of a revision, as the hub lists it (or as a marker records it)."""

    path: str  # relative, with "/" separators
    size: Optional[int]  # None when the hub gives no size
    sha256: Optional[str]  # lower-case hex, None when the hub gives none


class StoreContents(NamedTuple):
    model_files: List[str]  # paths relative to the target
    total_bytes: int
    partial_files: List[str]


def log(message: str) -> None:
    print(f"stage_model: {message}", flush=True)


def first_line(error: BaseException) -> str:
    """Client errors append request and response detail on further lines."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- the marker ---------------------------------------------------------------------------


def read_marker(target: str) -> Optional[dict]:
    """Return the completion marker in target, or None if there is none.

    An unreadable or malformed marker counts as absent: the next run then re-checks the
    files against the hub's listing and writes a fresh one.
    """
    try:
        with open(os.path.join(target, MARKER_NAME), encoding="utf-8") as marker_file:
            marker = json.load(marker_file)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def write_marker(target: str, marker: dict) -> None:
    fd, temp_path = tempfile.mkstemp(prefix=MARKER_NAME + ".", suffix=".tmp", dir=target)
    try:
        # mkstemp creates 0600; pods running as another user must be able to read the marker.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as marker_file:
            json.dump(marker, marker_file, indent=1)
            marker_file.write("\n")
            marker_file.flush()
            os.fsync(marker_file.fileno())
        os.replace(temp_path, os.path.join(target, MARKER_NAME))
    except BaseException:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        raise


def new_marker(args: argparse.Namespace, files: List[RepoFile], commit: Optional[str], completed_at: str) -> dict:
    marker = {
        "format": MARKER_FORMAT,
        "modelId": args.model_id,
        "revision": args.revision,
        "source": args.source,
        "files": len(files),
        "bytes": sum(f.size or 0 for f in files),
        "completedAt": completed_at,
    }
    if commit:
        marker["commit"] = commit
    marker["manifest"] = [
        {"path": f.path, "size": f.size, **({"sha256": f.sha256} if f.sha256 else {})}
        for f in sorted(files, key=lambda f: f.path)
    ]
    return marker


def now_text() -> str:
    return datetime.now(timezone.utc).strftime(MARKER_TIME_FORMAT)


def recorded_files(marker: dict) -> Optional[List[RepoFile]]:
    """The marker's file list, or None when it has none or it is malformed."""
    manifest = marker.get("manifest")
    if not isinstance(manifest, list):
        return None
    files = []
    for entry in manifest:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            return None
        size, sha256 = entry.get("size"), entry.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or (sha256 is not None and not isinstance(sha256, str)):
            return None
        files.append(RepoFile(entry["path"], size, sha256))
    return files


def manifest_of(marker: dict, target: str, args: argparse.Namespace) -> Optional[List[RepoFile]]:
    """The files a marker vouches for; upgrades a marker without a file list in place.

    A marker without a manifest was written after a complete download that passed the
    client's checks, with the number of files and bytes then in the directory. If the
    directory still holds exactly that, the file list is taken from the disk (sizes only: no
    sha256, as the old marker recorded none) and the marker is rewritten with it, keeping
    its completion time, so every later run checks each file without contacting the hub.
    This keeps complete stores of earlier versions usable offline and costs one directory
    walk. If the counts differ, the store changed since it was marked: None, and the caller
    re-checks it against the hub.
    """
    files = recorded_files(marker)
    if files is not None:
        return files
    if "manifest" in marker:
        return None  # malformed
    contents = scan_store(target)
    if contents.partial_files or (len(contents.model_files), contents.total_bytes) != (
        marker.get("files"),
        marker.get("bytes"),
    ):
        return None
    files = [
        RepoFile(path.replace(os.sep, "/"), os.path.getsize(os.path.join(target, path)), None)
        for path in contents.model_files
    ]
    upgraded = new_marker(args, files, None, str(marker.get("completedAt") or now_text()))
    upgraded["source"] = marker.get("source", "modelscope")
    write_marker(target, upgraded)
    log(f"upgraded the marker in {target} with the list of its {len(files)} files (sizes; no sha256 recorded)")
    return files


# -- the directory ------------------------------------------------------------------------


def is_client_state(relative_path: str) -> bool:
    """Bookkeeping of a client or of this script inside the target: never a model file."""
    return (
        relative_path.startswith(MARKER_NAME)
        or relative_path == STAGING_NAME
        or relative_path in CLIENT_INDEX_FILES
        or relative_path.startswith(HF_STATE_DIR + os.sep)
    )


def is_partial(relative_path: str) -> bool:
    return relative_path.endswith(PARTIAL_SUFFIXES) or relative_path.startswith(CLIENT_DOWNLOAD_DIR + os.sep)


def scan_store(target: str) -> StoreContents:
    model_files: List[str] = []
    partial_files: List[str] = []
    total_bytes = 0
    for directory, _, names in os.walk(target):
        for name in names:
            relative_path = os.path.relpath(os.path.join(directory, name), target)
            if is_partial(relative_path):
                partial_files.append(relative_path)
                continue
            if is_client_state(relative_path):
                continue  # the marker and its temp files, the clients' own state
            model_files.append(relative_path)
            total_bytes += os.path.getsize(os.path.join(directory, name))
    return StoreContents(sorted(model_files), total_bytes, sorted(partial_files))


def local_path(target: str, repo_path: str) -> str:
    return os.path.join(target, *repo_path.split("/"))


def size_on_disk(target: str, repo_path: str) -> Optional[int]:
    """The size of a regular file at the file's place, None if there is none."""
    try:
        status = os.stat(local_path(target, repo_path))
    except OSError:
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def size_problems(target: str, files: List[RepoFile]) -> Dict[str, str]:
    """Files not in place with their recorded size: path -> what is wrong (one stat each)."""
    problems = {}
    for f in files:
        size = size_on_disk(target, f.path)
        if size is None:
            problems[f.path] = "missing"
        elif f.size is not None and size != f.size:
            problems[f.path] = f"{size} of {f.size} bytes"
    return problems


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as stream:
        while True:
            count = stream.readinto(buffer)
            if not count:
                return digest.hexdigest()
            digest.update(view[:count])  # hashlib releases the GIL for large blocks


def hash_problems(target: str, files: List[RepoFile], workers: int) -> Tuple[Dict[str, str], int]:
    """Files whose content differs from their recorded sha256, and how many had none to check."""
    with_hash = [f for f in files if f.sha256]

    def check(f: RepoFile) -> Optional[str]:
        try:
            actual = sha256_of(local_path(target, f.path))
        except OSError as error:
            return f"unreadable ({error.strerror})"
        return None if actual == f.sha256.lower() else "sha256 differs"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(check, with_hash))
    problems = {f.path: problem for f, problem in zip(with_hash, results) if problem}
    return problems, len(files) - len(with_hash)


def remove_damaged(target: str, paths: List[str]) -> None:
    """Remove files before fetching them again, so no client takes them as finished.

    modelscope 1.30.0 takes a file its index (.msc) lists as cached without checking its
    size or hash unless MODELSCOPE_ENABLE_DEFAULT_HASH_VALIDATION is set
    (hub/utils/caching.py ModelFileSystemCache.exists); a missing file makes it drop the
    index entry and download again. The other clients replace a file whose size differs.
    """
    for path in paths:
        try:
            os.unlink(local_path(target, path))
        except FileNotFoundError:
            pass


def use_writable_client_dirs(target: str, source: str, token_login: bool) -> Optional[str]:
    """Point the clients' state directories at writable places unless already set.

    Returns a private temporary directory to remove at exit, if one was made.

    modelscope settles MODELSCOPE_CACHE / MODELSCOPE_HOME from the environment once per
    process, so this runs before it is imported. Its defaults (~/.cache/modelscope,
    ~/.modelscope) are often not writable in a container. With local_dir downloads the cache
    only holds lock files and HOME a session id. They go to
    ``<target>/../.modelscope/{cache,home}``: writable wherever the target is, outside it so
    they are never counted or served as model files, and on the same volume, so two runs
    staging the same model there share download locks. huggingface_hub's HF_HOME (token
    file, xet cache) goes to ``<target>/../.huggingface`` the same way.
    """
    if source == "huggingface":
        if not os.environ.get("HF_HOME"):
            os.environ["HF_HOME"] = os.path.join(os.path.dirname(target), ".huggingface")
        return None
    state_dir = os.path.join(os.path.dirname(target), ".modelscope")
    for variable, subdirectory in (("MODELSCOPE_CACHE", "cache"), ("MODELSCOPE_HOME", "home")):
        if not os.environ.get(variable):
            os.environ[variable] = os.path.join(state_dir, subdirectory)
    # modelscope 1.30.0 ignores MODELSCOPE_HOME: its session file goes to
    # MODELSCOPE_CREDENTIALS_PATH, default ~/.modelscope/credentials, read when it is imported
    # (hub/constants.py, hub/api.py ModelScopeConfig.path_credential). Point it where the
    # newer client keeps the same files, <MODELSCOPE_HOME>/credentials. Not for 1.40.2: it
    # maps the variable onto its config directory (modelscope/hub/__init__.py _sync_config),
    # taking a path named credentials as a file inside that directory only until it exists
    # as a directory, so a second run would move its files one level down.
    if os.environ.get("MODELSCOPE_CREDENTIALS_PATH") or has_module("modelscope_hub"):
        return None
    if token_login:
        # A login stores the session cookie and a git token there (hub/api.py HubApi.login,
        # ModelScopeConfig.save_cookies / save_token): keep them off the shared volume, in a
        # directory only this process can read, removed when it ends.
        private = tempfile.mkdtemp(prefix="stage-model-credentials-")
        os.environ["MODELSCOPE_CREDENTIALS_PATH"] = private
        return private
    os.environ["MODELSCOPE_CREDENTIALS_PATH"] = os.path.join(os.environ["MODELSCOPE_HOME"], "credentials")
    return None


def quiet_and_bounded_clients(stall_timeout: float) -> None:
    """Client settings read from the environment at import: no progress bars, bounded reads.

    Each is set only when the environment does not set it already.
    """
    # tqdm >= 4.66 takes defaults for every bar from TQDM_* variables (tqdm/std.py,
    # envwrap("TQDM_") on tqdm.__init__, read when tqdm is imported); both modelscope
    # generations draw per-file and overall bars with tqdm.auto. huggingface_hub has its own
    # switch (huggingface_hub/constants.py HF_HUB_DISABLE_PROGRESS_BARS). The bars cost a
    # little per chunk and fill the Job's log with carriage returns; the progress lines of
    # this script replace them.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Per-request bounds, so a client retries a silent connection (resuming with Range)
    # before the watchdog gives up on the whole run: at most half the stall timeout.
    # modelscope-hub 0.5.1 (modelscope_hub/constants.py): MODELSCOPE_DOWNLOAD_TIMEOUT, the idle
    # read timeout of each download stream (default 60 s), and MODELSCOPE_API_TIMEOUT, the
    # read timeout of API requests such as the listing (default 60 s).
    # huggingface_hub 0.35.3 (huggingface_hub/constants.py): HF_HUB_DOWNLOAD_TIMEOUT (file
    # streams) and HF_HUB_ETAG_TIMEOUT (the HEAD request per file), both 10 s by default.
    # modelscope 1.30.0 has no such setting: hub/constants.py fixes API_FILE_DOWNLOAD_TIMEOUT
    # and API_HTTP_CLIENT_TIMEOUT at 60 s; there the watchdog is the only bound.
    half = max(1, int(stall_timeout // 2))
    for variable, default in (
        ("MODELSCOPE_DOWNLOAD_TIMEOUT", 60),
        ("MODELSCOPE_API_TIMEOUT", 60),
        ("HF_HUB_DOWNLOAD_TIMEOUT", 10),
        ("HF_HUB_ETAG_TIMEOUT", 10),
    ):
        if not os.environ.get(variable) and half < default:
            os.environ[variable] = str(half)


def has_module(name: str) -> bool:
    """Whether a top-level module can be imported, without importing it."""
    return importlib.util.find_spec(name) is not None


# -- choosing files -----------------------------------------------------------------------


def matches(path: str, patterns: List[str]) -> bool:
    # As the clients match allow/ignore patterns: fnmatch on the path; a pattern ending in "/"
    # means everything below (huggingface_hub utils/_paths.py filter_repo_objects,
    # modelscope 1.30.0 hub/snapshot_download.py _normalize_patterns).
    return any(fnmatch.fnmatch(path, pattern + "*" if pattern.endswith("/") else pattern) for pattern in patterns)


def duplicate_weights(files: List[RepoFile]) -> List[RepoFile]:
    """Files vLLM does not load because the repository has safetensors weights at its top level."""
    top_safetensors = [f.path for f in files if "/" not in f.path and f.path.endswith(".safetensors")]
    if not top_safetensors:
        return []
    # A Mistral-format repository may hold only consolidated*.safetensors: then they are the weights.
    sharded = any(not path.startswith("consolidated") for path in top_safetensors)
    skipped = []
    for f in files:
        name = f.path.rsplit("/", 1)[-1]
        if (
            f.path.startswith(SKIPPED_DIRECTORIES_BESIDE_SAFETENSORS)
            or any(fnmatch.fnmatchcase(name, pattern) for pattern in SKIPPED_BESIDE_SAFETENSORS)
            or (sharded and "/" not in f.path and name.startswith("consolidated") and name.endswith(".safetensors"))
        ):
            skipped.append(f)
    return skipped


def select_files(files: List[RepoFile], allow: List[str], ignore: List[str]) -> Tuple[List[RepoFile], List[RepoFile]]:
    """The files to stage, and those left out automatically as duplicate weights."""
    chosen = [f for f in files if (not allow or matches(f.path, allow)) and not matches(f.path, ignore)]
    if allow:
        return chosen, []  # explicit allow patterns are the exact choice
    skipped = {f.path for f in duplicate_weights(files)}
    return [f for f in chosen if f.path not in skipped], [f for f in chosen if f.path in skipped]


def literal_pattern(path: str) -> str:
    """A glob that matches exactly this path with fnmatch."""
    return re.sub(r"([*?\[])", r"[\1]", path)


# -- the hub clients ----------------------------------------------------------------------


class ClientSupport(NamedTuple):
    """What the installed modelscope client takes, read from its snapshot_download."""

    version: str
    takes_endpoint: bool  # 1.40.2: an endpoint= argument; 1.30.0: only MODELSCOPE_DOMAIN
    reads_token: bool  # 1.40.2 reads MODELSCOPE_API_TOKEN; 1.30.0 only through HubApi.login

    @classmethod
    def of(cls, version: str, snapshot_download: Callable) -> "ClientSupport":
        try:
            parameters = inspect.signature(snapshot_download).parameters
        except (TypeError, ValueError):
            parameters = {}
        # 1.40.2 modelscope/hub/snapshot_download.py takes endpoint= and token= (and passes
        # them to modelscope_hub); 1.30.0's has neither.
        return cls(version, "endpoint" in parameters, "token" in parameters)

    def token_hint(self) -> str:
        return "set MODELSCOPE_API_TOKEN to a token that can read this model"


def endpoint_as_domain(endpoint: str, client: ClientSupport, model_ref: str) -> str:
    """The MODELSCOPE_DOMAIN that makes a client without an endpoint argument use endpoint.

    modelscope 1.30.0 builds the hub URL as MODELSCOPE_URL_SCHEME ('https://', fixed in
    hub/constants.py) + the MODELSCOPE_DOMAIN variable (hub/api.py
    HubApi.get_endpoint_for_read, hub/utils/utils.py get_endpoint), read at each call. Any
    other scheme cannot be reached.
    """
    url = urlsplit(endpoint)
    if url.scheme.lower() != "https" or not url.netloc or url.query or url.fragment:
        raise StageError(
            EXIT_USAGE,
            f"{model_ref}: the installed modelscope {client.version} cannot use --endpoint {endpoint}: it "
            "takes the hub only as a host name (MODELSCOPE_DOMAIN) and always connects with https://; "
            "give an https:// endpoint, or run the tested client (modelscope 1.40.2 with "
            "modelscope-hub 0.5.1; the Job installs it unless install_client is false)",
        )
    return url.netloc + url.path.rstrip("/")


def describe_http_error(error: BaseException, model_ref: str, client: ClientSupport) -> StageError:
    # modelscope 1.30.0 raises requests.HTTPError for 401/403/404 from the hub:
    # HubApi.repo_exists raises HTTPError(response) for an unknown model, the response being
    # the exception's argument, not its .response.
    response = getattr(error, "response", None)
    if response is None:
        response = next((arg for arg in error.args if hasattr(arg, "status_code")), None)
    status = getattr(response, "status_code", None) or getattr(error.__cause__, "status_code", None)
    detail = first_line(error)
    if response is not None and detail.startswith("<Response"):
        detail = f"HTTP {status} for {getattr(response, 'url', 'the hub')}"
    if status == 404:
        return StageError(
            EXIT_NOT_FOUND,
            f"{model_ref}: model or revision not found on the hub ({detail}); "
            "check --model-id and --revision (a private model also needs MODELSCOPE_API_TOKEN)",
        )
    return StageError(
        EXIT_DOWNLOAD_FAILED,
        f"{model_ref}: access denied by the hub (HTTP {status}: {detail}); {client.token_hint()}",
    )


def describe_failed_files(error: Exception, model_ref: str) -> StageError:
    failures = "; ".join(f"{path}: {first_line(cause)}" for path, cause in list(error.failed_files.items())[:3])
    return StageError(
        EXIT_DOWNLOAD_FAILED,
        f"{model_ref}: {len(error.failed_files)} of {error.total} files failed to download ({failures}); "
        f"{RESUME_HINT}",
    )


def download_failed(error: BaseException, model_ref: str) -> StageError:
    return StageError(
        EXIT_DOWNLOAD_FAILED,
        f"{model_ref}: download failed: {type(error).__name__}: {first_line(error)}; {RESUME_HINT}",
    )


class HubClient:
    """What the script needs from a hub client. Subclasses import their client when built."""

    description = ""
    downloads_the_listed_commit = False
    """Whether download fetches the commit list_files returned, whatever the branch names meanwhile."""

    def list_files(self, model_id: str, revision: str) -> Tuple[List[RepoFile], Optional[str]]:
        """Every file of the revision (one listing), and its commit id when the hub gives it."""
        raise NotImplementedError

    def download(self, model_id: str, revision: str, target: str, files: List[RepoFile], max_workers: int) -> None:
        raise NotImplementedError

    def head_commit(self, model_id: str, revision: str) -> Optional[str]:
        """The commit the revision names now."""
        raise NotImplementedError

    def describe(self, error: BaseException, model_ref: str) -> StageError:
        raise NotImplementedError


COMMIT_ID = re.compile(r"[0-9a-f]{40}")
COMMITS_QUERY = {"PageNumber": 1, "PageSize": 1}


def commit_or_none(client: HubClient, model_id: str, revision: str) -> Optional[str]:
    """The commit the revision names, or None (logged) where the hub cannot say, as a mirror may not."""
    try:
        return client.head_commit(model_id, revision)
    except Exception as error:  # noqa: BLE001 - the listing that follows reports a hub that is down
        log(f"warning: could not resolve {model_id}@{revision} to a commit ({first_line(error)}); the marker records none")
        return None


def newest_commit(body: object) -> Optional[str]:
    """The first commit id of a ModelScope commit list, None if it holds none.

    GET /api/v1/models/{owner}/{name}/commits?Ref=<branch, tag or commit>&PageNumber=&PageSize=
    answers {"Code": 200, "Data": {"Commit": [{"Id": <commit id>, "ShortId", "Title", ...}, ...]},
    "TotalCount": n}, newest first: modelscope 1.30.0 hub/api.py HubApi.list_repo_commits (which
    HubApi.model_info calls for a revision's history) and CommitHistoryResponse /
    DetailedCommitInfo.from_api_response (utils/repo_utils.py). modelscope-hub 0.5.1 has no call for
    it; its revision listing (GET .../revisions, modelscope_hub/_legacy_api.py list_revisions_detail)
    gives names and creation times only.
    """
    data = body.get("Data") if isinstance(body, dict) else None
    commits = data.get("Commit") if isinstance(data, dict) else None
    first = commits[0] if isinstance(commits, list) and commits and isinstance(commits[0], dict) else {}
    commit = first.get("Id")
    return commit.lower() if isinstance(commit, str) and COMMIT_ID.fullmatch(commit.lower()) else None


def lower_or_none(sha256: Optional[str]) -> Optional[str]:
    return sha256.lower() if isinstance(sha256, str) and sha256 else None


class ModelScopeHub(HubClient):
    """modelscope with modelscope-hub (1.40.2 with 0.5.1): modelscope_hub.HubApi directly.

    modelscope's snapshot_download (modelscope_hub/compat/snapshot_download.py) builds a
    HubApi and calls its download_repo, which lists the repository itself. download_repo also
    takes file_list, "previously fetched legacy file entries (Path, Size, Sha256). When
    provided, listing requests are skipped" (modelscope_hub/api.py): the listing this script
    chose the files from is the only one, and the client downloads exactly those files,
    checking size and sha256 as it writes them (modelscope_hub/_download.py
    _download_with_resume).
    """

    def __init__(self, support: ClientSupport, endpoint: Optional[str]) -> None:
        from modelscope_hub import HubApi, errors

        self.errors = errors
        self.support = support
        # The token: HubConfig reads MODELSCOPE_API_TOKEN (modelscope_hub/config.py); the
        # client sends it as "Authorization: Bearer" and as the m_session_id cookie
        # (modelscope_hub/_legacy_api.py _ensure_session_auth).
        self.HubApi, self.endpoint = HubApi, endpoint
        self.api = HubApi(endpoint=endpoint)
        self.description = f"modelscope {support.version} (modelscope-hub)"

    def list_files(self, model_id: str, revision: str) -> Tuple[List[RepoFile], Optional[str]]:
        if self.endpoint is None:
            # As modelscope's snapshot_download does: the site (.cn or .ai) that has the model.
            try:
                self.api = self.HubApi(endpoint=self.api.resolve_endpoint_for_read(model_id, repo_type="model"))
            except Exception:  # noqa: BLE001 - the listing reports what is wrong
                pass
        # The commit before the listing: a move after it is found by the check after the download (fetch).
        commit = commit_or_none(self, model_id, revision)
        entries = self.api.list_repo_files(model_id, "model", revision=revision, recursive=True)
        files = [RepoFile(e.path, e.size, lower_or_none(e.sha256)) for e in entries if e.type != "tree" and e.path]
        return files, commit

    def head_commit(self, model_id: str, revision: str) -> Optional[str]:
        # Through the client's own dispatcher for /api/v1 requests (token, retries, endpoint), as
        # HubApi.list_repo_revisions sends GET .../revisions (modelscope_hub/api.py, _legacy_api.py).
        legacy = self.api.legacy
        response = legacy._request("GET", f"models/{model_id}/commits", params={"Ref": revision, **COMMITS_QUERY})
        return newest_commit(response.json())

    def download(self, model_id: str, revision: str, target: str, files: List[RepoFile], max_workers: int) -> None:
        file_list = [{"Path": f.path, "Type": "blob", "Size": f.size, "Sha256": f.sha256} for f in files]
        self.api.download_repo(
            model_id, "model", revision=revision, local_dir=target, max_workers=max_workers, file_list=file_list
        )

    def describe(self, error: BaseException, model_ref: str) -> StageError:
        if isinstance(error, self.errors.NotExistError):
            return StageError(
                EXIT_NOT_FOUND,
                f"{model_ref}: model or revision not found on the hub ({first_line(error)}); "
                "check --model-id and --revision (a private model also needs MODELSCOPE_API_TOKEN)",
            )
        if isinstance(error, (self.errors.AuthenticationError, self.errors.PermissionDeniedError)):
            return StageError(
                EXIT_DOWNLOAD_FAILED,
                f"{model_ref}: access denied by the hub ({first_line(error)}); {self.support.token_hint()}",
            )
        # modelscope_hub.errors.FileDownloadError, raised once every file was attempted,
        # lists the failed files (modelscope_hub/_download.py DownloadManager.download_repo).
        if isinstance(getattr(error, "failed_files", None), dict) and hasattr(error, "total"):
            return describe_failed_files(error, model_ref)
        return download_failed(error, model_ref)  # NetworkError, ServerError, ...


class LegacyModelScope(HubClient):
    """modelscope without modelscope-hub (1.30.0): its HubApi to list, snapshot_download to fetch.

    snapshot_download lists the repository again (hub/snapshot_download.py
    _snapshot_download: existence probe, revision check, listing) and downloads the files
    that match allow_patterns: here exactly the files chosen, one literal pattern each.
    """

    def __init__(self, support: ClientSupport, endpoint: Optional[str], model_ref: str) -> None:
        import requests
        from modelscope import snapshot_download
        from modelscope.hub.api import HubApi, ModelScopeConfig
        from modelscope.hub.errors import NotExistError

        self.support, self.requests, self.snapshot_download = support, requests, snapshot_download
        self.config, self.not_exist = ModelScopeConfig, NotExistError
        self.options: dict = {}
        if endpoint and support.takes_endpoint:
            self.options["endpoint"] = endpoint
            self.description = f"modelscope {support.version}"
        elif endpoint:
            os.environ["MODELSCOPE_DOMAIN"] = endpoint_as_domain(endpoint, support, model_ref)
            domain = os.environ["MODELSCOPE_DOMAIN"]
            self.description = f"modelscope {support.version}, hub https://{domain} (MODELSCOPE_DOMAIN)"
        else:
            self.description = f"modelscope {support.version}"
        self.api = HubApi()

    def list_files(self, model_id: str, revision: str) -> Tuple[List[RepoFile], Optional[str]]:
        if os.environ.get("MODELSCOPE_API_TOKEN"):
            # 1.30.0 reads no token when downloading: only the session cookie a login stored
            # (hub/file_download.py, hub/snapshot_download.py: ModelScopeConfig.get_cookies()).
            # HubApi.login() reads MODELSCOPE_API_TOKEN itself, exchanges it at
            # POST /api/v1/login for that cookie and stores it under
            # MODELSCOPE_CREDENTIALS_PATH (hub/api.py HubApi.login), where the download finds it.
            self.api.login()
        endpoint = self.api.get_endpoint_for_read(repo_id=model_id, repo_type="model")
        cookies = self.config.get_cookies()
        detail = self.api.get_valid_revision_detail(model_id, revision=revision, cookies=cookies, endpoint=endpoint)
        # The commit before the listing: a move after it is found by the check after the download (fetch).
        commit = commit_or_none(self, model_id, revision)
        entries = self.api.get_model_files(
            model_id=model_id,
            revision=detail["Revision"],
            recursive=True,
            use_cookies=False if cookies is None else cookies,
            endpoint=endpoint,
        )
        files = [
            RepoFile(e["Path"], e.get("Size"), lower_or_none(e.get("Sha256")))
            for e in entries
            if e.get("Type") != "tree"
        ]
        return files, commit

    def head_commit(self, model_id: str, revision: str) -> Optional[str]:
        # Not through HubApi.list_repo_commits: it imports the datasets package, which the
        # vLLM images do not ship. The same request, with the session and cookies it would use.
        endpoint = self.api.get_endpoint_for_read(repo_id=model_id, repo_type="model")
        response = self.api.session.get(
            f"{endpoint}/api/v1/models/{model_id}/commits",
            params={"Ref": revision, **COMMITS_QUERY},
            cookies=self.config.get_cookies(),
            headers=self.api.builder_headers(self.api.headers),
        )
        response.raise_for_status()
        return newest_commit(response.json())

    def download(self, model_id: str, revision: str, target: str, files: List[RepoFile], max_workers: int) -> None:
        self.snapshot_download(
            model_id,
            revision=revision,
            local_dir=target,
            allow_patterns=[literal_pattern(f.path) for f in files],
            max_workers=max_workers,
            **self.options,
        )

    def describe(self, error: BaseException, model_ref: str) -> StageError:
        if isinstance(error, self.requests.HTTPError):
            return describe_http_error(error, model_ref, self.support)
        if isinstance(error, self.not_exist):  # HubApi.get_valid_revision_detail: unknown revision
            return StageError(
                EXIT_NOT_FOUND,
                f"{model_ref}: revision not found on the hub ({first_line(error)}); check --revision",
            )
        if type(error) is Exception and "access authorization" in str(error):
            # HubApi.repo_exists answers any status but 200 and 404 (401, 403: a private model
            # without a session) with a bare Exception("Failed to check existence of repo: ...,
            # make sure you have access authorization.") (hub/api.py).
            return StageError(
                EXIT_DOWNLOAD_FAILED,
                f"{model_ref}: access denied by the hub ({first_line(error)}); {self.support.token_hint()}",
            )
        # A failing file raises urllib3's MaxRetryError or FileIntegrityError at once
        # (hub/file_download.py http_get_model_file, hub/utils/utils.py file_integrity_validation).
        return download_failed(error, model_ref)


class HuggingFace(HubClient):
    """huggingface_hub: HfApi.model_info to list, snapshot_download to fetch.

    model_info(files_metadata=True) is one request (GET /api/models/{repo}/revision/{rev}
    ?blobs=true) that gives every file's size and, for LFS files, its sha256
    (huggingface_hub/hf_api.py RepoSibling, BlobLfsInfo). snapshot_download then fetches
    exactly the files chosen (one literal allow pattern each) at the commit the listing
    named, so listing and download see the same revision even if a branch moves. It checks
    each file's size, not its hash (huggingface_hub/file_download.py http_get): the sha256
    goes into the marker for --verify.
    """

    downloads_the_listed_commit = True

    def __init__(self, endpoint: Optional[str]) -> None:
        import huggingface_hub
        import requests
        from huggingface_hub import HfApi, errors, snapshot_download

        self.requests, self.errors, self.snapshot_download = requests, errors, snapshot_download
        self.endpoint = endpoint
        # The token: HF_TOKEN, read by huggingface_hub itself (utils/_auth.py get_token) and
        # sent as "Authorization: Bearer" (utils/_headers.py build_hf_headers).
        self.api = HfApi(endpoint=endpoint)
        self.description = f"huggingface_hub {huggingface_hub.__version__}"
        self.commit: Optional[str] = None

    def list_files(self, model_id: str, revision: str) -> Tuple[List[RepoFile], Optional[str]]:
        # GET /api/models/{repo}/revision/{revision}: a branch, tag or commit resolved to the
        # commit it names, ModelInfo.sha (huggingface_hub/hf_api.py HfApi.model_info).
        info = self.api.model_info(model_id, revision=revision, files_metadata=True)
        self.commit = info.sha
        files = [
            RepoFile(s.rfilename, s.size, lower_or_none(s.lfs.sha256) if s.lfs else None) for s in info.siblings or []
        ]
        return files, info.sha

    def download(self, model_id: str, revision: str, target: str, files: List[RepoFile], max_workers: int) -> None:
        self.snapshot_download(
            model_id,
            revision=self.commit or revision,
            local_dir=target,
            allow_patterns=[literal_pattern(f.path) for f in files],
            max_workers=max_workers,
            endpoint=self.endpoint,
        )

    def describe(self, error: BaseException, model_ref: str) -> StageError:
        errors = self.errors
        if isinstance(error, errors.GatedRepoError):  # a subclass of RepositoryNotFoundError
            return StageError(
                EXIT_DOWNLOAD_FAILED,
                f"{model_ref}: access denied: the model is gated ({first_line(error)}); set HF_TOKEN to a token "
                "of an account that was granted access",
            )
        if isinstance(error, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError)):
            return StageError(
                EXIT_NOT_FOUND,
                f"{model_ref}: model or revision not found on the hub ({first_line(error)}); "
                "check --model-id and --revision (a private model also needs HF_TOKEN)",
            )
        if isinstance(error, errors.LocalEntryNotFoundError) and error.__cause__ is not None:
            # hf_hub_download wraps what went wrong on the network ("cannot find the requested
            # files in the local cache"); the cause says what it was (file_download.py
            # _raise_on_head_call_error).
            error = error.__cause__
        response = getattr(error, "response", None)
        if isinstance(error, self.requests.HTTPError) and getattr(response, "status_code", None) in (401, 403):
            return StageError(
                EXIT_DOWNLOAD_FAILED,
                f"{model_ref}: access denied by the hub ({first_line(error)}); set HF_TOKEN to a token that can "
                "read this model",
            )
        return download_failed(error, model_ref)


def open_client(args: argparse.Namespace, model_ref: str) -> HubClient:
    """Import the client for args.source; the environment it reads at import is set by now."""
    if args.source == "huggingface":
        try:
            return HuggingFace(args.endpoint)
        except ImportError as error:
            raise StageError(
                EXIT_DOWNLOAD_FAILED,
                f"{model_ref}: cannot import huggingface_hub ({error}); the Job image needs it "
                "(the vLLM images ship it; 0.35.3 is tested)",
            ) from error
    try:
        import modelscope
        from modelscope import snapshot_download
    except ImportError as error:
        raise StageError(
            EXIT_DOWNLOAD_FAILED,
            f"{model_ref}: cannot import the modelscope client ({error}); the Job image needs the "
            "modelscope package (1.40.2 with modelscope-hub 0.5.1, and 1.30.0, are tested)",
        ) from error
    support = ClientSupport.of(getattr(modelscope, "__version__", "(unknown version)"), snapshot_download)
    if has_module("modelscope_hub"):
        from modelscope_hub import HubApi

        if "file_list" in inspect.signature(HubApi.download_repo).parameters:
            return ModelScopeHub(support, args.endpoint)
    return LegacyModelScope(support, args.endpoint, model_ref)


# -- watching the download ------------------------------------------------------------------


def bytes_under(target: str) -> Tuple[int, Dict[str, int]]:
    """Sum of the sizes of all files under target (partial files included), and each size."""
    total, sizes = 0, {}
    for directory, _, names in os.walk(target):
        for name in names:
            path = os.path.join(directory, name)
            try:
                size = os.lstat(path).st_size
            except OSError:
                continue  # renamed or removed by the client meanwhile
            sizes[path] = size
            total += size
    return total, sizes


def short_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counts for the progress lines: the whole selection, of which to_fetch is being fetched."""

    def __init__(self, target: str, selected: List[RepoFile], to_fetch: List[RepoFile]) -> None:
        self.target = target
        self.total_files = len(selected)
        self.total_bytes = sum(f.size or 0 for f in selected)
        self.fetch = [(local_path(target, f.path), f.size) for f in to_fetch]
        self.in_place_files = len(selected) - len(to_fetch)
        self.in_place_bytes = self.total_bytes - sum(f.size or 0 for f in to_fetch)

    def done(self, on_disk: int, baseline: int, sizes: Dict[str, int]) -> Tuple[int, int]:
        files = self.in_place_files + sum(1 for path, size in self.fetch if path in sizes and sizes[path] == size)
        return files, min(self.total_bytes, self.in_place_bytes + max(0, on_disk - baseline))

    def line(self, files: int, done: int, rate: float, average: float) -> str:
        percent = 100 * done / self.total_bytes if self.total_bytes else 100
        remaining = self.total_bytes - done
        eta = short_duration(remaining / average) if average > 0 else "unknown"
        return (
            f"progress: {files}/{self.total_files} files, {short_size(done)} of {short_size(self.total_bytes)} "
            f"({percent:.0f}%), {short_size(int(rate))}/s, ETA {eta}"
        )


class Watch:
    """Runs a client call in a thread; logs progress and stops the process when no byte arrives."""

    def __init__(self, args: argparse.Namespace, target: str, model_ref: str, on_exit: Callable[[], None]) -> None:
        self.args, self.target, self.model_ref, self.on_exit = args, target, model_ref, on_exit

    def run(self, action: Callable[[], object], phase: str, progress: Optional[Progress] = None) -> object:
        outcome: dict = {}

        def work() -> None:
            try:
                outcome["value"] = action()
            except BaseException as error:  # noqa: BLE001 - handed to the main thread
                outcome["error"] = error

        stall, interval = self.args.stall_timeout, self.args.progress_interval
        poll = max(0.05, min(1.0, stall / 4, interval / 2))
        worker = threading.Thread(target=work, name=f"stage-model {phase}", daemon=True)
        baseline, _ = bytes_under(self.target)
        started = last_change = last_report = time.monotonic()
        last_total, reported_done = baseline, progress.in_place_bytes if progress else 0
        worker.start()
        while True:
            worker.join(poll)
            if not worker.is_alive():
                break
            now = time.monotonic()
            on_disk, sizes = bytes_under(self.target)
            if on_disk != last_total:
                last_total, last_change = on_disk, now
            elif now - last_change >= stall:
                self.stalled(phase, now - last_change)
            if progress is not None and now - last_report >= interval:
                files, done = progress.done(on_disk, baseline, sizes)
                rate = (done - reported_done) / (now - last_report)
                average = (done - progress.in_place_bytes) / (now - started)
                log(progress.line(files, done, rate, average))
                last_report, reported_done = now, done
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    def stalled(self, phase: str, silent_for: float) -> None:
        """Report the stall as the last line and end the process: the client's threads cannot be stopped."""
        message = (
            f"stage_model: error: {self.model_ref}: stalled: no byte arrived in {self.target} for "
            f"{silent_for:.0f} s while {phase} (--stall-timeout {self.args.stall_timeout:g}); stopped so that "
            f"the next attempt resumes; {RESUME_HINT}"
        )
        sys.stdout.flush()
        print(message, file=sys.stderr, flush=True)
        self.on_exit()
        os._exit(EXIT_DOWNLOAD_FAILED)


def format_size(total_bytes: int) -> str:
    return f"{total_bytes} bytes ({total_bytes / 2**30:.2f} GiB)"


def short_size(total_bytes: int) -> str:
    if total_bytes < 1024:
        return f"{total_bytes} bytes"
    size = total_bytes / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


class CompleteRevision(NamedTuple):
    revision: str
    path: str
    completed_at: datetime


def model_root_of(target: str, revision: str) -> Optional[str]:
    """The directory that holds every revision of the model: target minus its revision path.

    None when target does not end with the revision's path segments, or the revision has
    segments that do not name one directory each.
    """
    segments = revision.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        return None
    target_segments = os.path.abspath(target).split(os.sep)
    # At least one segment left besides the filesystem root: the root never holds revisions.
    if len(target_segments) < len(segments) + 2 or target_segments[-len(segments) :] != segments:
        return None
    return os.sep.join(target_segments[: -len(segments)])


def marker_is_regular_file(directory: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(os.path.join(directory, MARKER_NAME)).st_mode)
    except OSError:
        return False


def complete_revisions(model_root: str, model_id: str, target: str) -> List[CompleteRevision]:
    """Complete revisions of model_id under model_root, other than target.

    Complete means a marker (a regular file) for model_id whose revision is exactly the
    directory's path below model_root, with a readable completedAt. Symbolic links are
    neither entered nor counted (os.walk does not follow them, and they are dropped from
    the walk), so nothing outside model_root is ever found. Directories whose name starts
    with a dot are not searched: no revision has such a segment (git check-ref-format), and
    they hold the modelscope state and 1.30.0's download directory.
    """
    found: List[CompleteRevision] = []
    for directory, subdirectories, _ in os.walk(model_root):
        subdirectories[:] = sorted(
            name
            for name in subdirectories
            if not name.startswith(".")
            and not os.path.islink(os.path.join(directory, name))
            and os.path.join(directory, name) != target
        )
        if directory == model_root or not marker_is_regular_file(directory):
            continue
        marker = read_marker(directory)
        if marker is None or marker.get("modelId") != model_id:
            continue
        revision = os.path.relpath(directory, model_root).replace(os.sep, "/")
        try:
            completed_at = datetime.strptime(str(marker.get("completedAt")), MARKER_TIME_FORMAT)
        except ValueError:
            continue
        if marker.get("revision") == revision:
            found.append(CompleteRevision(revision, directory, completed_at))
            subdirectories[:] = []  # a revision holds model files, not further revisions
    return found


def tree_size(path: str) -> int:
    total = 0
    for directory, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total


def remove_old_revisions(model_id: str, target: str, model_root: str, keep: int) -> None:
    """Remove complete revisions other than target, oldest first, leaving at most keep - 1.

    The most recently completed others are kept, so the revision a running server still uses
    survives while the target downloads, and a rollback to an older revision keeps the newer
    one. Directories without a valid marker (a download in progress, a failed one, anything
    else) are never touched.
    """
    others = complete_revisions(model_root, model_id, target)
    others.sort(key=lambda found: (found.completed_at, found.revision), reverse=True)
    for old in others[keep - 1 :]:
        size = tree_size(old.path)
        try:
            # The marker goes first: a directory whose removal stops half-way must not look complete.
            os.unlink(os.path.join(old.path, MARKER_NAME))
            shutil.rmtree(old.path)  # does not follow symbolic links
        except OSError as error:
            log(f"warning: could not remove {model_id}@{old.revision} in {old.path}: {error}; remove it by hand")
            continue
        parent = os.path.dirname(old.path)
        while parent != model_root and parent.startswith(model_root + os.sep):
            try:
                os.rmdir(parent)  # only an empty parent of a nested revision such as release/v1
            except OSError:
                break
            parent = os.path.dirname(parent)
        log(f"removed {model_id}@{old.revision} ({short_size(size)}) to keep {keep} revisions")


# -- staging ------------------------------------------------------------------------------


def check_recorded_files(args: argparse.Namespace, target: str, files: List[RepoFile]) -> Dict[str, str]:
    """What is wrong with the files a marker records: sizes always, contents with --verify."""
    started = time.monotonic()
    problems = size_problems(target, files)
    elapsed = time.monotonic() - started
    log(f"checked the sizes of {len(files)} files in {elapsed:.3f} s: {len(problems)} missing or truncated")
    if args.verify:
        problems.update(verify_hashes(args, target, [f for f in files if f.path not in problems]))
    return problems


def verify_hashes(args: argparse.Namespace, target: str, files: List[RepoFile]) -> Dict[str, str]:
    started = time.monotonic()
    problems, unchecked = hash_problems(target, files, args.max_workers)
    hashed = sum(f.size or 0 for f in files if f.sha256)
    elapsed = time.monotonic() - started
    note = f"; {unchecked} without a recorded sha256 were checked by size only" if unchecked else ""
    log(
        f"verified the sha256 of {len(files) - unchecked} files ({short_size(hashed)}) in {elapsed:.1f} s: "
        f"{len(problems)} differ{note}"
    )
    return problems


def describe_problems(problems: Dict[str, str]) -> str:
    shown = ", ".join(f"{path} ({what})" for path, what in sorted(problems.items())[:5])
    more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
    return shown + more


def stage(args: argparse.Namespace) -> int:
    target = os.path.abspath(args.target)
    model_ref = f"{args.model_id}@{args.revision}"

    marker = read_marker(target)
    if marker is not None and (marker.get("modelId"), marker.get("revision")) != (args.model_id, args.revision):
        raise StageError(
            EXIT_USAGE,
            f"{model_ref}: {target} already holds {marker.get('modelId')}@{marker.get('revision')}; "
            "each revision needs its own --target directory",
        )
    if args.keep_revisions:
        model_root = model_root_of(target, args.revision)
        assert model_root is not None  # checked by parse_args
        remove_old_revisions(args.model_id, target, model_root, args.keep_revisions)

    hashed_already = False
    if marker is not None:
        try:
            files = manifest_of(marker, target, args)
        except OSError as error:
            raise StageError(
                EXIT_VERIFY_FAILED, f"{model_ref}: could not read or upgrade the marker in {target}: {error}"
            ) from error
        if files is not None:
            problems = check_recorded_files(args, target, files)
            hashed_already = args.verify
            if not problems:
                log(
                    f"{model_ref} already complete in {target}: {marker.get('files')} files, "
                    f"{format_size(marker.get('bytes', 0))}, completed {marker.get('completedAt')}; nothing to do"
                )
                return EXIT_OK
            what = describe_problems(problems)
            log(f"{model_ref}: {len(problems)} of {len(files)} files need fetching again: {what}")
        else:
            problems = {}
            log(f"{model_ref}: the files in {target} no longer match its marker; checking them against the hub")
        # The store is not complete any more: no marker while it is repaired. The commit its files
        # came from stays on record, so the repair fetches from that commit or not at all.
        if marker.get("commit"):
            write_staging_record(target, args, marker["commit"])
        os.unlink(os.path.join(target, MARKER_NAME))
        remove_damaged(target, [path for path, what in problems.items() if what != "missing"])

    token_login = args.source == "modelscope" and bool(os.environ.get("MODELSCOPE_API_TOKEN"))
    private_dir = use_writable_client_dirs(target, args.source, token_login)

    def cleanup() -> None:
        if private_dir:
            shutil.rmtree(private_dir, ignore_errors=True)

    try:
        return fetch(args, target, model_ref, Watch(args, target, model_ref, cleanup), hashed_already)
    finally:
        cleanup()


def fetch(args: argparse.Namespace, target: str, model_ref: str, watch: Watch, hashed_already: bool) -> int:
    quiet_and_bounded_clients(args.stall_timeout)
    os.makedirs(target, exist_ok=True)
    client = open_client(args, model_ref)
    log(f"using {client.description}")
    log(
        f"staging {model_ref} from {args.endpoint or 'the default hub'} into {target} "
        f"(max workers {args.max_workers}, allow patterns {args.allow_pattern or 'all files'}"
        f"{', ignore patterns ' + str(args.ignore_pattern) if args.ignore_pattern else ''})"
    )
    try:
        listing, commit = watch.run(lambda: client.list_files(args.model_id, args.revision), "listing the repository")
    except StageError:
        raise
    except Exception as error:
        raise client.describe(error, model_ref) from error

    commit = check_commit(args, target, model_ref, commit)
    selected, skipped = select_files(listing, args.allow_pattern or [], args.ignore_pattern or [])
    if skipped:
        names = ", ".join(f.path for f in skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        log(
            f"skipping {len(skipped)} files ({short_size(sum(f.size or 0 for f in skipped))}) that vLLM does not load "
            f"beside the safetensors weights: {names} (choose files with --allow-pattern to stage them)"
        )
    if not selected:
        raise StageError(
            EXIT_VERIFY_FAILED,
            f"{model_ref}: no file of this revision is selected ({len(listing)} listed); "
            "check that --allow-pattern matches files of this revision",
        )

    problems = size_problems(target, selected)
    if args.verify and not hashed_already:
        problems.update(verify_hashes(args, target, [f for f in selected if f.path not in problems]))
    to_fetch = [f for f in selected if f.path in problems]
    remove_damaged(target, [f.path for f in to_fetch if problems[f.path] != "missing"])
    if to_fetch:
        progress = Progress(target, selected, to_fetch)
        log(
            f"fetching {len(to_fetch)} of {len(selected)} files "
            f"({short_size(progress.total_bytes - progress.in_place_bytes)} of {short_size(progress.total_bytes)})"
        )
        started = time.monotonic()
        try:
            watch.run(
                lambda: client.download(args.model_id, args.revision, target, to_fetch, args.max_workers),
                "downloading",
                progress,
            )
        except StageError:
            raise
        except Exception as error:
            raise client.describe(error, model_ref) from error
        elapsed = time.monotonic() - started
        if commit and not client.downloads_the_listed_commit:
            # The client fetched by name: a branch that moved meanwhile may have served newer files.
            now = commit_or_none(client, args.model_id, args.revision)
            if now and now != commit:
                raise upstream_moved(args, target, model_ref, commit, now)
        fetched = progress.total_bytes - progress.in_place_bytes
        rate = short_size(int(fetched / max(elapsed, 1e-6)))
        log(f"fetched {len(to_fetch)} files, {short_size(fetched)} in {elapsed:.1f} s ({rate}/s)")
    else:
        log(f"all {len(selected)} files are in place; nothing to download")

    try:
        files = verify_store(target, model_ref, selected)
        write_marker(target, new_marker(args, files, commit, now_text()))
        remove_staging_record(target)
    except OSError as error:
        raise StageError(EXIT_VERIFY_FAILED, f"{model_ref}: could not verify or mark {target}: {error}") from error
    log(
        f"staged {model_ref}: {len(files)} files, {format_size(sum(f.size or 0 for f in files))}; "
        f"wrote {os.path.join(target, MARKER_NAME)}"
    )
    return EXIT_OK


def write_staging_record(target: str, args: argparse.Namespace, commit: str) -> None:
    record = {"modelId": args.model_id, "revision": args.revision, "commit": commit}
    with open(os.path.join(target, STAGING_NAME), "w", encoding="utf-8") as record_file:
        json.dump(record, record_file)
        record_file.write("\n")


def staged_commit(target: str, args: argparse.Namespace) -> Optional[str]:
    """The commit the staging record names for this model and revision, None without one."""
    try:
        with open(os.path.join(target, STAGING_NAME), encoding="utf-8") as record_file:
            record = json.load(record_file)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or (record.get("modelId"), record.get("revision")) != (args.model_id, args.revision):
        return None
    commit = record.get("commit")
    return commit if isinstance(commit, str) else None


def remove_staging_record(target: str) -> None:
    try:
        os.unlink(os.path.join(target, STAGING_NAME))
    except FileNotFoundError:
        pass


def check_commit(args: argparse.Namespace, target: str, model_ref: str, commit: Optional[str]) -> Optional[str]:
    """The commit to stage: the one the revision names now, unless target holds files of another.

    A revision that names a branch (or a tag that was moved) can name a new commit between two
    attempts of the Job, or between a complete store and its repair. The files already in target
    come from the commit in its staging record (written by the attempt that fetched them, or kept
    from the marker of a store being repaired); fetching the rest from another commit would give
    vLLM a mix of both, so that is refused with EXIT_UPSTREAM_MOVED. Otherwise the commit is
    recorded before any file is fetched.
    """
    recorded = staged_commit(target, args)
    if recorded and commit and recorded != commit:
        raise upstream_moved(args, target, model_ref, recorded, commit)
    if commit and commit != recorded:
        write_staging_record(target, args, commit)
    if commit:
        log(f"{args.revision} names commit {commit}")
    return commit


def upstream_moved(args: argparse.Namespace, target: str, model_ref: str, staged: str, now: str) -> StageError:
    return StageError(
        EXIT_UPSTREAM_MOVED,
        f"{model_ref}: upstream moved: {args.revision} now names commit {now}, but the files in {target} come from "
        f"commit {staged}; staging on would mix the two. Pin the revision to a commit ({staged} for these weights, "
        f"{now} for the new ones; each stages into a directory of its own), or delete {target} to stage "
        f"{args.revision} afresh",
    )


def verify_store(target: str, model_ref: str, selected: List[RepoFile]) -> List[RepoFile]:
    """The selected files as they are on disk, once each is there with its listed size."""
    contents = scan_store(target)
    if contents.partial_files:
        raise StageError(
            EXIT_VERIFY_FAILED,
            f"{model_ref}: partial downloads left in {target}: {', '.join(contents.partial_files[:5])}; "
            "delete them (or the whole directory) and re-run the Job",
        )
    problems = size_problems(target, selected)
    if problems:
        raise StageError(
            EXIT_VERIFY_FAILED,
            f"{model_ref}: the client reported success but {len(problems)} files are not in place in {target}: "
            f"{describe_problems(problems)}; {RESUME_HINT}",
        )
    return [RepoFile(f.path, size_on_disk(target, f.path), f.sha256) for f in selected]


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def positive_seconds(value: str) -> float:
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {value}")
    return number


def revisions_to_keep(value: str) -> int:
    number = int(value)
    if number == 1:
        raise argparse.ArgumentTypeError(
            "must be 0 (keep every revision) or at least 2, got 1: the revision a running server "
            "still uses must stay on the volume while the new one downloads"
        )
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (keep every revision) or at least 2, got {number}")
    return number


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Parse the command line; argparse exits with code 2 on bad arguments."""
    parser = argparse.ArgumentParser(
        prog="stage_model", description="Stage one revision of a model into a directory for vLLM."
    )
    parser.add_argument("--model-id", required=True, help="model id, OWNER/NAME")
    parser.add_argument("--revision", required=True, help="branch, tag or commit to stage")
    parser.add_argument("--target", required=True, help="directory for this revision's files")
    parser.add_argument(
        "--source", choices=SOURCES, default="modelscope", help="hub to stage from (default modelscope)"
    )
    parser.add_argument("--endpoint", help="hub URL (default: the client's own choice)")
    parser.add_argument(
        "--allow-pattern",
        action="append",
        help="glob of files to download; repeatable (default: every file vLLM loads)",
    )
    parser.add_argument(
        "--ignore-pattern",
        action="append",
        help="glob of files never to download; repeatable",
    )
    parser.add_argument("--max-workers", type=positive_int, default=4, help="parallel file downloads")
    parser.add_argument(
        "--keep-revisions",
        type=revisions_to_keep,
        default=0,
        metavar="N",
        help="before staging, remove the oldest complete revisions of this model beside the target "
        "so that at most N remain, the target included; at least 2 (default: 0, keep every revision)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also re-hash every file against its recorded sha256 and fetch again the ones that differ",
    )
    parser.add_argument(
        "--stall-timeout",
        type=positive_seconds,
        default=120.0,
        metavar="SECONDS",
        help="stop with exit code 4 when no byte arrives on the target for this long (default 120)",
    )
    parser.add_argument(
        "--adapter",
        nargs=3,
        action="append",
        default=[],
        metavar=("OWNER/NAME", "REV", "DIR"),
        help="then stage this LoRA adapter's revision into DIR, with its own marker; repeatable",
    )
    parser.add_argument(
        "--progress-interval",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds between progress lines while downloading (default 10)",
    )
    args = parser.parse_args(argv)
    if not MODEL_ID_PATTERN.fullmatch(args.model_id):
        parser.error(f"--model-id must look like OWNER/NAME, got {args.model_id!r}")
    if args.keep_revisions and model_root_of(args.target, args.revision) is None:
        parser.error(
            f"--keep-revisions needs a --target that ends with the revision, as in "
            f"MOUNT/{args.model_id}/{args.revision}, got {args.target!r}"
        )
    for model_id, revision, target in args.adapter:
        if not MODEL_ID_PATTERN.fullmatch(model_id):
            parser.error(f"--adapter's model id must look like OWNER/NAME, got {model_id!r}")
        if args.keep_revisions and model_root_of(target, revision) is None:
            parser.error(f"--keep-revisions needs each --adapter's DIR to end with its revision {revision}, got {target!r}")
    return args


def repositories(args: argparse.Namespace) -> List[argparse.Namespace]:
    """The model, then each adapter, as the arguments of one staging each. An adapter is staged
    whole: the model's allow and ignore patterns choose among the model's files only."""
    adapters = [
        argparse.Namespace(**{
            **vars(args),
            "model_id": model_id, "revision": revision, "target": target, "allow_pattern": None, "ignore_pattern": None,
        })  # fmt: skip
        for model_id, revision, target in args.adapter
    ]
    return [args, *adapters]


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    for repository in repositories(args):
        try:
            code = stage(repository)
        except StageError as error:
            print(f"stage_model: error: {error}", file=sys.stderr, flush=True)
            return error.exit_code
        if code != EXIT_OK:
            return code
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
