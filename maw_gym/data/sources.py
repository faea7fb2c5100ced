"""Where a dataset's BEIR folder comes from: the package, a path, or BEIR's public downloads.

- ``nave-kjv`` and ``kjv-tasks`` (the same verses, with three query types in
  ``metadata.task``: the ground-truth tier's dataset) ship inside the package as
  ``maw_gym/datasets/<name>.tar.xz`` (built by ``scripts/pack_dataset.py``) and are extracted
  on first use into ``cache_dir("datasets", "<name>-<archive hash>")``, so a new archive never
  reads a stale copy, and every file of that copy is checked against the hashes taken when it
  was extracted.
- A path to a folder is used as it is.
- A BEIR public dataset name downloads through ``beir.util`` into the cache when the host can be
  reached; offline, the error says how to bring the zip in by hand.

Extraction and download go to a temporary directory that is renamed into place, so an
interrupted run never leaves a half-written dataset behind.
"""

from __future__ import annotations

import logging
import tarfile
import zipfile
from pathlib import Path

from maw_gym.cache import (
    CacheError,
    atomic_path,
    cache_dir,
    file_hash,
    locked,
    read_json,
    remove_cache_entry,
    rename_into_place,
    write_json,
)
from maw_gym.data.validate import CORPUS_FILE, DatasetError

logger = logging.getLogger(__name__)

EMBEDDED_DATASETS = ("nave-kjv", "kjv-tasks")
#: Written into an extracted embedded dataset: each file's sha256, checked on every use (issue
#: 22: a copy with 3,000 documents deleted was read, and scored, without a word).
CONTENTS_FILE = "maw-gym-contents.json"
#: Folder -> (path, size, mtime) of its files when last found intact, in this process.
_INTACT: dict[Path, tuple[tuple[str, int, int], ...]] = {}

# BEIR's public datasets that its download host serves as <name>.zip (the BEIR paper, table 1).
BEIR_PUBLIC_DATASETS = (
    "arguana",
    "climate-fever",
    "cqadupstack",
    "dbpedia-entity",
    "fever",
    "fiqa",
    "hotpotqa",
    "msmarco",
    "nfcorpus",
    "nq",
    "quora",
    "scidocs",
    "scifact",
    "trec-covid",
    "webis-touche2020",
)
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


def resolve_dataset(dataset: str | Path) -> Path:
    """The BEIR folder for a dataset name or path (see the module docstring for the order)."""
    path = Path(dataset).expanduser()
    if path.is_dir():
        if not (path / CORPUS_FILE).is_file():
            raise DatasetError(f"{path}: not a BEIR folder (no {CORPUS_FILE})")
        return path.resolve()
    name = str(dataset)
    if name in EMBEDDED_DATASETS:
        return _extract_embedded(name)
    if name in BEIR_PUBLIC_DATASETS:
        return _download_beir(name)
    raise DatasetError(
        f"dataset {name!r}: not a folder, nor an embedded dataset ({', '.join(EMBEDDED_DATASETS)}),"
        f" nor a BEIR public dataset ({', '.join(BEIR_PUBLIC_DATASETS)})"
    )


def embedded_archive(name: str) -> Path:
    """The packaged ``.tar.xz`` of an embedded dataset."""
    archive = Path(__file__).resolve().parent.parent / "datasets" / f"{name}.tar.xz"
    if not archive.is_file():
        raise DatasetError(f"{archive}: embedded dataset {name!r} is missing from the package")
    return archive


def _extract_embedded(name: str) -> Path:
    """The cache's copy of an embedded dataset, extracted on first use and verified on every
    use: a copy that differs from what was extracted is extracted again."""
    archive = embedded_archive(name)
    target = cache_dir("datasets") / f"{name}-{file_hash(archive)}"
    if _intact(target):
        return target
    with locked(target):
        if target.exists() and not _intact(target):
            logger.warning("extracting %s again: its files differ from %s", target, archive.name)
            remove_cache_entry(target)
        if not target.exists():
            with atomic_path(target, folder=True, place=rename_into_place) as tmp:
                with tarfile.open(archive, "r:xz") as tar:
                    tar.extractall(tmp, filter="data")
                write_json(tmp / CONTENTS_FILE, _file_hashes(tmp))
        if not _intact(target):
            raise CacheError(f"{target}: differs from {archive} right after its extraction")
    return target


def _file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` but :data:`CONTENTS_FILE`, by relative path."""
    return {
        str(path.relative_to(folder)): file_hash(path, length=64)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != CONTENTS_FILE
    }


def _intact(folder: Path) -> bool:
    """Whether ``folder`` holds exactly the files its :data:`CONTENTS_FILE` lists, byte for
    byte; hashed again only when a file's size or modification time changed since."""
    try:
        signature = tuple(
            (str(path), path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*"))
        )
        if _INTACT.get(folder) == signature:
            return True
        intact = read_json(folder / CONTENTS_FILE) == _file_hashes(folder)
    except (OSError, ValueError):  # missing, unreadable, or a contents file that is not JSON
        return False
    if intact:
        _INTACT[folder] = signature
    return intact


def _download_beir(name: str) -> Path:
    target = cache_dir("datasets", "beir") / name
    if target.is_dir():
        return target
    import beir.util

    url = BEIR_URL.format(name=name)
    # beir unzips into a folder named after the dataset, inside the one it is given.
    with atomic_path(
        target, folder=True, place=lambda tmp, final: rename_into_place(tmp / name, final)
    ) as tmp:
        try:
            beir.util.download_and_unzip(url, str(tmp))
        # requests' connection errors are OSErrors; an error page saved as the zip is a BadZipFile.
        except (OSError, zipfile.BadZipFile) as error:
            raise DatasetError(
                f"dataset {name!r}: could not download {url} ({error}). Without network access, "
                f"download that zip on another machine, unzip it here and pass the folder's "
                f"path instead of the name (e.g. --dataset /path/to/{name})."
            ) from None
    return target
