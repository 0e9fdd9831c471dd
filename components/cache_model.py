"""Copy one verified model revision from the shared volume into a node-local cache.

Run by the node-cache DaemonSet on every GPU node, from a ConfigMap, with the server image's
Python (standard library only, Python 3.9 or later; it imports nothing from this package):

    python cache_model.py --source DIR --cache-root DIR --name NAME [--keep NAME ...]
        [--keep-stored DIR] [--marker-name NAME] [--reserve-gb N] [--wait-seconds N] [--stay]
        [--remove-when-gone URL [--token-file PATH] [--ca-file PATH]]

``--source`` is the revision's directory on the shared volume, as stage_model.py leaves it;
its completion marker (MARKER_NAME) lists every file with its size and, where the hub gave
one, its sha256. The copy goes to ``<cache-root>/<name>``. What this script relies on in the
marker is kept small on purpose: a JSON object whose ``manifest`` is a list of
``{"path": "a/b", "size": int, "sha256": hex (optional)}``; the rest is copied as it is
(tests/test_cache_model.py runs stage_model's own marker through read_manifest, so a change of
format there fails that test).

Steps, each logged for ``kubectl logs``:

1. Wait, polling every ``--wait-seconds``, until the source marker exists and parses: the
   staging Job writes it last, so no copy ever starts from an incomplete store.
2. Take a lock on the cache root (one copy per node at a time), and evict: every revision
   directory under the cache root that this script made (it holds OWNED_NAME) and that is
   neither ``--name`` nor a ``--keep``, nor (with ``--keep-stored``) a revision the model
   volume still holds complete, is removed. Anything else there is never touched.
3. If ``<cache-root>/<name>`` holds a marker equal to the source's and every file has its
   recorded size: "already cached", done.
4. Otherwise the local marker goes first (the copy is not complete while it changes), files
   verified by an earlier run stay, everything else in the directory goes, and the bytes still
   to copy plus ``--reserve-gb`` are compared with the free space of the cache root: short, it
   stops before writing anything.
5. Each file is copied to a temporary name beside its place, hashed while it is copied (one
   read of the source), fsynced, checked against its recorded size and sha256 (size only
   where none is recorded), and renamed into place; a mismatch deletes the copy and stops.
   Each verified file is added to PROGRESS_NAME (written atomically), so a copy that is
   interrupted resumes where it stopped.
6. The source marker is read again (a restage meanwhile stops the run) and copied, last and
   atomically: its presence in ``<cache-root>/<name>`` means every file there is complete
   and verified.

Why a progress record rather than re-hashing what a previous run left: re-reading a
revision of hundreds of GB costs about as long as copying it again. A file counts as done
only when the record lists it with the size and sha256 the manifest gives now, and the file
on disk still has the size, inode and modification time recorded when it was verified (a
file replaced or rewritten since fails that). A file renamed into place whose record entry
was not yet written is copied again.

Files are made 0644 and directories 0755: the server reads them as another user.

With ``--stay`` the script keeps running after a success until SIGTERM: a DaemonSet's
container must not exit. With ``--remove-when-gone URL`` (the API path of the DaemonSet that
runs it), SIGTERM makes it ask the Kubernetes API whether that DaemonSet is being deleted:
404, or an object with ``metadata.deletionTimestamp``, removes everything this script made
under the cache root; any other answer, or none, keeps the cache.

Exit codes:
    0  the revision is cached (now, or already was); or SIGTERM was handled
    2  bad arguments, or ``<cache-root>/<name>`` is a directory this script did not make
    3  the source is not usable: a marker without a valid file list, a file missing or of
       another size than recorded, or a marker that changed during the copy
    4  a copied file does not match its recorded sha256 (the copy is deleted)
    5  not enough free space under the cache root
    6  reading or writing failed (I/O error)
"""

import argparse
import fcntl
import hashlib
import json
import os
import queue
import shutil
import signal
import ssl
import stat
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, List, NamedTuple, Optional, Set

