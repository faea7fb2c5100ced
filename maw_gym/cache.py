"""On-disk cache: where it lives, content hashes, atomic writes, locks and verified reads.

Every cached artefact is keyed by a hash of what it was computed from, so a stale entry is never
read back; writes go to a temporary file in the same directory and are renamed into place, so an
interrupted run leaves either the old file or the new one, never half of one (:func:`atomic_path`,
through which every write of maw-gym goes: a full disk or a read-only folder is one
:class:`WriteError` naming the path, and temporaries a killed run left are removed by the next).
Keys are file-name-safe slugs plus hashes (:func:`slug`), so every entry stays under the cache
root whatever a dataset is called (issue 10: an absolute dataset path used to write beside the
dataset). A per-entry file lock (:func:`locked`) makes a second process that wants the same
entry wait and reuse the first one's result, and :func:`load_or_build` verifies an entry when it
is read, rebuilding a bad one (a truncated file, a foreign one) instead of failing later.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import socket
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "MAW_GYM_CACHE"
#: What a cache entry's name may contain: no separators, no leading dot, so no escape from the root.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
#: Errors that mean "this file is not what was written" (truncated, bit-flipped, foreign) when
#: json, numpy, torch or zipfile read it.
CORRUPT_ERRORS = (
    ValueError,
    KeyError,
    TypeError,
    EOFError,
    OSError,
    RuntimeError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


class CacheError(ValueError):
    """A cache entry that is bad even after a rebuild (the message names the file)."""


def cache_root() -> Path:
    """``$MAW_GYM_CACHE`` or ``~/.cache/maw-gym``, absolute."""
    default = Path.home() / ".cache" / "maw-gym"
    return Path(os.environ.get(CACHE_ENV_VAR, default)).expanduser().resolve()


@contextmanager
def cache_root_at(root: Path) -> Iterator[None]:
    """Use ``root`` as the cache (``$MAW_GYM_CACHE``) inside the block, then restore it."""
    before = os.environ.get(CACHE_ENV_VAR)
    os.environ[CACHE_ENV_VAR] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CACHE_ENV_VAR, None)
        else:
            os.environ[CACHE_ENV_VAR] = before


def cache_dir(*parts: str) -> Path:
    """The cache root joined with ``parts`` (created); each part must be a safe name."""
    for part in parts:
        if not _SAFE_NAME.fullmatch(part):
            raise ValueError(
                f"cache directory part {part!r}: expected a file-name-safe name (see slug)"
            )
    root = cache_root()
    if root.exists() and not root.is_dir():
        problem = "is a file"
    elif root.exists() and not os.access(root, os.W_OK | os.X_OK):
        problem = "is not writable"
    else:
        try:
            return make_dirs(root.joinpath(*parts))
        except WriteError as error:
            problem = f"cannot be used ({error})"
    raise CacheError(f"{CACHE_ENV_VAR}={root}: the cache {problem}; set it to a writable folder")


def slug(text: str, length: int = 40) -> str:
    """A file-name-safe rendering of ``text``'s last path component (``/data/My Set`` ->
    ``My-Set``), for readable cache names; not unique, so every cache name that uses one also
    carries a hash of what the entry was computed from."""
    name = Path(str(text)).name or str(text)
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:length]
    return cleaned or "unnamed"


def stable_hash(*items: Any, length: int = 16) -> str:
    """A short hex digest of JSON-serialisable items (keys sorted), bytes or files' contents."""
    digest = hashlib.sha256()
    for item in items:
        if isinstance(item, bytes):
            digest.update(item)
        elif isinstance(item, Path):
            digest.update(file_hash(item).encode())
        else:
            digest.update(json.dumps(item, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:length]


def file_hash(path: Path, length: int = 16) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


class WriteError(ValueError):
    """A write that failed for a reason the user must fix: a full disk, a read-only folder, a
    file where a folder should be (the message names the path and what to do)."""


#: The write failures :func:`disk_errors` turns into one line, and what to do about each
#: (issue 22: each was an ``OSError`` traceback, or worse).
_DISK_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EROFS: "write to a writable folder",
    errno.EACCES: "write to a writable folder",
    errno.EPERM: "write to a writable folder",
    errno.ENOTDIR: "a file stands where a folder is needed",
    errno.EEXIST: "a file stands where a folder is needed",
    errno.EISDIR: "a folder stands where a file is needed",
}
#: A temporary file or folder of a process that is gone is removed once it is this old.
STALE_AFTER_S = 15 * 60
#: Temporary names: ``.<final name>.<host>-<pid>.<random>.tmp``, so that a later process can
#: tell its own tool's leftovers (and whose they were) from anything else.
_TEMP_NAME = re.compile(r"\..+\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)\.[A-Za-z0-9_]+\.tmp")
_SWEPT: set[Path] = set()


@contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """Raise a disk failure in the block (see ``_DISK_HINTS``) as one :class:`WriteError`
    naming ``path``; other errors pass unchanged."""
    try:
        yield
    except OSError as error:
        if error.errno not in _DISK_HINTS:
            raise
        raise WriteError(
            f"{path}: cannot be written ({error.strerror}); {_DISK_HINTS[error.errno]}"
        ) from None


