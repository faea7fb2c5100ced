"""Build the benchmark: every stage in order, each cached under the key of its own spec.

:func:`ensure_tables` is the one function that builds what is missing, top to bottom:

1. the data sampling and the reranker's inputs (BM25 candidates, base-encoder states:
   ``maw_gym.pipeline``, keyed by :func:`~maw_gym.pipeline.inputs_key`);
2. the MAW encoder (``maw_gym.encoder.train``, keyed by its spec and its inputs' keys), trained
   here when it is not cached and no ``encoder`` directory is given;
3. the tables (:func:`get_tables`: keyed by the encoder's content hash, the split's inputs key
   and :data:`TABLES_VERSION`; computed shard by shard by ``maw_gym.encoder.shards``).

:func:`get_tables` never trains an encoder. A tables directory (one memory-mapped ``.npy`` per
field, see :meth:`Tables.save`) stores its key in its ``meta``, so tables that do not verify
(truncated, corrupt, foreign) or whose meta does not match are rebuilt, never silently used.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from maw_gym.cache import cache_dir, locked, read_json, slug, stable_hash
from maw_gym.device import resolve_device
from maw_gym.encoder.shards import ShardJob, run_shards
from maw_gym.encoder.train import encoder_key, read_verified, table_models, train_encoder
from maw_gym.official import OfficialBenchmark, official_benchmark, official_tables
from maw_gym.pipeline import (
    SHARD_QUERIES,
    inputs_key,
    query_shards,
    router_queries,
    sampled_split,
)
from maw_gym.presets import Preset, get_preset
from maw_gym.progress import announce
from maw_gym.specs import SPLITS, EncoderSpec, InputsSpec, spec_dict
from maw_gym.tables import Tables

logger = logging.getLogger(__name__)

#: Bump when the tables' contents change for the same encoder and split.
TABLES_VERSION = 3


def _preset(preset: str | Preset) -> Preset:
    return get_preset(preset) if isinstance(preset, str) else preset


def ensure_tables(
    dataset: str = "nave-kjv",
    split: str = "train",
    preset: str | Preset = "quick",
    encoder: Path | str | None = None,
    device: str = "auto",
    ray_address: str | None = None,
    rebuild: bool = False,
) -> Tables:
    """Build what is missing, in order, and return ``split``'s tables (see the module doc).

    An official benchmark (:mod:`maw_gym.official`: a dataset and preset, without overrides or
    another encoder) is loaded from the tables shipped with the package instead, unless
    ``rebuild``."""
    preset = _preset(preset)
    official = shipped(dataset, preset, encoder)
    if official is not None and not rebuild:
        return official_tables(official, split)
    encoder_dir = resolve_encoder(dataset, preset, encoder, device=device)
    return get_tables(dataset, split, preset.inputs, encoder_dir, device, ray_address)


def shipped(
    dataset: str, preset: Preset, encoder: Path | str | None = None
) -> OfficialBenchmark | None:
    """The official benchmark these arguments name: an embedded dataset and a named preset
    exactly as shipped, with the preset's own encoder."""
    official = official_benchmark(dataset, preset.name)
    if official is None or encoder is not None or preset != get_preset(preset.name):
        return None
    return official


def resolve_encoder(
    dataset: str, preset: Preset, encoder: Path | str | None = None, device: str = "auto"
) -> Path:
    """The encoder directory to use: ``encoder`` if given (it must be finished, and built from
    this preset's encoder spec and inputs), else the preset's, trained first (on ``device``, in
    this process: training is never sharded) if it is not cached yet."""
    if encoder is None:
        device = resolve_device(device).type
        return train_encoder(dataset, preset.inputs, preset.encoder, device=device)
    directory = Path(encoder)
    if not (directory / "config.json").exists():
        raise FileNotFoundError(
            f"encoder={directory}: no config.json; train it with `maw-gym encoder train --out DIR`"
        )
    config, _ = read_verified(directory)  # a user's encoder is refused if bad, never retrained
    check_encoder_matches(directory, config, dataset, preset.inputs, preset.encoder)
    return directory