MARKER_NAME = ".modelstore-complete.json"
"""stage_model.MARKER_NAME: the staging Job's completion marker."""

OWNED_NAME = ".node-cache-owned"
"""In every revision directory this script made: eviction and removal touch only those."""
PROGRESS_NAME = ".node-cache-progress.json"
"""Files of the revision directory already copied and verified (see the module docstring)."""
LOCK_NAME = ".node-cache.lock"
TEMP_SUFFIX = ".node-cache-partial"
EVICTING_PREFIX = ".node-cache-evicting-"
"""An evicted directory is renamed to this prefix + its name first, then removed: an eviction
cut short leaves a name that the next run removes, never a directory that lost its mark."""

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SOURCE = 3
EXIT_MISMATCH = 4
EXIT_NO_SPACE = 5
EXIT_IO = 6

BLOCK = 16 * 1024 * 1024
BUFFERS = 4
WRITE_BACK = 64 * 1024 * 1024
"""Bytes written between two requests to the kernel to start writing them to disk (see copy_file)."""
GB = 10**9

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
API_TIMEOUT = 10.0


class CacheError(Exception):
    """A failure to report as one ``cache_model: error:`` line and an exit code."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(Exception):
    """SIGTERM arrived."""


class Entry(NamedTuple):
    """One file of the manifest."""

    path: str  # relative, "/" separators
    size: int
    sha256: Optional[str]  # lower-case hex, None when the marker records none


def log(message: str) -> None:
    print(f"cache_model: {message}", flush=True)


def size_text(count: float) -> str:
    return f"{count / GB:.2f} GB"


# -- the marker ---------------------------------------------------------------------------


def read_marker_bytes(directory: str, marker_name: str) -> Optional[bytes]:
    try:
        with open(os.path.join(directory, marker_name), "rb") as marker_file:
            return marker_file.read()
    except OSError:
        return None


def parse_marker(content: Optional[bytes]) -> Optional[dict]:
    """The marker as a JSON object, None when absent or not one."""
    if content is None:
        return None
    try:
        marker = json.loads(content)
    except ValueError:
        return None
    return marker if isinstance(marker, dict) else None


def safe_path(path: object) -> bool:
    """A relative path inside the directory, none of whose parts is ours or a way out."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or "\0" in path:
        return False
    parts = path.split("/")
    return all(part not in ("", ".", "..") for part in parts) and not parts[-1].endswith(TEMP_SUFFIX) and not (
        len(parts) == 1 and parts[0] in (OWNED_NAME, PROGRESS_NAME)
    )


def read_manifest(marker: dict, marker_name: str = MARKER_NAME) -> List[Entry]:
    """The files the marker lists; CacheError(EXIT_SOURCE) when it lists none or is malformed."""
    manifest = marker.get("manifest")
    if not isinstance(manifest, list):
        raise CacheError(
            EXIT_SOURCE,
            "the source marker has no file list (\"manifest\"): it was written by an older staging script; "
            "run the staging Job again (it rewrites the marker with the list) or restage the revision",
        )
    entries = []
    for item in manifest:
        path = item.get("path") if isinstance(item, dict) else None
        size = item.get("size") if isinstance(item, dict) else None
        sha256 = item.get("sha256") if isinstance(item, dict) else None
        if (
            not safe_path(path)
            or path == marker_name
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or not (sha256 is None or (isinstance(sha256, str) and len(sha256) == 64))
        ):
            raise CacheError(EXIT_SOURCE, f"the source marker's manifest has an entry this script cannot use: {item!r}")
        entries.append(Entry(path, size, sha256.lower() if sha256 else None))
    if len({e.path for e in entries}) != len(entries):
        raise CacheError(EXIT_SOURCE, "the source marker's manifest lists a path twice")
    return entries


