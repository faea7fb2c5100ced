"""On-disk cache: where it lives, content hashes, atomic writes, locks and verified reads.

Every cached artefact is keyed by a hash of what it was computed from, so a stale entry is never
read back; writes go to a temporary file in the same directory and are renamed into place, so an
interrupted run leaves either the old file or the new one, never half of one. Keys are
file-name-safe slugs plus hashes (:func:`slug`), so every entry stays under the cache root
whatever a dataset is called (issue 10: an absolute dataset path used to write beside the
dataset). A per-entry file lock (:func:`locked`) makes a second process that wants the same
entry wait and reuse the first one's result, and :func:`load_or_build` verifies an entry when it
is read, rebuilding a bad one (a truncated file, a foreign one) instead of failing later.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import tempfile
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


def cache_dir(*parts: str) -> Path:
    """The cache root joined with ``parts`` (created); each part must be a safe name."""
    for part in parts:
        if not _SAFE_NAME.fullmatch(part):
            raise ValueError(
                f"cache directory part {part!r}: expected a file-name-safe name (see slug)"
            )
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


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


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, renamed onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); results are for sharing, so honour the umask.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (indented, keys kept in insertion order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing or malformed file is a ``ValueError`` naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error}); the file is corrupt") from None


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
