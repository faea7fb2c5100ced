"""``maw-gym tables build|export|import|reproduce``: the per-query, per-depth tables envs read."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from maw_gym.artifacts import artifact_id, install_artifact
from maw_gym.build import ensure_tables, export_benchmark
from maw_gym.ray_connect import head_address
from maw_gym.specs import SPLITS
from maw_gym_leaderboard.command import (
    add_device_argument,
    add_preset_arguments,
    output_file,
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
    export.add_argument(
        "out", type=output_file, help="the artifact file to write (a tar; .tar.xz compresses it)"
    )
    install = sub.add_parser(
        "import", help="verify a tables artifact and install it into the cache"
    )
    install.add_argument("artifact", type=Path, help="a file from `maw-gym tables export`")
    again = sub.add_parser(
        "reproduce",
        help="rebuild an official benchmark from scratch and compare it with the shipped tables",
    )
    again.add_argument("--dataset", default="nave-kjv", help="an embedded dataset")
    add_preset_arguments(again, default="quick")
    again.add_argument(
        "--scratch",
        type=Path,
        default=None,
        help="the cache the rebuild runs in (default: $MAW_GYM_CACHE/reproduce/DATASET-PRESET-ID;"
        " a second run resumes from it)",
    )
    again.add_argument("--json", action="store_true", help="print the comparison as JSON")


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
    if args.tables_command == "reproduce":
        from maw_gym_leaderboard.reproduce import reproduce

        report = reproduce(args.dataset, preset_from_args(args), args.scratch)
        print(json.dumps(report, indent=2) if args.json else _reproduction_text(report))
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


def _reproduction_text(report: dict) -> str:
    lines = [
        f"official artifact {report['artifact']} against a rebuild on this machine "
        f"(in the cache {report['scratch_cache']}):"
    ]
    for split, entry in report["splits"].items():
        floats = {k: v for k, v in entry["fields"].items() if isinstance(v, float)}
        other = sorted(
            k for k, v in entry["fields"].items() if v not in ("equal",) and k not in floats
        )
        worst = max(floats, key=floats.get) if floats else None
        lines.append(
            f"  {split} ({entry['queries']} queries): "
            + (
                "bitwise equal"
                if entry["bitwise_equal"]
                else f"largest difference {floats.get(worst, 0):.3g} ({worst})"
            )
            + (f"; differing non-float fields: {', '.join(other)}" if other else "")
            + f"; best depth changed for {entry['best_depth_changed_by_return']:.1%} of queries by "
            f"return, {entry['best_depth_changed_by_ndcg10']:.1%} by NDCG@10"
        )
    for name in ("official", "rebuilt"):
        h = report[name]
        lines.append(
            f"  {name}: best fixed depth {h['best_fixed_depth_by_return']} (dev, by return) "
            f"test return {h['best_fixed_test_return']:.4f}, oracle {h['oracle_test_return']:.4f}; "
            f"depth {h['best_fixed_depth_by_ndcg']} (dev, by NDCG@10) test NDCG@10 "
            f"{h['best_fixed_test_ndcg10']:.4f}, oracle {h['oracle_test_ndcg10']:.4f}"
        )
    return "\n".join(lines)


def _print_artifact(path: Path, manifest: dict) -> None:
    print(f"{path}: artifact {artifact_id(manifest)} (compare with the publisher's)")
    for split, entry in manifest["splits"].items():
        print(f"  {split}: tables fingerprint {entry['fingerprint'][:16]}")