def wait_for_marker(source: str, marker_name: str, wait_seconds: float) -> bytes:
    """The source marker's content, once it exists and parses."""
    while True:
        content = read_marker_bytes(source, marker_name)
        if parse_marker(content) is not None:
            return content  # type: ignore[return-value]
        what = "absent" if content is None else "not a JSON object"
        marker_path = os.path.join(source, marker_name)
        log(f"waiting for the staging Job: {marker_path} is {what}; next look in {wait_seconds:g} s")
        time.sleep(wait_seconds)


# -- writing ------------------------------------------------------------------------------


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, content: bytes) -> None:
    temp_path = path + TEMP_SUFFIX
    fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp_path, path)
    fsync_dir(os.path.dirname(path))


def make_dirs(root: str, relative_dir: str) -> None:
    """Directories below root, each 0755 whatever the umask."""
    path = root
    for part in relative_dir.split("/") if relative_dir else []:
        path = os.path.join(path, part)
        if not os.path.isdir(path):
            os.mkdir(path)
            os.chmod(path, 0o755)


class Progress:
    """PROGRESS_NAME: path -> the size, sha256, inode and mtime of each file verified."""

    def __init__(self, target: str) -> None:
        self.path = os.path.join(target, PROGRESS_NAME)
        self.files: Dict[str, dict] = {}
        try:
            with open(self.path, encoding="utf-8") as record_file:
                record = json.load(record_file)
        except (OSError, ValueError):
            return
        files = record.get("files") if isinstance(record, dict) else None
        if isinstance(files, dict):
            self.files = {path: item for path, item in files.items() if isinstance(item, dict)}

    def verified(self, target: str, entry: Entry) -> bool:
        item = self.files.get(entry.path)
        if item is None:
            return False
        try:
            status = os.stat(os.path.join(target, *entry.path.split("/")))
        except OSError:
            return False
        return (
            stat.S_ISREG(status.st_mode)
            and item.get("size") == entry.size == status.st_size
            and (entry.sha256 is None or item.get("sha256") == entry.sha256)
            and item.get("inode") == status.st_ino
            and item.get("mtimeNs") == status.st_mtime_ns
        )

    def add(self, entry: Entry, sha256: str, status: os.stat_result) -> None:
        self.files[entry.path] = {
            "size": status.st_size,
            "sha256": sha256,
            "inode": status.st_ino,
            "mtimeNs": status.st_mtime_ns,
        }
        self.save()

    def keep_only(self, paths: Set[str]) -> None:
        self.files = {path: item for path, item in self.files.items() if path in paths}
        self.save()

    def save(self) -> None:
        write_atomically(self.path, (json.dumps({"files": self.files}, indent=0, sort_keys=True) + "\n").encode())


# -- copying ------------------------------------------------------------------------------


