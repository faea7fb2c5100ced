"""Where a dataset's BEIR folder comes from: the package, a path, or BEIR's public downloads.

- ``nave-kjv`` and ``kjv-tasks`` (the same verses, with three query types in
  ``metadata.task``: the ground-truth tier's dataset) ship inside the package as
  ``maw_gym/datasets/<name>.tar.xz`` (built by ``scripts/pack_dataset.py``) and are extracted
  on first use into ``cache_dir("datasets", "<name>-<archive hash>")``, so a new archive never
  reads a stale copy.
- A path to a folder is used as it is.
- A BEIR public dataset name downloads through ``beir.util`` into the cache when the host can be
  reached; offline, the error says how to bring the zip in by hand.

Extraction and download go to a temporary directory that is renamed into place, so an
interrupted run never leaves a half-written dataset behind.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from maw_gym.cache import cache_dir, file_hash
from maw_gym.data.validate import CORPUS_FILE, DatasetError

EMBEDDED_DATASETS = ("nave-kjv", "kjv-tasks")

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
    archive = embedded_archive(name)
    target = cache_dir("datasets") / f"{name}-{file_hash(archive)}"
    if target.is_dir():
        return target
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        with tarfile.open(archive, "r:xz") as tar:
            tar.extractall(tmp, filter="data")
        rename_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _download_beir(name: str) -> Path:
    target = cache_dir("datasets", "beir") / name
    if target.is_dir():
        return target
    import beir.util

    url = BEIR_URL.format(name=name)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}."))
    try:
        try:
            unzipped = Path(beir.util.download_and_unzip(url, str(tmp)))
        # requests' connection errors are OSErrors; an error page saved as the zip is a BadZipFile.
        except (OSError, zipfile.BadZipFile) as error:
            raise DatasetError(
                f"dataset {name!r}: could not download {url} ({error}). Without network access, "
                f"download that zip on another machine, unzip it here and pass the folder's "
                f"path instead of the name (e.g. --dataset /path/to/{name})."
            ) from None
        rename_into_place(unzipped, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def rename_into_place(source: Path, target: Path) -> None:
    """Rename the finished directory ``source`` to ``target``; if another process got there
    first (directories are only ever renamed into place complete), keep theirs."""
    try:
        os.rename(source, target)
    except OSError:
        if not target.is_dir():
            raise