def make_dirs(path: Path) -> Path:
    """``path`` as a folder (created with its parents), a disk failure as a WriteError."""
    path = Path(path)
    with disk_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _new_temp(path: Path, folder: bool) -> Path:
    """An empty temporary file (or folder) beside ``path``, readable as the umask allows
    (mkstemp and mkdtemp make them private; results are for sharing)."""
    prefix, suffix = f".{path.name}.{_host_tag()}-{os.getpid()}.", ".tmp"
    if folder:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=suffix))
    else:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
        os.close(handle)
        tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod((0o777 if folder else 0o666) & ~umask)
    return tmp


def _remove_temp(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)  # guarded: a temporary folder named by _new_temp
    else:
        tmp.unlink(missing_ok=True)


def _is_stale(entry: Path, host: str, now: float) -> bool:
    """Whether ``entry`` is a temporary of this tool (by its name) whose process on this host
    has ended, untouched for :data:`STALE_AFTER_S`."""
    match = _TEMP_NAME.fullmatch(entry.name)
    if match is None or match["host"] != host:
        return False
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        pass  # no such process: the writer is gone
    except (PermissionError, OverflowError, ValueError):
        return False  # alive (another user's), or a pid that cannot be checked
    else:
        return False  # alive
    try:
        return now - entry.lstat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:
        return False


def remove_stale_temps(folder: Path) -> None:
    """Remove the temporaries a killed process left in ``folder`` (once per folder and
    process): a run that died by SIGKILL or SIGBUS runs no ``finally`` (issue 22: 9 MB of
    ``.tmp`` files stayed in ``states/``)."""
    folder = Path(folder)
    if folder in _SWEPT:
        return
    _SWEPT.add(folder)
    host, now = _host_tag(), time.time()
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if _is_stale(entry, host, now):
                logger.info("removing %s, left by a process that ended", entry)
                _remove_temp(entry)


@contextmanager
def atomic_path(
    path: Path, *, folder: bool = False, place: Callable[[Path, Path], None] = os.replace
) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (an empty file, or with ``folder`` an empty
    folder), moved onto ``path`` by ``place(tmp, path)`` if the block succeeds.

    Every write of maw-gym goes through here: a reader sees the old entry or the new one, never
    half of one; a disk failure anywhere in the block is one :class:`WriteError` naming
    ``path`` (:func:`disk_errors`); the temporary is removed whatever happens, and one that a
    killed process left is removed by the next write into its folder
    (:func:`remove_stale_temps`).
    """
    path = Path(path)
    with disk_errors(path):
        if path.is_dir() and not folder:  # found now, not after the work of the block
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        make_dirs(path.parent)
        remove_stale_temps(path.parent)
        tmp = _new_temp(path, folder)
        try:
            yield tmp
            place(tmp, path)
        finally:
            _remove_temp(tmp)


def rename_into_place(source: Path, target: Path) -> None:
    """``place`` for :func:`atomic_path` of an entry that only one content can have (an
    extracted archive, an imported artifact): rename ``source`` to ``target``, and if another
    process got there first (folders are only ever renamed into place complete), keep theirs."""
    try:
        os.rename(source, target)
    except OSError:
        if not target.is_dir():
            raise


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (indented, keys kept in insertion order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def parse_json(text: str | bytes, where: str | Path) -> Any:
    """``json.loads(text)``; malformed, non-UTF-8 or too deeply nested JSON (whose recursion
    error was a traceback, issue 22) is a ``ValueError`` naming ``where``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{where}: not valid JSON (nested too deeply)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{where}: not valid JSON ({error}); the file is corrupt") from None


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing or malformed file is an error naming it."""
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    return parse_json(text, path)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive inter-process lock on the entry ``path`` (a file or a folder, in the
    cache or not) for the block.

    A second process that wants the same entry waits here, then finds it built and reuses it
    (two concurrent builds used to train the same encoder twice). Lock files live in
    ``cache_dir("locks")``, named by the entry's absolute path, so entry folders hold entries only.
    """
    from filelock import FileLock

    path = Path(path).resolve()
    lock = cache_dir("locks") / f"{slug(path.name)}-{stable_hash(str(path))}.lock"
    with FileLock(lock):
        yield


def remove_cache_entry(path: Path) -> None:
    """Delete one bad cache entry (a file or a folder), refusing anything outside the cache."""
    path = Path(path).resolve()
    root = cache_root()
    if path == root or not path.is_relative_to(root):
        raise ValueError(f"{path}: not inside the cache {root}; refusing to delete it")
    if path.is_dir():
        shutil.rmtree(path)  # guarded: inside the cache root, checked above
    else:
        path.unlink(missing_ok=True)


def load_or_build(path: Path, build: Callable[[Path], None], load: Callable[[Path], T]) -> T:
    """``load(path)``, first building the entry (``build(tmp)``, renamed onto ``path``) if it is
    missing or ``load`` finds it bad; the whole call holds the entry's lock.

    ``load`` must raise one of :data:`CORRUPT_ERRORS` for a bad entry; an entry that is still
    bad right after a rebuild is a :class:`CacheError` naming the file.
    """
    path = Path(path)
    with locked(path):
        if path.exists():
            try:
                return load(path)
            except CORRUPT_ERRORS as error:
                logger.warning("rebuilding %s: %s", path, error)
                remove_cache_entry(path)
        with atomic_path(path) as tmp:
            build(tmp)
        try:
            return load(path)
        except CORRUPT_ERRORS as error:
            raise CacheError(f"{path}: unreadable right after it was built ({error})") from error