def copy_file(source_path: str, temp_path: str, expected_size: int) -> str:
    """Copy source_path to temp_path (0644, fsynced) and return the sha256 of what was written.

    One read of the source: a reader thread fills BUFFERS buffers of BLOCK bytes while this
    thread hashes and writes the previous ones. hashlib and os.write release the GIL on large
    buffers, so reading, hashing and writing overlap (bench/cold_start.py measures it against
    cp followed by sha256sum). Every WRITE_BACK bytes the kernel is asked to start writing them
    to disk: POSIX_FADV_DONTNEED starts write-back of the range's dirty pages without waiting
    for it (Linux mm/fadvise.c generic_fadvise: __filemap_fdatawrite_range with WB_SYNC_NONE)
    and drops only pages that are already clean. The disk then writes while the copy goes on,
    instead of all at each file's fsync (docs/node-cache.md gives the figures with and without).
    Raises CacheError(EXIT_SOURCE) when the source holds more or fewer bytes than expected.
    """
    digest = hashlib.sha256()
    empty: "queue.Queue[bytearray]" = queue.Queue()
    filled: "queue.Queue[tuple]" = queue.Queue()
    for _ in range(BUFFERS):
        empty.put(bytearray(BLOCK))
    stop = threading.Event()

    def read(stream) -> None:
        try:
            while not stop.is_set():
                buffer = empty.get()
                count = stream.readinto(buffer)
                filled.put((buffer, count, None))
                if not count:
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the writing thread
            filled.put((None, 0, error))

    written = started_back = 0
    with open(source_path, "rb", buffering=0) as stream:
        reader = threading.Thread(target=read, args=(stream,), name="cache-reader", daemon=True)
        fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.fchmod(fd, 0o644)
            reader.start()
            while True:
                buffer, count, error = filled.get()
                if error is not None:
                    raise error
                if not count:
                    break
                written += count
                if written > expected_size:
                    break
                view = memoryview(buffer)[:count]
                digest.update(view)
                while view:
                    view = view[os.write(fd, view) :]
                empty.put(buffer)
                if written - started_back >= WRITE_BACK:
                    os.posix_fadvise(fd, started_back, written - started_back, os.POSIX_FADV_DONTNEED)
                    started_back = written
            if written != expected_size:
                raise CacheError(
                    EXIT_SOURCE,
                    f"{source_path} holds {'more than' if written > expected_size else str(written) + ' of'} "
                    f"the {expected_size} bytes its marker records; the store changed after staging: "
                    "run the staging Job again (it repairs the revision) and restart this pod",
                )
            os.fsync(fd)
        finally:
            stop.set()
            empty.put(bytearray(0))  # wake a reader waiting for a buffer
            os.close(fd)
            reader.join(timeout=60)
    return digest.hexdigest()


def copy_verified(source: str, target: str, entry: Entry, progress: Progress) -> None:
    """Copy one file, check it against the manifest, rename it into place, record it."""
    place = os.path.join(target, *entry.path.split("/"))
    make_dirs(target, entry.path.rpartition("/")[0])
    temp_path = place + TEMP_SUFFIX
    try:
        actual = copy_file(os.path.join(source, *entry.path.split("/")), temp_path, entry.size)
        if entry.sha256 is not None and actual != entry.sha256:
            raise CacheError(
                EXIT_MISMATCH,
                f"{entry.path}: the copy's sha256 is {actual}, the marker records {entry.sha256}; "
                "the copy was deleted. The file on the shared volume differs from what was staged: "
                "run the staging Job with --verify to repair it, then restart this pod",
            )
        os.replace(temp_path, place)
    except FileNotFoundError as error:
        if error.filename == temp_path:
            raise
        raise CacheError(
            EXIT_SOURCE,
            f"{entry.path} is missing from the source ({error.filename}) although its marker lists it; "
            "run the staging Job again (it repairs the revision) and restart this pod",
        ) from error
    finally:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
    fsync_dir(os.path.dirname(place))
    progress.add(entry, actual, os.stat(place))


def clear_unverified(target: str, keep: Set[str]) -> int:
    """Remove every file and directory in target that is not ours or a verified file; bytes freed."""
    freed = 0
    bookkeeping = {OWNED_NAME, PROGRESS_NAME}
    for directory, subdirectories, names in os.walk(target, topdown=False):
        for name in names:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, target).replace(os.sep, "/")
            if relative in keep or relative in bookkeeping:
                continue
            freed += os.lstat(path).st_size
            os.unlink(path)
        for name in subdirectories:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                os.unlink(path)
            elif not os.listdir(path):
                os.rmdir(path)
    return freed


