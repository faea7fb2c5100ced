"""``maw-gym tier``: measure the ground-truth tier (issue 18) per ρ
(``maw_gym_leaderboard.study.tier``).

    maw-gym tier --dataset kjv-tasks --preset quick --groups task --mixes 0 --out tier.json

trains (or reuses) the tier preset's encoder and tables at each ρ and writes the
specialisation matrix, the oracle − best-fixed gap against the seed control and the closed gap
of the ceilings and controls, on dev and test. The learned agents of the same tier presets run
in ``maw-gym leaderboard --suite tier``.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from maw_gym.specs import parse_group_source
from maw_gym_leaderboard.command import (
    add_preset_arguments,
    env_id,
    output_file,
    preset_from_args,
)
from maw_gym_leaderboard.run import DEFAULT_ENV
from maw_gym_leaderboard.study.tier import TIER_CONTROL, TIER_MIXES, run_tier, summary_lines


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="kjv-tasks", help="BEIR dataset name or folder")
    add_preset_arguments(parser, default="quick")
    parser.add_argument(
        "--groups", default="task", help="query groups: task (metadata.task) or cluster:K"
    )
    parser.add_argument(
        "--mixes",
        default=",".join(str(m) for m in TIER_MIXES),
        help="comma-separated values of ρ (group_mix) to train and measure",
    )
    parser.add_argument(
        "--env",
        type=env_id,
        default=DEFAULT_ENV,
        help="one-decision env whose NDCG@10 per depth is measured (default: %(default)s)",
    )
    parser.add_argument("--out", type=output_file, required=True, help="the JSON file to write")


def mixes_of(text: str) -> tuple[float, ...]:
    """``"0,0.5,1"`` -> ``(0.0, 0.5, 1.0)``, each in [0, 1]."""
    try:
        mixes = tuple(float(m) for m in text.split(","))
    except ValueError:
        raise ValueError(f"--mixes {text!r}: expected numbers in [0, 1], e.g. 0,0.5,1") from None
    if not all(0.0 <= m <= 1.0 for m in mixes):
        raise ValueError(f"--mixes {text!r}: every ρ must lie in [0, 1]")
    return mixes


def run(args: argparse.Namespace) -> int:
    mixes = mixes_of(args.mixes)
    parse_group_source(args.groups)
    preset = preset_from_args(args)
    command = shlex.join(
        [
            "maw-gym", "tier", "--dataset", args.dataset, "--preset", args.preset,
            "--groups", args.groups, "--mixes", args.mixes, "--env", args.env,
            *(item for o in args.overrides for item in ("--set", o)),
            "--out", str(args.out),
        ]
    )  # fmt: skip
    result = run_tier(args.dataset, preset, args.groups, mixes, Path(args.out), args.env, command)
    for line in (TIER_CONTROL, *summary_lines(result)):
        print(line)
    return 0
