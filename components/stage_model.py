"""Stage one revision of a ModelScope model into a directory on the shared model volume.

Run by the model-staging Kubernetes Job:

    python stage_model.py --model-id OWNER/NAME --revision REV --target DIR
        [--endpoint URL] [--allow-pattern GLOB ...] [--max-workers N] [--keep-revisions N]

The target directory holds exactly one model revision. When every file is in place the
script writes MARKER_NAME there, last and atomically. A later run that finds a marker for
the same model and revision exits at once without importing modelscope or touching the
network; modelscope itself would re-list the repository and re-hash every local file.

A run that dies part-way leaves no marker, and the next run resumes: modelscope keeps
finished files (after re-checking their hashes) and continues partial files with HTTP
Range requests (``<file>.incomplete`` beside the file with modelscope 1.40.2, files under
``<target>/._____temp`` with modelscope 1.30.0).

Two generations of the modelscope client are supported: 1.40.2, which delegates to the
separate modelscope-hub package (0.5.1 tested), and 1.30.0, the generation the vLLM images
of that time ship, without modelscope-hub. What the installed client supports is read from
it at run time (see ClientSupport).

With ``--keep-revisions N`` (N >= 2), revisions live in ``<model root>/<revision>`` and the
target is one of them: before the target is staged, complete revisions of the same model
other than the target are removed, oldest first, until the target and at most N - 1 others
remain (see remove_old_revisions).

Exit codes:
    0  the store is complete (now, or already was)
    2  bad arguments (including an endpoint the installed client cannot reach), or the
       target holds the marker of another model or revision
    3  the model or revision does not exist on the hub
    4  the download failed (server errors, network errors, files that failed their
       hash check, access denied, ...)
    5  modelscope reported success but the files on disk do not form a complete store

Unless already set, MODELSCOPE_CACHE and MODELSCOPE_HOME point into a ``.modelscope``
directory beside the target (see use_writable_modelscope_dirs).
"""

import argparse
import importlib.util
import inspect
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Callable, List, NamedTuple, Optional
from urllib.parse import urlsplit

MARKER_NAME = ".modelstore-complete.json"

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_DOWNLOAD_FAILED = 4
EXIT_VERIFY_FAILED = 5

# Files modelscope writes while a download is in flight: ``.incomplete`` for a single
# stream, ``.parallel_tmp`` while merging ranged parts. Either one left over means the
# store is not whole.
PARTIAL_SUFFIXES = (".incomplete", ".parallel_tmp")
# modelscope 1.30.0 keeps its own bookkeeping inside local_dir: the file index ``.msc`` and
# the staged revision ``.mv`` (hub/utils/caching.py FileSystemCache.KEY_FILE_NAME,
# MODEL_VERSION_FILE_NAME), and downloads into ``._____temp`` there, moving each file into
# place once its hash is checked (hub/constants.py TEMPORARY_FOLDER_NAME,
# hub/file_download.py create_temporary_directory_and_cache). The index files are not model
# files; anything left under the download directory is a partial download.
CLIENT_INDEX_FILES = (".msc", ".mv")
CLIENT_DOWNLOAD_DIR = "._____temp"

MARKER_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

MODEL_ID_PATTERN = re.compile(r"^[^/\s]+/[^/\s]+$")
RESUME_HINT = "re-run the Job to resume; files already downloaded are kept"


class StageError(Exception):
    """A failure to report as one ``stage_model: error:`` line and an exit code."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StoreContents(NamedTuple):
    model_files: List[str]  # paths relative to the target
    total_bytes: int
    partial_files: List[str]


def log(message: str) -> None:
    print(f"stage_model: {message}", flush=True)


def first_line(error: BaseException) -> str:
    """modelscope errors append request and response detail on further lines."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_marker(target: str) -> Optional[dict]:
    """Return the completion marker in target, or None if there is none.

    An unreadable or malformed marker counts as absent: the next run then re-verifies
    the files and writes a fresh one.
    """
    try:
        with open(os.path.join(target, MARKER_NAME), encoding="utf-8") as marker_file:
            marker = json.load(marker_file)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def write_marker(target: str, model_id: str, revision: str, contents: StoreContents) -> None:
    marker = {
        "modelId": model_id,
        "revision": revision,
        "files": len(contents.model_files),
        "bytes": contents.total_bytes,
        "completedAt": datetime.now(timezone.utc).strftime(MARKER_TIME_FORMAT),
    }
    fd, temp_path = tempfile.mkstemp(prefix=MARKER_NAME + ".", suffix=".tmp", dir=target)
    try:
        # mkstemp creates 0600; pods running as another user must be able to read the marker.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as marker_file:
            json.dump(marker, marker_file, indent=2)
            marker_file.write("\n")
            marker_file.flush()
            os.fsync(marker_file.fileno())
        os.replace(temp_path, os.path.join(target, MARKER_NAME))
    except BaseException:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        raise