def cache(args: argparse.Namespace, marker_content: bytes, entries: List[Entry]) -> None:
    """Bring <cache-root>/<name> to a verified copy of the source (steps 3 to 6 above)."""
    source_marker = parse_marker(marker_content) or {}
    target = os.path.join(args.cache_root, args.name)
    revision = f"{source_marker.get('modelId')}@{source_marker.get('revision')}"
    total = sum(e.size for e in entries)

    if owned(target) and parse_marker(read_marker_bytes(target, args.marker_name)) == source_marker and all(
        file_size(target, e.path) == e.size for e in entries
    ):
        log(f"{revision} already cached in {target}: {len(entries)} files, {size_text(total)}; nothing to copy")
        return

    claim(target)
    local_marker = os.path.join(target, args.marker_name)
    if os.path.exists(local_marker):
        os.unlink(local_marker)  # the directory is no longer a complete copy
        fsync_dir(target)
    progress = Progress(target)
    done = {e.path for e in entries if progress.verified(target, e)}
    progress.keep_only(done)
    freed = clear_unverified(target, done)
    if freed:
        log(f"removed {size_text(freed)} of partial or unlisted files from {target}")
    to_copy = [e for e in entries if e.path not in done]
    needed = sum(e.size for e in to_copy)
    reserve = int(args.reserve_gb * GB)
    free = shutil.disk_usage(args.cache_root).free
    if needed + reserve > free:
        raise CacheError(
            EXIT_NO_SPACE,
            f"not enough space in {args.cache_root} for {revision}: {needed} bytes ({size_text(needed)}) still to "
            f"copy plus the reserve of {reserve} bytes ({size_text(reserve)}) need {needed + reserve} bytes, "
            f"{free} bytes ({size_text(free)}) are free; free space on the node's disk, lower --reserve-gb, "
            "or list fewer revisions to keep",
        )
    log(
        f"copying {revision} from {args.source} to {target}: {len(to_copy)} of {len(entries)} files, "
        f"{size_text(needed)} of {size_text(total)} ({len(done)} verified by an earlier run); "
        f"{size_text(free)} free, reserve {size_text(reserve)}"
    )
    started = time.monotonic()
    for number, entry in enumerate(to_copy, 1):
        file_started = time.monotonic()
        copy_verified(args.source, target, entry, progress)
        elapsed = time.monotonic() - file_started
        check = "sha256" if entry.sha256 else "size only, no sha256 recorded"
        log(
            f"[{number}/{len(to_copy)}] {entry.path}: {size_text(entry.size)} in {elapsed:.1f} s "
            f"({entry.size / 1e6 / max(elapsed, 1e-6):.0f} MB/s), verified ({check})"
        )
    if read_marker_bytes(args.source, args.marker_name) != marker_content:
        raise CacheError(
            EXIT_SOURCE,
            f"the source marker {os.path.join(args.source, args.marker_name)} changed or went away during the copy "
            "(the revision is being restaged); no local marker written: this pod copies again when it restarts",
        )
    write_atomically(local_marker, marker_content)
    elapsed = time.monotonic() - started
    log(
        f"cached {revision} in {target}: {len(entries)} files, {size_text(total)}; copied {size_text(needed)} "
        f"in {elapsed:.1f} s ({needed / 1e6 / max(elapsed, 1e-6):.0f} MB/s); wrote {local_marker}"
    )


def file_size(target: str, path: str) -> Optional[int]:
    try:
        status = os.stat(os.path.join(target, *path.split("/")))
    except OSError:
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


# -- the cache root -----------------------------------------------------------------------


def owned(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path) and os.path.isfile(os.path.join(path, OWNED_NAME))


def claim(target: str) -> None:
    """Make target ours: create it with its mark, or refuse a directory made by someone else."""
    if owned(target):
        return
    empty_dir = os.path.isdir(target) and not os.path.islink(target) and not os.listdir(target)
    if os.path.lexists(target) and not empty_dir:
        raise CacheError(
            EXIT_USAGE,
            f"{target} exists and was not made by this script (no {OWNED_NAME} in it); it is left alone: "
            "remove it or choose another --name",
        )
    if not os.path.isdir(target):
        os.mkdir(target)
    os.chmod(target, 0o755)
    write_atomically(os.path.join(target, OWNED_NAME), b"made by cache_model.py; removed by it when evicted\n")


