"""Build and cache :class:`maw_gym.tables.Tables` for a split: the one entry point envs, agents
and the leaderboard use (:func:`ensure_tables`, which builds what is missing in order, and
:func:`get_tables`, which never trains an encoder), and ``maw-gym tables build``.

A tables directory (one memory-mapped ``.npy`` per field, see :meth:`Tables.save`) is keyed by
``stable_hash(split fingerprint, encoder content hash, preset, version)``; the key is also
stored in its ``meta``, so tables that do not verify (truncated, corrupt, foreign) or whose meta
does not match are rebuilt, never silently used.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from maw_gym.cache import cache_dir, locked, read_json, slug, stable_hash
from maw_gym.command import output_file
from maw_gym.device import add_device_argument, resolve_device
from maw_gym.pipeline import SHARD_QUERIES
from maw_gym.presets import Preset, add_preset_arguments, get_preset, preset_from_args
from maw_gym.ray_connect import head_address, ray_address
from maw_gym.tables import Tables

logger = logging.getLogger(__name__)

#: Bump when the tables' contents change for the same encoder and split.
TABLES_VERSION = 2
SPLITS = ("train", "dev", "test")


def _preset(preset: str | Preset) -> Preset:
    return get_preset(preset) if isinstance(preset, str) else preset


def build_tables(
    split_name: str,
    dataset: str,
    preset: str | Preset,
    encoder_dir: Path,
    *,
    device: str = "auto",
    ray_address: str | None = None,
    shard_queries: int = SHARD_QUERIES,
    shard_dir: Path | None = None,
) -> Tables:
    """Compute the tables of one split with the frozen encoder in ``encoder_dir`` (no tables
    cache), shard by shard (:mod:`maw_gym.encoder.shards`): in this process, or as Ray tasks
    at ``ray_address`` (``local``, ``auto``, ``HOST:PORT``). Finished shards are kept in
    ``shard_dir`` (default: a temporary directory, removed after) to resume from. The
    ``train`` tables keep the router-train queries only (``preset.router_fraction``)."""
    from maw_gym.encoder.shards import ShardJob, run_shards
    from maw_gym.encoder.train import base_model_id
    from maw_gym.pipeline import preset_split, query_shards, router_queries

    preset = _preset(preset)
    device = resolve_device(device).type
    threads = torch.get_num_threads()
    started = time.perf_counter()
    data = preset_split(dataset, split_name, preset)
    jobs = [
        ShardJob(dataset, split_name, preset, str(encoder_dir), rows, device, threads)
        for rows in query_shards(len(data.queries), shard_queries)
    ]
    with contextlib.ExitStack() as stack:
        if shard_dir is None:
            shard_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        arrays = run_shards(jobs, Path(shard_dir), ray_address)
    encoder_config = read_json(Path(encoder_dir) / "config.json")
    meta = {
        "dataset": data.dataset,
        "split": split_name,
        "fingerprint": data.fingerprint,
        "encoder": str(encoder_dir),
        "encoder_hash": encoder_config["content_hash"],
        "preset": preset.to_dict(),
        "base_model": base_model_id(preset.max_length),
        "version": TABLES_VERSION,
        "device": device,
        "shards": len(jobs),
        "ray_address": ray_address,
        "build_seconds": time.perf_counter() - started,
    }
    tables = Tables(**arrays, meta=meta)
    if split_name == "train":  # routers learn on queries the encoder never saw
        tables = tables.subset(
            np.flatnonzero(router_queries(tables.query_ids, preset.router_fraction))
        )
        tables.meta = {**meta, "router_queries": tables.num_queries}
    return tables


def resolve_encoder(
    dataset: str,
    preset: str | Preset,
    encoder: Path | str | None = None,
    seed: int = 0,
    device: str = "auto",
) -> Path:
    """The encoder directory to use: ``encoder`` if given (must be finished), else the
    preset's default directory, trained first (on ``device``, in this process: training is
    never sharded) if it does not exist yet."""
    from maw_gym.encoder.train import read_verified, train_encoder

    if encoder is not None:
        directory = Path(encoder)
        if not (directory / "config.json").exists():
            raise FileNotFoundError(
                f"encoder={directory}: no config.json; train it with "
                "`maw-gym encoder train --out DIR`"
            )
        read_verified(directory)  # a user's encoder is refused if bad, never retrained here
        return directory
    return train_encoder(dataset, _preset(preset), seed=seed, device=resolve_device(device).type)


def tables_path(dataset: str, split: str, preset: Preset, encoder_dir: Path) -> tuple[Path, str]:
    """(cache directory, key) of a split's tables for the encoder in ``encoder_dir``."""
    from maw_gym.pipeline import split_fingerprint

    config_path = Path(encoder_dir) / "config.json"
    encoder_hash = read_json(config_path).get("content_hash")
    if encoder_hash is None:
        raise ValueError(f"{config_path}: no content_hash; not a finished encoder's config")
    name, fingerprint = split_fingerprint(dataset, split, preset)
    key = stable_hash(fingerprint, encoder_hash, preset.to_dict(), TABLES_VERSION)
    return cache_dir("tables") / f"{slug(name)}-{split}-{preset.name}-{key}.tables", key