def check_encoder_matches(
    directory: Path, config: dict, dataset: str, inputs: InputsSpec, spec: EncoderSpec
) -> None:
    """Refuse an encoder built from another encoder spec or other inputs than the ones asked
    for (an encoder trained with ``depth=4`` used to be used silently for ``--set depth=2``);
    the error names every field that differs."""
    wanted = spec_dict(spec)
    recorded = config.get("encoder")
    if not isinstance(recorded, dict):
        raise ValueError(
            f"{directory}/config.json: no encoder spec; not an encoder of this version"
        )
    differs = [
        f"{key}={recorded.get(key)!r} (asked: {value!r})"
        for key, value in wanted.items()
        if recorded.get(key) != value
    ]
    if config.get("models", {}).keys() != table_models(spec, inputs).keys():
        differs.append(f"models {sorted(config.get('models', {}))}")
    if config.get("train_inputs") != inputs_key(dataset, "train", inputs):
        differs.append("its train inputs (dataset, sampled queries, candidates or states)")
    if differs:
        raise ValueError(
            f"--encoder {directory}: built with {', '.join(differs)}; pass the preset and "
            "--set values it was trained with, or omit --encoder"
        )


def tables_key(dataset: str, split: str, inputs: InputsSpec, encoder: dict) -> str:
    """The tables stage's cache key: the encoder's key and content hash (``encoder`` is its
    ``config.json``), the split's inputs key (and, for ``train``, the router-train share) and
    :data:`TABLES_VERSION`. No model is loaded."""
    if "content_hash" not in encoder:
        raise ValueError("the encoder's config.json has no content_hash; it is not finished")
    router_fraction = inputs.data.router_fraction if split == "train" else None
    return stable_hash(
        encoder_key(encoder),
        encoder["content_hash"],
        inputs_key(dataset, split, inputs),
        router_fraction,
        TABLES_VERSION,
    )


def tables_path(
    dataset: str, split: str, inputs: InputsSpec, encoder_dir: Path
) -> tuple[Path, str]:
    """(cache directory, key) of a split's tables for the encoder in ``encoder_dir``."""
    config_path = Path(encoder_dir) / "config.json"
    try:
        key = tables_key(dataset, split, inputs, read_json(config_path))
    except ValueError as error:
        raise ValueError(f"{config_path}: {error}") from None
    name = slug(sampled_split(dataset, split, inputs.data).dataset)
    return cache_dir("tables") / f"{name}-{split}-{key}.tables", key