def scan_store(target: str) -> StoreContents:
    model_files: List[str] = []
    partial_files: List[str] = []
    total_bytes = 0
    for directory, _, names in os.walk(target):
        for name in names:
            relative_path = os.path.relpath(os.path.join(directory, name), target)
            if relative_path.startswith(MARKER_NAME) or relative_path in CLIENT_INDEX_FILES:
                continue  # the marker and its temp files, modelscope 1.30.0's index
            if name.endswith(PARTIAL_SUFFIXES) or relative_path.startswith(CLIENT_DOWNLOAD_DIR + os.sep):
                partial_files.append(relative_path)
                continue
            model_files.append(relative_path)
            total_bytes += os.path.getsize(os.path.join(directory, name))
    return StoreContents(sorted(model_files), total_bytes, sorted(partial_files))


def verify_store(target: str, model_ref: str) -> StoreContents:
    contents = scan_store(target)
    if contents.partial_files:
        raise StageError(
            EXIT_VERIFY_FAILED,
            f"{model_ref}: partial downloads left in {target}: {', '.join(contents.partial_files[:5])}; "
            "delete them (or the whole directory) and re-run the Job",
        )
    if not contents.model_files:
        raise StageError(
            EXIT_VERIFY_FAILED,
            f"{model_ref}: the download finished but {target} holds no files; "
            "check that --allow-pattern matches files of this revision",
        )
    return contents


def use_writable_modelscope_dirs(target: str) -> None:
    """Point MODELSCOPE_CACHE / MODELSCOPE_HOME at writable places unless already set.

    modelscope settles both from the environment once per process, so this runs before it
    is imported. Its defaults (~/.cache/modelscope, ~/.modelscope) are often not writable
    in a container. With local_dir downloads the cache only holds lock files and HOME a
    session id. They go to ``<target>/../.modelscope/{cache,home}``: writable wherever the
    target is, outside it so they are never counted or served as model files, and on the
    same volume, so two runs staging the same model there share download locks.
    A client without modelscope_hub also gets MODELSCOPE_CREDENTIALS_PATH (see below).
    """
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
    if not os.environ.get("MODELSCOPE_CREDENTIALS_PATH") and not has_module("modelscope_hub"):
        os.environ["MODELSCOPE_CREDENTIALS_PATH"] = os.path.join(os.environ["MODELSCOPE_HOME"], "credentials")


def has_module(name: str) -> bool:
    """Whether a top-level module can be imported, without importing it."""
    return importlib.util.find_spec(name) is not None


