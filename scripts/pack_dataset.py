"""Pack a BEIR folder into a reproducible ``.tar.xz`` for embedding in the package.

The archive holds the folder's files at its root in sorted order with zeroed owners and
timestamps, compressed with xz preset 9, so packing the same folder twice gives the same bytes
(and so the same cache directory name once extracted, see ``maw_gym.data.sources``).

    python scripts/pack_dataset.py ../shared/datasets/nave-kjv maw_gym/datasets/nave-kjv.tar.xz
"""

from __future__ import annotations

import argparse
import lzma
import tarfile
from pathlib import Path

from maw_gym.cache import atomic_path


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Drop everything machine-specific from a member's header."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def pack(folder: Path, archive: Path) -> None:
    """Write ``folder``'s files (recursively, sorted) into ``archive`` atomically."""
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    if not any(path.name == "corpus.jsonl" for path in files):
        raise SystemExit(f"{folder}: no corpus.jsonl, not a BEIR folder")
    with (
        atomic_path(archive) as tmp,
        lzma.open(tmp, "wb", preset=9) as xz,
        tarfile.open(fileobj=xz, mode="w") as tar,
    ):
        for path in files:
            tar.add(path, arcname=path.relative_to(folder).as_posix(), filter=_normalise)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folder", type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
    )
    parser.add_argument("archive", type=Path, help="output .tar.xz")
    args = parser.parse_args()
    pack(args.folder, args.archive)
    print(f"{args.archive}: {args.archive.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
