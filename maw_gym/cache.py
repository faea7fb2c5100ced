"""On-disk cache: where it lives, content hashes, and atomic writes.

Every cached artefact is keyed by a hash of what it was computed from, so a stale entry is never
read back; writes go to a temporary file in the same directory and are renamed into place, so an
interrupted run leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CACHE_ENV_VAR = "MAW_GYM_CACHE"


def cache_dir(*parts: str) -> Path:
    """The cache root (``$MAW_GYM_CACHE`` or ``~/.cache/maw-gym``) joined with ``parts``."""
    root = Path(os.environ.get(CACHE_ENV_VAR, Path.home() / ".cache" / "maw-gym"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def cached(path: Path, build: Callable[[Path], None]) -> Path:
    """Return ``path``, first calling ``build(tmp)`` to create it atomically if it is missing."""
    if not path.exists():
        with atomic_path(path) as tmp:
            build(tmp)
    return path