def remove_owned(root: str, name: str) -> None:
    """Rename an owned directory out of the way, then remove it (see EVICTING_PREFIX)."""
    doomed = os.path.join(root, EVICTING_PREFIX + name)
    os.rename(os.path.join(root, name), doomed)
    shutil.rmtree(doomed)


def evict(root: str, keep: Set[str]) -> None:
    """Remove the revision directories this script made that are not in keep."""
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith(EVICTING_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
            log(f"finished removing {path}")
        elif name not in keep and owned(path):
            size = tree_size(path)
            remove_owned(root, name)
            log(f"evicted {name} ({size_text(size)}): not among the revisions to keep ({', '.join(sorted(keep))})")


def stored_revisions(root: str, store: str, marker_name: str) -> Set[str]:
    """The cached revisions that the model volume still holds complete: a revision's name is its
    path under the volume's mount with "--" for "/" (components/node_cache.py revision_name), and
    the staging Job keeps its own revisions there (stage_model.py --keep-revisions)."""
    kept = set()
    for name in os.listdir(root):
        if owned(os.path.join(root, name)) and os.path.isfile(os.path.join(store, *name.split("--"), marker_name)):
            kept.add(name)
    return kept


def remove_all(root: str) -> None:
    """Everything this script made under root: its revision directories and its lock file."""
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith(EVICTING_PREFIX) or owned(path):
            size = tree_size(path)
            if owned(path):
                remove_owned(root, name)
            else:
                shutil.rmtree(path, ignore_errors=True)
            log(f"removed {name} ({size_text(size)})")
    lock = os.path.join(root, LOCK_NAME)
    if os.path.exists(lock):
        os.unlink(lock)


def tree_size(path: str) -> int:
    return sum(
        os.lstat(os.path.join(directory, name)).st_size for directory, _, names in os.walk(path) for name in names
    )


class RootLock:
    """An exclusive lock on the cache root: two pods of the DaemonSet on one node (an update
    with surge) never copy or evict at the same time."""

    def __init__(self, root: str) -> None:
        self.path = os.path.join(root, LOCK_NAME)

    def __enter__(self) -> "RootLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another copy on this node to finish (it holds {self.path})")
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_: object) -> None:
        os.close(self.fd)  # releases the lock


# -- removal on destroy ---------------------------------------------------------------------


def being_deleted(url: str, token_file: str, ca_file: str) -> Optional[str]:
    """Why the DaemonSet at url is being deleted, or None when it is not or the API cannot say.

    pulumi-kubernetes deletes with foreground cascading deletion (pulumi/pulumi-kubernetes#2379):
    the DaemonSet keeps existing, with metadata.deletionTimestamp set, until the garbage
    collector has deleted its pods; with background deletion it is gone first (404)
    (https://kubernetes.io/docs/concepts/architecture/garbage-collection/#cascading-deletion).
    A rolling update or a node drain terminates the pod while the DaemonSet lives on.
    """
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with open(token_file, encoding="utf-8") as token:
            request.add_header("Authorization", "Bearer " + token.read().strip())
    except OSError as error:
        log(f"no service account token ({token_file}: {error.strerror}); asking without one")
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=ca_file if os.path.exists(ca_file) else None)
    try:
        with urllib.request.urlopen(request, timeout=API_TIMEOUT, context=context) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return f"{url} answers 404: the DaemonSet is gone"
        log(f"keeping the cache: {url} answered HTTP {error.code} {error.reason} (the service account needs get on it)")
        return None
    except (OSError, ValueError) as error:
        log(f"keeping the cache: could not ask {url}: {error}")
        return None
    metadata = body.get("metadata") if isinstance(body, dict) else None
    deleted_at = metadata.get("deletionTimestamp") if isinstance(metadata, dict) else None
    if deleted_at:
        return f"the DaemonSet has been marked for deletion at {deleted_at}"
    log("keeping the cache: the DaemonSet lives on (an update or a drain stops this pod)")
    return None


