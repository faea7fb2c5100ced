"""The official benchmarks: tables shipped inside the package, pinned by the env ids' version.

With the encoder frozen, the tables *are* the benchmark (NAS-Bench-201, YAHPO Gym and HPO-B ship
theirs the same way, so that every paper evaluates on identical numbers: a rebuild on another
CPU can differ in the last bits). Each official benchmark is a tables artifact
(:mod:`maw_gym.artifacts`, xz-compressed) under ``maw_gym/benchmarks/``, named by its dataset and
preset, and pinned here by its artifact id: ``gym.make(id, preset="quick")`` and ``maw-gym
leaderboard`` load it after verifying every array's hash against the manifest and the manifest
against this id, install it once into the cache (memory-mapped afterwards), and never train an
encoder. A tampered file is refused, naming it.

Changing the encoder or the tables means a new artifact, a new :data:`ENV_VERSION` (the env ids'
``-vN``), a Version History line in each env's docstring, and a new row of :data:`HISTORY`
(tests/test_official.py keeps the three in step). ``maw-gym tables reproduce`` rebuilds an
official benchmark from scratch and compares it with the shipped one, array by array.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from maw_gym.artifacts import ARTIFACT_MANIFEST, artifact_id, install_artifact, open_tables
from maw_gym.cache import cache_dir, locked, read_json, remove_cache_entry
from maw_gym.tables import Tables

logger = logging.getLogger(__name__)

#: The ``-vN`` of every registered env id.
ENV_VERSION = 3
#: The folder of the packaged artifacts.
BENCHMARKS_DIR = Path(__file__).resolve().parent / "benchmarks"


@dataclass(frozen=True)
class OfficialBenchmark:
    """One shipped tables artifact."""

    dataset: str
    """The dataset name it was built from (an embedded one)."""
    preset: str
    """The preset name it was built with (no overrides)."""
    artifact: str
    """Its artifact id (the hash of its manifest, which holds every array's sha256)."""

    @property
    def path(self) -> Path:
        return BENCHMARKS_DIR / f"{self.dataset}-{self.preset}.tar.xz"


#: Env version -> the official benchmarks of that version (append only: a published version's
#: artifacts never change).
HISTORY: dict[int, tuple[OfficialBenchmark, ...]] = {
    3: (OfficialBenchmark("nave-kjv", "quick", "91b48a31ec6c94a1"),),
}
OFFICIAL: dict[tuple[str, str], OfficialBenchmark] = {
    (b.dataset, b.preset): b for b in HISTORY[ENV_VERSION]
}


def official_benchmark(dataset: str, preset_name: str) -> OfficialBenchmark | None:
    """The official benchmark of (dataset, preset), if one is shipped."""
    return OFFICIAL.get((str(dataset), preset_name))


def official_by_id(artifact: str) -> OfficialBenchmark | None:
    """The benchmark of any published version whose artifact id is ``artifact``."""
    found = [b for shipped in HISTORY.values() for b in shipped if b.artifact == artifact]
    return found[0] if found else None


def official_tables(benchmark: OfficialBenchmark, split: str) -> Tables:
    """``split``'s tables of a shipped benchmark: verified and installed into the cache on
    first use (seconds), memory-mapped afterwards (each load checks the installed arrays'
    fingerprint against a manifest whose hash is the pinned id)."""
    installed = cache_dir("benchmarks") / (
        f"{benchmark.dataset}-{benchmark.preset}-{benchmark.artifact}"
    )
    if not _holds(installed, benchmark.artifact):
        with locked(installed):
            if installed.exists() and not _holds(installed, benchmark.artifact):
                # damaged or foreign: our own cache entry, by its name
                logger.warning("reinstalling %s: its manifest is not the official one", installed)
                remove_cache_entry(installed)
        if not benchmark.path.is_file():
            raise FileNotFoundError(
                f"{benchmark.path}: the official {benchmark.dataset}/{benchmark.preset} tables "
                "are missing from this installation; reinstall maw-gym, or build them with "
                "--rebuild"
            )
        logger.info("installing the official tables %s", benchmark.path.name)
        try:  # every array's hash, then the manifest's against the pinned id
            directory, _ = install_artifact(benchmark.path, expected=benchmark.artifact)
        except ValueError as error:
            raise ValueError(
                f"{error} (not the official {benchmark.dataset}/{benchmark.preset} tables of "
                f"env version {ENV_VERSION}; reinstall maw-gym)"
            ) from None
        if directory != installed:
            raise ValueError(
                f"{benchmark.path}: its manifest names another dataset or preset than "
                f"{benchmark.dataset}/{benchmark.preset}; reinstall maw-gym"
            )
    return open_tables(installed, split)


def _holds(directory: Path, artifact: str) -> bool:
    """Whether ``directory`` is an installed artifact whose manifest hashes to ``artifact``."""
    try:
        return artifact_id(read_json(directory / ARTIFACT_MANIFEST)) == artifact
    except (FileNotFoundError, ValueError):
        return False
