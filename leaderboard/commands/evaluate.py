"""``maw-gym evaluate``: score a saved router on a split (``maw_gym_agents.evaluate``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from maw_gym import registered_env_id
from maw_gym.build import ensure_tables
from maw_gym.cache import read_json
from maw_gym.pipeline import sampled_split
from maw_gym.tables import Tables
from maw_gym_agents.evaluate import (
    TRAINING_FILE,
    candidate_qrels,
    check_trained_on,
    evaluate_router,
    retrieval_metrics,
)
from maw_gym_agents.saving import TRUST_WARNING, load_router
from maw_gym_leaderboard.command import add_preset_arguments, env_id, preset_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--router", type=Path, required=True, help="a saved router directory")
    parser.add_argument("--split", default="test", choices=["train", "dev", "test"])
    parser.add_argument(
        "--env",
        type=env_id,
        default=None,
        help=f"env id (default: the one in DIR/{TRAINING_FILE}, else MAW/DepthSelection-v3)",
    )
    parser.add_argument("--dataset", default=None, help="BEIR name or folder (default: training's)")
    add_preset_arguments(parser, default=None, default_help="the one it was trained with")
    parser.add_argument("--encoder", type=Path, default=None, help="encoder directory")
    parser.add_argument(
        "--tables",
        type=Path,
        default=None,
        help="a tables directory to score instead of the dataset's split; its "
        "retrieval metrics then use the judged candidates as qrels",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--trust-routers",
        action="store_true",
        help="also load SB3 and RLlib routers (UNPICKLES CODE from the router directory)",
    )


def run(args: argparse.Namespace) -> int:
    training_file = args.router / TRAINING_FILE
    trained = read_json(training_file) if training_file.exists() else {}
    if "env_id" in trained:  # someone else's folder: an id with a "module:" would import it
        registered_env_id(trained["env_id"], f"{training_file}: env_id")
    env_id = args.env or trained.get("env_id", "MAW/DepthSelection-v3")
    if trained.get("env_id", env_id) != env_id:
        raise ValueError(
            f"{training_file}: the router was trained on {trained['env_id']}, not {env_id}; "
            "evaluate it on its own env (omit --env)"
        )
    if args.trust_routers:
        print(TRUST_WARNING, file=sys.stderr)
    router = load_router(args.router, allow_pickle=args.trust_routers)
    if args.tables is not None:
        tables = Tables.load(args.tables)
        qrels = candidate_qrels(tables)
        source: dict[str, Any] = {"tables": str(args.tables)}
    else:
        dataset = args.dataset or trained.get("dataset", "nave-kjv")
        args.preset = args.preset or trained.get("preset", "smoke")
        preset = preset_from_args(args)
        tables = ensure_tables(dataset, args.split, preset, args.encoder)
        qrels = sampled_split(dataset, args.split, preset.data).qrels
        source = {"dataset": dataset, "split": args.split, "preset": preset.name}
    for warning in check_trained_on(trained.get("tables"), tables, training_file):
        print(f"warning: {warning}", file=sys.stderr)
    result = evaluate_router(router, env_id, tables)
    summary = result.summary() | source
    metrics = retrieval_metrics(tables, result.candidate_scores, qrels)
    summary.update({k: metrics[k] for k in ("NDCG@10", "MRR@10", "Hit@1")})
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>22}: {value:.4f}" if isinstance(value, float) else f"{key:>22}: {value}")
    return 0
