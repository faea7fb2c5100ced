"""Benchmark artifacts: every split's tables in one hash-checked file anyone can load.

An artifact is an uncompressed tar holding ``benchmark.json`` (the manifest: maw-gym version,
dataset and encoder hashes, and per split its tables' fingerprint and each field's shape, dtype
and sha256) and one ``SPLIT/FIELD.npy`` per stored field. Its file is *untrusted input*
(NAS-Bench-201 and YAHPO Gym ship benchmarks the same way, but a shared file may have been
tampered with), so reading one never executes anything from it:

- the tar is never extracted; every member must be a regular file named ``benchmark.json`` or
  ``train|dev|test/<field>.npy`` (no ``../``, no links), listed once and in the manifest;
- arrays are parsed with ``np.load(allow_pickle=False)`` after their size and sha256 match the
  manifest, and their dtype and shape must match it too (object arrays are refused outright);
- each split's :func:`tables_fingerprint` must equal the manifest's.

The manifest's own integrity rests on its hash (:func:`artifact_id`), which ``maw-gym tables
import`` prints: compare it with the one the publisher gives.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from maw_gym.cache import (
    atomic_path,
    cache_dir,
    locked,
    parse_json,
    read_json,
    rename_into_place,
    slug,
    write_json,
)
from maw_gym.specs import SPLITS
from maw_gym.tables import Tables

FORMAT = "maw-gym-tables-artifact"
FORMAT_VERSION = 1
ARTIFACT_MANIFEST = "benchmark.json"
_MEMBER = re.compile(r"(train|dev|test)/([a-z0-9_]+)\.npy")
#: An .npy header (magic, version, dict literal) is padded to 64 bytes; 4 KiB is ample.
_MAX_HEADER = 4096
_MAX_MANIFEST = 16 << 20
_XZ_MAGIC = b"\xfd7zXZ\x00"
#: The largest decompressed artifact read into memory (quick's tables are 16.4 MB).
MAX_ARTIFACT_BYTES = 2 << 30


def maw_gym_version() -> str:
    """The installed maw-gym version (recorded in artifacts and submissions)."""
    from importlib.metadata import version

    return version("maw-gym")


def tables_fingerprint(tables: Tables) -> str:
    """sha256 of every stored field's name, dtype, shape and bytes: equal fingerprints mean
    identical observations and rewards, whatever file format the tables came from."""
    digest = hashlib.sha256()
    for name, array in sorted(tables.arrays().items()):
        array = np.ascontiguousarray(array)
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def artifact_id(manifest: dict[str, Any]) -> str:
    """A short name for an artifact: the hash of its manifest (which holds every array's hash)."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def export_artifact(splits: dict[str, Tables], info: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write ``splits`` (name → tables) and ``info`` (versions, hashes) to the tar ``out``,
    atomically; returns the manifest."""
    members: dict[str, bytes] = {}
    manifest: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, **info}
    manifest["splits"] = {}
    for split, tables in splits.items():
        entry: dict[str, Any] = {"fingerprint": tables_fingerprint(tables), "meta": tables.meta}
        entry["fields"] = {}
        for name, array in tables.arrays().items():
            data = _npy_bytes(array)
            members[f"{split}/{name}.npy"] = data
            entry["fields"][name] = {
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        manifest["splits"][split] = entry
    manifest_bytes = json.dumps(manifest, indent=2, default=str).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in {ARTIFACT_MANIFEST: manifest_bytes, **members}.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = 0o644
            tar.addfile(member, io.BytesIO(data))
    payload = buffer.getvalue()
    if Path(out).suffix == ".xz":  # the packaged official tables: 16.4 MB -> 12.9 MB at quick
        payload = lzma.compress(payload, preset=9 | lzma.PRESET_EXTREME)
    with atomic_path(Path(out)) as tmp:
        tmp.write_bytes(payload)
    return json.loads(manifest_bytes)


def _checked_members(path: Path, archive: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """Members by name, after refusing anything but uniquely named regular files we expect."""
    members: dict[str, tarfile.TarInfo] = {}
    for member in archive.getmembers():
        if not member.isfile() or not (
            member.name == ARTIFACT_MANIFEST or _MEMBER.fullmatch(member.name)
        ):
            raise ValueError(
                f"{path}: archive member {member.name!r} is not a regular file named "
                f"{ARTIFACT_MANIFEST} or SPLIT/FIELD.npy; refusing the whole file"
            )
        if member.name in members:
            raise ValueError(f"{path}: archive member {member.name!r} appears twice")
        members[member.name] = member
    if ARTIFACT_MANIFEST not in members:
        raise ValueError(f"{path}: no {ARTIFACT_MANIFEST}; not a maw-gym tables artifact")
    return members


def _read_field(
    path: Path, archive: tarfile.TarFile, member: tarfile.TarInfo, spec: dict[str, Any]
) -> np.ndarray:
    """One array, checked against its manifest entry before and after parsing."""
    dtype, shape = np.dtype(spec["dtype"]), tuple(int(n) for n in spec["shape"])
    if dtype.hasobject:
        raise ValueError(f"{path}: {member.name} declares dtype {dtype}; object arrays refused")
    expected = int(np.prod(shape)) * dtype.itemsize
    if not expected <= member.size <= expected + _MAX_HEADER:
        raise ValueError(
            f"{path}: {member.name} holds {member.size} bytes, the manifest's "
            f"{dtype}{list(shape)} needs {expected} (+ header)"
        )
    handle = archive.extractfile(member)
    assert handle is not None  # a regular file, checked above
    data = handle.read()
    if hashlib.sha256(data).hexdigest() != spec["sha256"]:
        raise ValueError(f"{path}: {member.name}: sha256 differs from the manifest (tampered?)")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:  # object (pickled) arrays land here
        raise ValueError(f"{path}: {member.name}: refused ({error})") from None
    if array.dtype != dtype or array.shape != shape:
        raise ValueError(
            f"{path}: {member.name} is {array.dtype}{list(array.shape)}, the manifest says "
            f"{dtype}{list(shape)}"
        )
    return array


def read_artifact(path: Path) -> tuple[dict[str, Any], dict[str, Tables]]:
    """(manifest, split → tables) of the artifact at ``path``, every hash verified.

    Any defect is a ``ValueError`` naming the file and the member; nothing is written.
    """
    path = Path(path)
    try:
        with _open_archive(path) as archive:
            members = _checked_members(path, archive)
            manifest = _read_manifest(path, archive, members)
            splits = {
                split: _read_split(path, archive, members, split, entry)
                for split, entry in manifest["splits"].items()
            }
    except tarfile.TarError as error:
        raise ValueError(f"{path}: a damaged tar file ({error})") from None
    return manifest, splits


def _open_archive(path: Path) -> tarfile.TarFile:
    """The artifact's tar, read from the file or, for an xz-compressed one, decompressed in
    memory first (a compressed tar cannot seek back cheaply), at most :data:`MAX_ARTIFACT_BYTES`
    (an xz "bomb" is refused before it fills the memory)."""
    if not path.is_file():
        raise ValueError(f"{path}: not a tables artifact (a tar file from `maw-gym tables export`)")
    with open(path, "rb") as handle:
        compressed = handle.read(6) == _XZ_MAGIC
    if not compressed:
        if not tarfile.is_tarfile(path):
            raise ValueError(
                f"{path}: not a tables artifact (a tar file from `maw-gym tables export`)"
            )
        return tarfile.open(path, "r:")
    decompressor = lzma.LZMADecompressor()
    try:
        data = decompressor.decompress(path.read_bytes(), max_length=MAX_ARTIFACT_BYTES + 1)
    except lzma.LZMAError as error:
        raise ValueError(f"{path}: a damaged xz file ({error})") from None
    if len(data) > MAX_ARTIFACT_BYTES or not decompressor.eof:
        raise ValueError(f"{path}: decompresses to more than {MAX_ARTIFACT_BYTES} bytes; refused")
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:")


def _read_manifest(
    path: Path, archive: tarfile.TarFile, members: dict[str, tarfile.TarInfo]
) -> dict[str, Any]:
    """The manifest, after checking it lists exactly the archive's arrays."""
    if members[ARTIFACT_MANIFEST].size > _MAX_MANIFEST:
        raise ValueError(f"{path}: {ARTIFACT_MANIFEST} is larger than {_MAX_MANIFEST} bytes")
    handle = archive.extractfile(members[ARTIFACT_MANIFEST])
    assert handle is not None  # a regular file, checked by _checked_members
    try:
        manifest = parse_json(handle.read(), ARTIFACT_MANIFEST)
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format {manifest.get('format')!r} is not {FORMAT!r} v1")
        entries = manifest["splits"]
        wanted = {f"{s}/{f}.npy" for s in entries for f in entries[s]["fields"]}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: {ARTIFACT_MANIFEST} is not a valid manifest ({error})") from None
    differ = sorted(set(members) ^ (wanted | {ARTIFACT_MANIFEST}))
    if differ or not set(entries) <= set(SPLITS):
        raise ValueError(f"{path}: archive members and {ARTIFACT_MANIFEST} disagree ({differ})")
    return manifest


def _read_split(
    path: Path,
    archive: tarfile.TarFile,
    members: dict[str, tarfile.TarInfo],
    split: str,
    entry: dict[str, Any],
) -> Tables:
    arrays = {
        name: _read_field(path, archive, members[f"{split}/{name}.npy"], spec)
        for name, spec in entry["fields"].items()
    }
    try:
        tables = Tables(**arrays, meta=dict(entry["meta"]))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: split {split!r} is not valid tables ({error})") from None
    return _verified(path, split, tables, entry)


def _verified(path: Path, split: str, tables: Tables, entry: dict[str, Any]) -> Tables:
    if tables_fingerprint(tables) != entry["fingerprint"]:
        raise ValueError(f"{path}: split {split!r}: tables fingerprint differs from the manifest")
    return tables


def install_artifact(path: Path, expected: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Verify the artifact at ``path`` and install it under ``$MAW_GYM_CACHE/benchmarks``.

    Returns the installed directory (``benchmark.json`` plus one tables entry per split, made by
    :meth:`Tables.save`), which ``gym.make(id, tables=DIR, split=...)`` loads, and the manifest.
    The directory is filled beside its final name and renamed into place, so an interrupted
    import leaves nothing. With ``expected``, an artifact whose id differs is refused before
    anything is written.
    """
    manifest, splits = read_artifact(path)
    if expected is not None and artifact_id(manifest) != expected:
        raise ValueError(
            f"{path}: artifact {artifact_id(manifest)} is not the expected {expected}; the file "
            "was changed, refusing it"
        )
    first = next(iter(splits.values())).meta
    # A folder dataset's name is its absolute path: slug it, or the entry lands beside the data.
    preset = manifest.get("preset", {}).get("name", "x")
    name = f"{slug(first.get('dataset', 'tables'))}-{slug(preset)}"
    target = cache_dir("benchmarks") / f"{name}-{artifact_id(manifest)}"
    # A concurrent import of the same artifact waits, then finds it installed (two imports
    # used to race to the rename, and the second failed with "Directory not empty").
    with locked(target):
        if (target / ARTIFACT_MANIFEST).is_file():  # same id: same manifest, same arrays
            return target, manifest
        with atomic_path(target, folder=True, place=rename_into_place) as tmp:
            for split, tables in splits.items():
                tables.save(tmp / split)
            write_json(tmp / ARTIFACT_MANIFEST, manifest)
    return target, manifest


def open_tables(source: Path | str, split: str) -> Tables:
    """The ``split`` tables from an artifact file, an installed artifact directory or a single
    tables path (what ``gym.make(id, tables=...)`` accepts besides a ``Tables`` object)."""
    source = Path(source).expanduser()
    if source.is_file():  # an artifact (tables themselves are a directory)
        manifest, splits = read_artifact(source)
    elif (source / ARTIFACT_MANIFEST).is_file():
        manifest = read_json(source / ARTIFACT_MANIFEST)
        if split not in manifest["splits"]:
            raise ValueError(f"{source}: no split {split!r}; it has {sorted(manifest['splits'])}")
        tables = Tables.load(source / split)
        splits = {split: _verified(source, split, tables, manifest["splits"][split])}
    else:
        return Tables.load(source)
    if split not in splits:
        raise ValueError(f"{source}: no split {split!r}; it has {sorted(splits)}")
    return splits[split]