def on_terminate(args: argparse.Namespace) -> int:
    log("SIGTERM")
    if args.remove_when_gone:
        reason = being_deleted(args.remove_when_gone, args.token_file, args.ca_file)
        if reason:
            log(f"{reason}; removing what this script made under {args.cache_root}")
            with RootLock(args.cache_root):
                remove_all(args.cache_root)
    return EXIT_OK


# -- the command line -----------------------------------------------------------------------


def revision_name(value: str) -> str:
    if not value or value in (".", "..") or "/" in value or value.startswith("."):
        raise argparse.ArgumentTypeError(f"must be one directory name, not hidden, without '/', got {value!r}")
    return value


def non_negative(value: str) -> float:
    number = float(value)
    if not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of at least 0, got {value}")
    return number


def positive(value: str) -> float:
    number = float(value)
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return number


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cache_model", description="Copy a staged model revision into a node-local cache, verified."
    )
    parser.add_argument("--source", required=True, help="the revision's directory on the shared volume")
    parser.add_argument("--cache-root", required=True, help="the node-local directory that holds the revisions")
    parser.add_argument("--name", required=True, type=revision_name, help="this revision's directory name there")
    parser.add_argument(
        "--keep",
        action="append",
        type=revision_name,
        default=[],
        metavar="NAME",
        help="another revision to keep; repeatable (every other one this script made is evicted)",
    )
    parser.add_argument(
        "--keep-stored",
        metavar="DIR",
        help="also keep every cached revision that DIR (the model volume's mount) still holds complete",
    )
    parser.add_argument(
        "--marker-name", default=MARKER_NAME, help=f"the completion marker's name (default {MARKER_NAME})"
    )
    parser.add_argument(
        "--reserve-gb", type=non_negative, default=0.0, help="GB (10^9 bytes) to leave free after the copy (default 0)"
    )
    parser.add_argument(
        "--wait-seconds", type=positive, default=30.0, help="seconds between looks for the source marker (default 30)"
    )
    parser.add_argument("--stay", action="store_true", help="after success, keep running until SIGTERM")
    parser.add_argument(
        "--remove-when-gone",
        metavar="URL",
        help="on SIGTERM, GET this DaemonSet's API URL; if it is gone or being deleted, remove the cache",
    )
    parser.add_argument("--token-file", default=os.path.join(SERVICE_ACCOUNT, "token"), help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", default=os.path.join(SERVICE_ACCOUNT, "ca.crt"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.remove_when_gone and not args.remove_when_gone.startswith(("https://", "http://")):
        parser.error(f"--remove-when-gone must be an http(s) URL, got {args.remove_when_gone!r}")
    if not os.path.isdir(args.cache_root):
        parser.error(f"--cache-root {args.cache_root} is not a directory")
    args.cache_root = os.path.abspath(args.cache_root)
    args.source = os.path.abspath(args.source)
    return args


def raise_terminated(*_: object) -> None:
    raise Terminated()


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        try:
            marker_content = wait_for_marker(args.source, args.marker_name, args.wait_seconds)
            entries = read_manifest(parse_marker(marker_content) or {}, args.marker_name)
            with RootLock(args.cache_root):
                stored = stored_revisions(args.cache_root, args.keep_stored, args.marker_name) if args.keep_stored else set()
                evict(args.cache_root, {args.name, *args.keep, *stored})
                cache(args, marker_content, entries)
        except CacheError as error:
            print(f"cache_model: error: {error}", file=sys.stderr, flush=True)
            return error.exit_code
        except OSError as error:
            print(f"cache_model: error: {error}", file=sys.stderr, flush=True)
            return EXIT_IO
        if args.stay:
            log("staying until SIGTERM")
            while True:
                time.sleep(3600)
        return EXIT_OK
    except Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return on_terminate(args)


if __name__ == "__main__":
    sys.exit(main())