class ClientSupport(NamedTuple):
    """What the installed modelscope client takes, read from its snapshot_download."""

    version: str
    takes_endpoint: bool  # 1.40.2: an endpoint= argument; 1.30.0: only MODELSCOPE_DOMAIN
    reads_token: bool  # 1.40.2 reads MODELSCOPE_API_TOKEN; 1.30.0 only the cookies of a prior login

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
        if self.reads_token:
            return "set MODELSCOPE_API_TOKEN to a token that can read this model"
        return (
            f"modelscope {self.version} does not read MODELSCOPE_API_TOKEN for downloads: "
            "a private model needs the tested client, modelscope 1.40.2 with modelscope-hub 0.5.1"
        )


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
    # Both clients raise requests.HTTPError for 401/403/404 from the hub. 1.40.2
    # (modelscope_hub/compat/snapshot_download.py) attaches the response, or wraps a hub error
    # that carries status_code. 1.30.0 HubApi.repo_exists raises HTTPError(response) for an
    # unknown model: the response is the exception's argument, not its .response.
    response = getattr(error, "response", None)
    if response is None:
        response = next((arg for arg in error.args if hasattr(arg, "status_code")), None)
    status = getattr(response, "status_code", None) or getattr(error.__cause__, "status_code", None)
    detail = first_line(error)
    if response is not None and detail.startswith("<Response"):
        detail = f"HTTP {status} for {getattr(response, 'url', 'the hub')}"
    if status == 404:
        private_hint = (
            "a private model also needs MODELSCOPE_API_TOKEN" if client.reads_token else client.token_hint()
        )
        return StageError(
            EXIT_NOT_FOUND,
            f"{model_ref}: model or revision not found on the hub ({detail}); "
            f"check --model-id and --revision ({private_hint})",
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


def download_snapshot(args: argparse.Namespace, target: str, model_ref: str) -> None:
    # Imported here, not at the top: the MODELSCOPE_* variables must be set first, and a run
    # that finds a complete store should not pay for the import.
    try:
        import requests

        import modelscope
        from modelscope import snapshot_download

        # 1.30.0 defines it in modelscope/hub/errors.py; 1.40.2 re-exports modelscope_hub's.
        from modelscope.hub.errors import NotExistError
    except ImportError as error:
        raise StageError(
            EXIT_DOWNLOAD_FAILED,
            f"{model_ref}: cannot import the modelscope client ({error}); the Job image needs the "
            "modelscope package (1.40.2 with modelscope-hub 0.5.1, and 1.30.0, are tested)",
        ) from error

    client = ClientSupport.of(getattr(modelscope, "__version__", "(unknown version)"), snapshot_download)
    options = {
        "revision": args.revision,
        "local_dir": target,
        "allow_patterns": args.allow_pattern,
        "max_workers": args.max_workers,
    }
    if args.endpoint and client.takes_endpoint:
        options["endpoint"] = args.endpoint
        log(f"using modelscope {client.version}")
    elif args.endpoint:
        os.environ["MODELSCOPE_DOMAIN"] = endpoint_as_domain(args.endpoint, client, model_ref)
        log(f"using modelscope {client.version}, hub https://{os.environ['MODELSCOPE_DOMAIN']} (MODELSCOPE_DOMAIN)")
    else:
        log(f"using modelscope {client.version}")
    if os.environ.get("MODELSCOPE_API_TOKEN") and not client.reads_token:
        log(f"warning: {client.token_hint()}")

    try:
        snapshot_download(args.model_id, **options)
    except requests.HTTPError as error:
        raise describe_http_error(error, model_ref, client) from error
    except NotExistError as error:  # 1.30.0 HubApi.get_valid_revision_detail: unknown revision
        raise StageError(
            EXIT_NOT_FOUND,
            f"{model_ref}: revision not found on the hub ({first_line(error)}); check --revision",
        ) from error
    except Exception as error:
        # 1.40.2: modelscope_hub.errors.FileDownloadError, raised once every file was
        # attempted, lists the failed files (modelscope_hub/_download.py). It is matched by
        # its attributes, as 1.30.0 has no modelscope_hub; there a failing file raises
        # urllib3's MaxRetryError or FileIntegrityError at once (hub/file_download.py
        # http_get_model_file, hub/utils/utils.py file_integrity_validation).
        if isinstance(getattr(error, "failed_files", None), dict) and hasattr(error, "total"):
            raise describe_failed_files(error, model_ref) from error
        # e.g. NetworkError, ServerError from the listing (1.40.2), ConnectionError, SSLError
        raise StageError(
            EXIT_DOWNLOAD_FAILED,
            f"{model_ref}: download failed: {type(error).__name__}: {first_line(error)}; {RESUME_HINT}",
        ) from error


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
    if marker is not None:
        log(
            f"{model_ref} already complete in {target}: {marker.get('files')} files, "
            f"{format_size(marker.get('bytes', 0))}, completed {marker.get('completedAt')}; nothing to do"
        )
        return EXIT_OK

    use_writable_modelscope_dirs(target)
    log(
        f"staging {model_ref} from {args.endpoint or 'the default hub'} into {target} "
        f"(max workers {args.max_workers}, allow patterns {args.allow_pattern or 'all files'})"
    )
    started = time.monotonic()
    download_snapshot(args, target, model_ref)
    try:
        contents = verify_store(target, model_ref)
        write_marker(target, args.model_id, args.revision, contents)
    except OSError as error:
        raise StageError(EXIT_VERIFY_FAILED, f"{model_ref}: could not verify or mark {target}: {error}") from error
    log(
        f"staged {model_ref}: {len(contents.model_files)} files, {format_size(contents.total_bytes)} "
        f"in {time.monotonic() - started:.1f} s; wrote {os.path.join(target, MARKER_NAME)}"
    )
    return EXIT_OK


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
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
        prog="stage_model", description="Stage one revision of a ModelScope model into a directory."
    )
    parser.add_argument("--model-id", required=True, help="ModelScope model id, OWNER/NAME")
    parser.add_argument("--revision", required=True, help="branch, tag or commit to stage")
    parser.add_argument("--target", required=True, help="directory for this revision's files")
    parser.add_argument("--endpoint", help="hub URL (default: modelscope's own choice)")
    parser.add_argument(
        "--allow-pattern",
        action="append",
        help="glob of files to download; repeatable (default: every file)",
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
    args = parser.parse_args(argv)
    if not MODEL_ID_PATTERN.fullmatch(args.model_id):
        parser.error(f"--model-id must look like OWNER/NAME, got {args.model_id!r}")
    if args.keep_revisions and model_root_of(args.target, args.revision) is None:
        parser.error(
            f"--keep-revisions needs a --target that ends with the revision, as in "
            f"MOUNT/{args.model_id}/{args.revision}, got {args.target!r}"
        )
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        return stage(args)
    except StageError as error:
        print(f"stage_model: error: {error}", file=sys.stderr, flush=True)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