def ensure_tables(
    dataset: str = "nave-kjv",
    split: str = "train",
    preset: str | Preset = "smoke",
    encoder: Path | str | None = None,
    device: str = "auto",
    ray_address: str | None = None,
) -> Tables:
    """Build what is missing, in order, and return ``split``'s tables: data, BM25 candidates
    and base-encoder states (cached by the pipeline), the MAW encoder (trained here when
    ``encoder`` is None and the preset's is not cached yet), then the tables.

    The one function that may train an encoder on the way to tables; :func:`get_tables`
    never does.
    """
    preset = _preset(preset)
    encoder_dir = resolve_encoder(dataset, preset, encoder, device=device)
    return get_tables(dataset, split, preset, encoder_dir, device, ray_address)


def get_tables(
    dataset: str,
    split: str,
    preset: str | Preset,
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
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if encoder_dir is None:
        raise ValueError(
            "get_tables needs a trained encoder directory; ensure_tables(...) trains the "
            "preset's encoder first if it is missing"
        )
    preset = _preset(preset)
    path, key = tables_path(dataset, split, preset, encoder_dir)
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
        tables = build_tables(
            split,
            dataset,
            preset,
            encoder_dir,
            device=device,
            ray_address=ray_address,
            shard_dir=shard_dir,
        )
        tables.meta["key"] = key
        tables.save(path)
        shutil.rmtree(shard_dir)  # guarded: named by this key, under its lock: ours
    return Tables.load(path, verify=False)  # memory-mapped, as a later call would see it


def routed_results(tables: Tables, scores: np.ndarray) -> dict[str, dict[str, float]]:
    """BEIR ``results`` of a split from per-query candidate scores ``(N, C)`` (padding dropped),
    e.g. ``tables.depth_scores()[np.arange(N), actions]`` for a router's choices."""
    if scores.shape != tables.candidate_mask.shape:
        raise ValueError(
            f"scores: expected shape {tables.candidate_mask.shape} (N, C), got {scores.shape}"
        )
    return {
        str(qid): {
            str(doc): float(score) for doc, score, real in zip(docs, row, mask, strict=True) if real
        }
        for qid, docs, row, mask in zip(
            tables.query_ids, tables.candidate_ids, scores, tables.candidate_mask, strict=True
        )
    }


def export_tables(
    dataset: str, preset: str | Preset, encoder: Path | None, out: Path
) -> dict[str, object]:
    """Write every split's tables (built or loaded) and their provenance to the artifact
    ``out`` (:mod:`maw_gym.artifacts`); returns its manifest."""
    from maw_gym.artifacts import export_artifact, maw_gym_version

    preset = _preset(preset)
    encoder_dir = resolve_encoder(dataset, preset, encoder)
    splits = {split: get_tables(dataset, split, preset, encoder_dir) for split in SPLITS}
    encoder_config = read_json(encoder_dir / "config.json")
    info = {
        "maw_gym_version": maw_gym_version(),
        "dataset": str(splits["train"].meta.get("dataset", dataset)),
        "dataset_hash": stable_hash(*(t.meta.get("fingerprint") for t in splits.values())),
        "preset": preset.to_dict(),
        "encoder": {"hash": encoder_config["content_hash"], "config": encoder_config},
    }
    return export_artifact(splits, info, out)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tables_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build (or load) the tables of a split")
    export = sub.add_parser("export", help="write every split's tables to one shareable file")
    for action in (build, export):
        action.add_argument("--dataset", default="nave-kjv", help="BEIR dataset name or folder")
        add_preset_arguments(action, default="smoke")
        action.add_argument(
            "--encoder",
            type=Path,
            default=None,
            help="a trained encoder directory (default: the preset's, trained if new)",
        )
    build.add_argument("--split", default="all", choices=[*SPLITS, "all"])
    add_device_argument(build)
    build.add_argument(
        "--ray-address",
        default=None,
        type=ray_address,
        metavar="{local,auto,HOST:PORT}",
        help="compute the shards as Ray tasks: a new local Ray, the running cluster (auto) or "
        "a head's address; the encoder still trains in this process",
    )
    export.add_argument("out", type=output_file, help="the artifact file to write (a tar)")
    install = sub.add_parser(
        "import", help="verify a tables artifact and install it into the cache"
    )
    install.add_argument("artifact", type=Path, help="a file from `maw-gym tables export`")


def run(args: argparse.Namespace) -> int:
    if args.tables_command == "export":
        manifest = export_tables(args.dataset, preset_from_args(args), args.encoder, args.out)
        _print_artifact(args.out, manifest)
        return 0
    if args.tables_command == "import":
        from maw_gym.artifacts import install_artifact

        target, manifest = install_artifact(args.artifact)
        _print_artifact(target, manifest)
        print(f'use it: gym.make("MAW/DepthSelection-v2", tables="{target}", split="train")')
        return 0
    splits = SPLITS if args.split == "all" else (args.split,)
    preset = preset_from_args(args)
    if args.ray_address not in (None, "local"):
        head_address(args.ray_address)  # a head that does not answer is named before any work
    for split in splits:
        started = time.perf_counter()
        tables = ensure_tables(
            args.dataset, split, preset, args.encoder, args.device, args.ray_address
        )
        print(
            f"{split}: {tables.num_queries} queries, D={tables.depth}, H={tables.heads}, "
            f"layers={'2' if tables.has_layers else '1'} "
            f"({time.perf_counter() - started:.1f} s)"
        )
    return 0


def _print_artifact(path: Path, manifest: dict) -> None:
    from maw_gym.artifacts import artifact_id

    print(f"{path}: artifact {artifact_id(manifest)} (compare with the publisher's)")
    for split, entry in manifest["splits"].items():
        print(f"  {split}: tables fingerprint {entry['fingerprint'][:16]}")
