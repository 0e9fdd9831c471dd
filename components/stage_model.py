"""Stage one revision of a ModelScope model into a directory on the shared model volume.

Run by the model-staging Kubernetes Job:

    python stage_model.py --model-id OWNER/NAME --revision REV --target DIR
        [--endpoint URL] [--allow-pattern GLOB ...] [--max-workers N]

The target directory holds exactly one model revision. When every file is in place the
script writes MARKER_NAME there, last and atomically. A later run that finds a marker for
the same model and revision exits at once without importing modelscope or touching the
network; modelscope itself would re-list the repository and re-hash every local file.

A run that dies part-way leaves no marker, and the next run resumes: modelscope keeps
finished files (after re-checking their hashes) and continues ``<file>.incomplete`` partial
files with HTTP Range requests.

Exit codes:
    0  the store is complete (now, or already was)
    2  bad arguments, or the target holds the marker of another model or revision
    3  the model or revision does not exist on the hub (404 from the file listing)
    4  the download failed (server errors, network errors, files that failed their
       hash check, access denied, ...)
    5  modelscope reported success but the files on disk do not form a complete store

Unless already set, MODELSCOPE_CACHE and MODELSCOPE_HOME point into a ``.modelscope``
directory beside the target (see use_writable_modelscope_dirs).
"""

import argparse
import json
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import List, NamedTuple, Optional

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
        "completedAt": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
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
            if relative_path.startswith(MARKER_NAME):  # the marker and its temp files
                continue
            if name.endswith(PARTIAL_SUFFIXES):
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
    """
    state_dir = os.path.join(os.path.dirname(target), ".modelscope")
    for variable, subdirectory in (("MODELSCOPE_CACHE", "cache"), ("MODELSCOPE_HOME", "home")):
        if not os.environ.get(variable):
            os.environ[variable] = os.path.join(state_dir, subdirectory)


def describe_http_error(error: BaseException, model_ref: str) -> StageError:
    # modelscope turns 401/403/404 from the hub into requests.HTTPError. The status is
    # read from the response, or from the hub error it wraps when no response is attached.
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None) or getattr(error.__cause__, "status_code", None)
    if status == 404:
        return StageError(
            EXIT_NOT_FOUND,
            f"{model_ref}: model or revision not found on the hub ({first_line(error)}); "
            "check --model-id and --revision (a private model also needs MODELSCOPE_API_TOKEN)",
        )
    return StageError(
        EXIT_DOWNLOAD_FAILED,
        f"{model_ref}: access denied by the hub (HTTP {status}: {first_line(error)}); "
        "set MODELSCOPE_API_TOKEN to a token that can read this model",
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
        from modelscope import snapshot_download
        from modelscope_hub.errors import FileDownloadError
    except ImportError as error:
        raise StageError(
            EXIT_DOWNLOAD_FAILED,
            f"{model_ref}: cannot import the modelscope client ({error}); "
            "the Job image needs a modelscope that ships modelscope_hub (1.40.2 is tested)",
        ) from error

    try:
        snapshot_download(
            args.model_id,
            revision=args.revision,
            local_dir=target,
            endpoint=args.endpoint,
            allow_patterns=args.allow_pattern,
            max_workers=args.max_workers,
        )
    except requests.HTTPError as error:
        raise describe_http_error(error, model_ref) from error
    except FileDownloadError as error:  # some files failed after every file was attempted
        raise describe_failed_files(error, model_ref) from error
    except Exception as error:  # e.g. NetworkError, ServerError from the listing
        raise StageError(
            EXIT_DOWNLOAD_FAILED,
            f"{model_ref}: download failed: {type(error).__name__}: {first_line(error)}; {RESUME_HINT}",
        ) from error


def format_size(total_bytes: int) -> str:
    return f"{total_bytes} bytes ({total_bytes / 2**30:.2f} GiB)"


def stage(args: argparse.Namespace) -> int:
    target = os.path.abspath(args.target)
    model_ref = f"{args.model_id}@{args.revision}"

    marker = read_marker(target)
    if marker is not None:
        if (marker.get("modelId"), marker.get("revision")) != (args.model_id, args.revision):
            raise StageError(
                EXIT_USAGE,
                f"{model_ref}: {target} already holds {marker.get('modelId')}@{marker.get('revision')}; "
                "each revision needs its own --target directory",
            )
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
    args = parser.parse_args(argv)
    if not MODEL_ID_PATTERN.match(args.model_id):
        parser.error(f"--model-id must look like OWNER/NAME, got {args.model_id!r}")
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
