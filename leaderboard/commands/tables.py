"""``maw-gym tables build|export|import``: the per-query, per-depth tables envs read."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from maw_gym.artifacts import artifact_id, install_artifact
from maw_gym.build import ensure_tables, export_benchmark
from maw_gym.specs import SPLITS
from maw_gym_leaderboard.command import (
    add_device_argument,
    add_preset_arguments,
    preset_from_args,
    ray_address,
)


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
    export.add_argument("out", type=Path, help="the artifact file to write (a tar)")
    install = sub.add_parser(
        "import", help="verify a tables artifact and install it into the cache"
    )
    install.add_argument("artifact", type=Path, help="a file from `maw-gym tables export`")


def run(args: argparse.Namespace) -> int:
    if args.tables_command == "export":
        manifest = export_benchmark(args.dataset, preset_from_args(args), args.encoder, args.out)
        _print_artifact(args.out, manifest)
        return 0
    if args.tables_command == "import":
        target, manifest = install_artifact(args.artifact)
        _print_artifact(target, manifest)
        print(f'use it: gym.make("MAW/DepthSelection-v3", tables="{target}", split="train")')
        return 0
    splits = SPLITS if args.split == "all" else (args.split,)
    preset = preset_from_args(args)
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
    print(f"{path}: artifact {artifact_id(manifest)} (compare with the publisher's)")
    for split, entry in manifest["splits"].items():
        print(f"  {split}: tables fingerprint {entry['fingerprint'][:16]}")