def get_tables(
    dataset: str,
    split: str,
    inputs: InputsSpec,
    encoder_dir: Path,
    device: str = "auto",
    ray_address: str | None = None,
) -> Tables:
    """Load the cached tables of ``split`` for the trained encoder in ``encoder_dir``, building
    them if needed, on ``device``, sharded over Ray at ``ray_address`` if given (see
    :func:`build_tables`). It never trains an encoder (:func:`ensure_tables` does).

    Tables that do not verify, or whose stored key differs, are rebuilt (with a warning). The
    shards of an interrupted build are kept beside the tables and reused by the next call.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    path, key = tables_path(dataset, split, inputs, encoder_dir)
    with locked(path):  # a concurrent build of the same tables waits, then loads these
        if path.exists():
            try:
                tables = Tables.load(path)
            except (ValueError, KeyError, TypeError) as error:  # unreadable, foreign or partial
                logger.warning("rebuilding %s: %s", path, error)
            else:
                if tables.meta.get("key") == key:
                    return tables
                logger.warning(
                    "rebuilding %s: its meta key %s is not %s", path, tables.meta.get("key"), key
                )
        shard_dir = path.with_suffix(".shards")
        work = f"scoring {split} of {dataset} with encoder {Path(encoder_dir).name}"
        announce(logger, "tables", work, path)
        tables = build_tables(
            dataset, split, inputs, encoder_dir, device, ray_address, shard_dir=shard_dir
        )
        tables.meta["key"] = key
        tables.save(path)
        shutil.rmtree(shard_dir)  # guarded: named by this key, under its lock: ours
    return Tables.load(path, verify=False)  # memory-mapped, as a later call would see it


def build_tables(
    dataset: str,
    split: str,
    inputs: InputsSpec,
    encoder_dir: Path,
    device: str = "auto",
    ray_address: str | None = None,
    *,
    shard_queries: int = SHARD_QUERIES,
    shard_dir: Path | None = None,
) -> Tables:
    """Compute the tables of one split with the frozen encoder in ``encoder_dir`` (no tables
    cache), shard by shard (:mod:`maw_gym.encoder.shards`): in this process, or as Ray tasks
    at ``ray_address`` (``local``, ``auto``, ``HOST:PORT``). Finished shards are kept in
    ``shard_dir`` (default: a temporary directory, removed after) to resume from. The
    ``train`` tables hold the router-train queries only (``DataSpec.router_fraction``), and
    only those are scored (each shard's states are still computed whole)."""
    from maw_gym.base_encoder import base_model_id

    device = resolve_device(device).type
    threads = torch.get_num_threads()
    started = time.perf_counter()
    data = sampled_split(dataset, split, inputs.data)
    query_ids = np.array(sorted(data.queries))
    scored = np.ones(len(query_ids), dtype=bool)
    if split == "train":  # routers learn on queries the encoder never saw: only theirs
        scored = router_queries(query_ids, inputs.data.router_fraction)
    jobs = [
        ShardJob(
            dataset,
            split,
            inputs,
            str(encoder_dir),
            (start, stop),
            device,
            threads,
            None if scored.all() else tuple(np.flatnonzero(scored[start:stop]).tolist()),
        )
        for start, stop in query_shards(len(query_ids), shard_queries)
        if scored[start:stop].any()
    ]
    with contextlib.ExitStack() as stack:
        if shard_dir is None:
            shard_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        arrays = run_shards(jobs, Path(shard_dir), ray_address)
    encoder_config = read_json(Path(encoder_dir) / "config.json")
    meta = {
        "dataset": data.dataset,
        "split": split,
        "fingerprint": data.fingerprint,
        "encoder": str(encoder_dir),
        "encoder_hash": encoder_config["content_hash"],
        "inputs": {
            "candidates": spec_dict(inputs.candidates),
            "states": spec_dict(inputs.states),
        },
        "encoder_spec": encoder_config.get("encoder"),
        "base_model": base_model_id(),
        "version": TABLES_VERSION,
        "device": device,
        "shards": len(jobs),
        "ray_address": ray_address,
        "build_seconds": time.perf_counter() - started,
    }
    if split == "train":
        meta["router_queries"] = int(scored.sum())
    return Tables(**arrays, meta=meta)


def export_benchmark(
    dataset: str, preset: Preset, encoder: Path | None, out: Path
) -> dict[str, object]:
    """Write every split's tables (built or loaded: :func:`maw_gym.build.ensure_tables`) and
    their provenance to the artifact ``out``; returns its manifest."""
    from maw_gym.artifacts import export_artifact, maw_gym_version

    encoder_dir = resolve_encoder(dataset, preset, encoder)
    splits = {split: get_tables(dataset, split, preset.inputs, encoder_dir) for split in SPLITS}
    encoder_config = read_json(encoder_dir / "config.json")
    info = {
        "maw_gym_version": maw_gym_version(),
        "dataset": str(splits["train"].meta.get("dataset", dataset)),
        "dataset_hash": stable_hash(*(t.meta.get("fingerprint") for t in splits.values())),
        "preset": preset.to_dict(),
        "encoder": {"hash": encoder_config["content_hash"], "config": encoder_config},
    }
    return export_artifact(splits, info, out)
