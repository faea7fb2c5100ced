"""Build and cache :class:`maw_gym.tables.Tables` for a split: the one entry point envs, agents
and the leaderboard use (:func:`get_tables`), and ``maw-gym tables build``.

A tables directory (one memory-mapped ``.npy`` per field, see :meth:`Tables.save`) is keyed by
``stable_hash(split fingerprint, encoder content hash, preset, version)``; the key is also
stored in its ``meta``, so tables that do not verify (truncated, corrupt, foreign) or whose meta
does not match are rebuilt, never silently used.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from maw_gym.cache import cache_dir, stable_hash
from maw_gym.presets import Preset, add_preset_arguments, get_preset, preset_from_args
from maw_gym.tables import Tables

logger = logging.getLogger(__name__)

#: Bump when the tables' contents change for the same encoder and split.
TABLES_VERSION = 1
SPLITS = ("train", "dev", "test")


def _preset(preset: str | Preset) -> Preset:
    return get_preset(preset) if isinstance(preset, str) else preset


def build_tables(split_name: str, dataset: str, preset: str | Preset, encoder_dir: Path) -> Tables:
    """Compute the tables of one split with the frozen encoder in ``encoder_dir`` (no cache)."""
    from maw_gym.encoder.reranker import score_split
    from maw_gym.encoder.train import TrainedEncoder
    from maw_gym.pipeline import split_inputs

    preset = _preset(preset)
    started = time.perf_counter()
    inputs = split_inputs(dataset, split_name, preset)
    encoder = TrainedEncoder.load(encoder_dir)
    inputs_seconds = time.perf_counter() - started
    maw = score_split(
        encoder.models["maw"], inputs, observe=True, progress=f"tables {split_name}: MAW depths"
    )
    nonmaw = score_split(encoder.models["nonmaw_0"], inputs).depth_scores()[:, 0]
    layer2: dict[str, np.ndarray] = {}
    stack = encoder.models.get("stack")
    if stack is not None:
        per_lower = [
            score_split(
                stack,
                inputs,
                observe=True,
                lower_depths=np.full((inputs.num_queries, 1), lower),
                progress=f"tables {split_name}: layer 2 after depth {lower}",
            )
            for lower in range(stack.depth)
        ]
        layer2 = {
            "layer2_observation": np.stack([s.observation for s in per_lower], axis=1),
            "layer2_entropy": np.stack([s.entropy for s in per_lower], axis=1),
            "layer2_focus": np.stack([s.focus for s in per_lower], axis=1),
            "layer2_scores": np.stack([s.depth_scores() for s in per_lower], axis=1),
        }
    assert maw.observation is not None and maw.router_logits is not None
    assert maw.entropy is not None and maw.focus is not None
    return Tables(
        query_ids=inputs.query_ids,
        candidate_ids=inputs.candidate_ids,
        candidate_mask=inputs.candidate_mask,
        relevance=inputs.relevance,
        ideal_gains=inputs.ideal_gains,
        observation=maw.observation,
        entropy=maw.entropy,
        focus=maw.focus,
        score_parts=maw.score_parts,
        score_base=maw.score_base,
        bm25_scores=inputs.bm25_scores,
        nonmaw_scores=nonmaw,
        joint_router_logits=maw.router_logits,
        meta={
            "dataset": inputs.dataset,
            "split": split_name,
            "fingerprint": inputs.fingerprint,
            "encoder": str(encoder_dir),
            "encoder_hash": encoder.content_hash,
            "preset": preset.to_dict(),
            "base_model": inputs.base_model_id,
            "version": TABLES_VERSION,
            "inputs_seconds": inputs_seconds,
            "build_seconds": time.perf_counter() - started,
        },
        **layer2,
    )


def resolve_encoder(
    dataset: str, preset: str | Preset, encoder: Path | str | None = None, seed: int = 0
) -> Path:
    """The encoder directory to use: ``encoder`` if given (must be finished), else the
    preset's default directory, trained first if it does not exist yet."""
    from maw_gym.encoder.train import train_encoder

    if encoder is not None:
        directory = Path(encoder)
        if not (directory / "config.json").exists():
            raise FileNotFoundError(
                f"encoder={directory}: no config.json; train it with "
                "`maw-gym encoder train --out DIR`"
            )
        return directory
    return train_encoder(dataset, _preset(preset), seed=seed)


def tables_path(dataset: str, split: str, preset: Preset, encoder_dir: Path) -> tuple[Path, str]:
    """(cache directory, key) of a split's tables for the encoder in ``encoder_dir``."""
    from maw_gym.pipeline import split_fingerprint

    encoder_hash = json.loads((Path(encoder_dir) / "config.json").read_text())["content_hash"]
    name, fingerprint = split_fingerprint(dataset, split, preset)
    key = stable_hash(fingerprint, encoder_hash, preset.to_dict(), TABLES_VERSION)
    return cache_dir("tables") / f"{name}-{split}-{preset.name}-{key}.tables", key


def get_tables(
    dataset: str = "nave-kjv",
    split: str = "train",
    preset: str | Preset = "smoke",
    encoder: Path | str | None = None,
) -> Tables:
    """Load the cached tables of ``split``, building them (and the encoder) if needed.

    A cached file that does not load, or whose stored key differs, is rebuilt (with a warning).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    preset = _preset(preset)
    encoder_dir = resolve_encoder(dataset, preset, encoder)
    path, key = tables_path(dataset, split, preset, encoder_dir)
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
    tables = build_tables(split, dataset, preset, encoder_dir)
    tables.meta["key"] = key
    tables.save(path)
    return tables


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
    encoder_config = json.loads((encoder_dir / "config.json").read_text())
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
    export.add_argument("out", type=Path, help="the artifact file to write (a tar)")
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
        print(f'use it: gym.make("MAW/DepthSelection-v0", tables="{target}", split="train")')
        return 0
    splits = SPLITS if args.split == "all" else (args.split,)
    preset = preset_from_args(args)
    for split in splits:
        started = time.perf_counter()
        tables = get_tables(args.dataset, split, preset, args.encoder)
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
