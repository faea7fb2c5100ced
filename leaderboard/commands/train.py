"""``maw-gym train``: train one routing agent and save its router (``maw_gym_agents.train``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from maw_gym.build import ensure_tables
from maw_gym.tables import Tables
from maw_gym_agents.train import AGENTS, train_agent
from maw_gym_leaderboard.command import (
    add_device_argument,
    add_preset_arguments,
    env_id,
    output_dir,
    positive_int,
    preset_from_args,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", required=True, help="one of: " + ", ".join(sorted(AGENTS)))
    parser.add_argument(
        "--env", type=env_id, default="MAW/DepthSelection-v3", help="a registered MAW/ env id"
    )
    add_preset_arguments(parser, default="smoke")
    parser.add_argument("--dataset", default="nave-kjv", help="BEIR dataset name or folder")
    parser.add_argument("--encoder", type=Path, default=None, help="trained encoder directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="env steps (default: the preset's agent_steps)",
    )
    parser.add_argument("--out", type=output_dir, required=True, help="directory for the router")
    parser.add_argument(
        "--train-tables",
        type=Path,
        default=None,
        help="a tables directory (Tables.save) to train on instead of the dataset's train split",
    )
    parser.add_argument(
        "--dev-tables",
        type=Path,
        default=None,
        help="a tables directory for dev evaluation (with --train-tables)",
    )
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    preset = preset_from_args(args)
    steps = args.steps if args.steps is not None else preset.agents.agent_steps
    extra: dict[str, Any] = {"preset": preset.name}
    if args.train_tables is not None:
        train_tables = Tables.load(args.train_tables)
        dev_tables = Tables.load(args.dev_tables) if args.dev_tables else None
        extra["train_tables"] = str(args.train_tables)
    else:
        train_tables = ensure_tables(args.dataset, "train", preset, args.encoder, args.device)
        dev_tables = ensure_tables(args.dataset, "dev", preset, args.encoder, args.device)
        extra["dataset"] = args.dataset
    _, record = train_agent(
        args.agent,
        args.env,
        train_tables,
        dev_tables,
        args.seed,
        steps,
        args.out,
        extra,
        device=args.device,
    )
    print(json.dumps(record, indent=2))
    return 0
