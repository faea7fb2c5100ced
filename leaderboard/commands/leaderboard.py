"""``maw-gym leaderboard``: train and rank every routing policy (the main job), on one env or
over a suite of tasks (``maw_gym_leaderboard.run``, ``maw_gym_leaderboard.suite``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from maw_gym.build import shipped
from maw_gym.official import ENV_VERSION
from maw_gym_leaderboard.command import (
    add_preset_arguments,
    env_id,
    output_dir,
    positive_int,
)
from maw_gym_leaderboard.policies import ALL_POLICIES
from maw_gym_leaderboard.run import DEFAULT_ENV, LeaderboardJob, run_leaderboard
from maw_gym_leaderboard.suite import DEFAULT_DATASET, SUITES, SuiteJob, run_suite


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default=None,
        help="BEIR dataset: embedded name, public BEIR name, or folder path (default: "
        f"{DEFAULT_DATASET}; with --suite, the suite's own where it names one)",
    )
    add_preset_arguments(parser, default=None, default_help="quick; with --suite, the suite's")
    parser.add_argument(
        "--suite",
        default=None,
        choices=sorted(SUITES),
        help="rank the policies over a suite of tasks (env x tables) instead of one env",
    )
    parser.add_argument(
        "--add-dataset",
        action="append",
        default=[],
        metavar="PATH",
        help="with --suite: a further dataset whose tables add the suite's envs as tasks",
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        help="seeds per learned policy (default: the preset's)",
    )
    parser.add_argument(
        "--out",
        type=output_dir,
        default="runs/leaderboard",
        help="output directory (default: runs/leaderboard)",
    )
    parser.add_argument(
        "--env",
        type=env_id,
        default=DEFAULT_ENV,
        help="env the policies are trained and scored on",
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="env steps per RL agent (default: the preset's agent_steps)",
    )
    parser.add_argument(
        "--policies",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"a subset of: {' '.join(ALL_POLICIES)}",
    )
    parser.add_argument(
        "--encoder",
        type=Path,
        default=None,
        help="a trained encoder directory (default: built or reused for preset)",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="build the encoder and tables from scratch (cached by their keys) even where the "
        "package ships official ones (nave-kjv and kjv-tasks at quick)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="delete what an earlier leaderboard wrote in --out (a folder it marked) instead "
        "of resuming; other files stay",
    )


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.suite is not None:
        if args.preset is not None:
            raise ValueError(f"--suite {args.suite} names its own preset; drop --preset")
        markdown = run_suite(
            SuiteJob(
                suite=args.suite,
                dataset=args.dataset,
                out=args.out,
                add_datasets=tuple(args.add_dataset),
                overrides=tuple(args.overrides),
                seeds=args.seeds,
                steps=args.steps,
                policies=tuple(args.policies or ()),
                fresh=args.fresh,
            )
        )
        print(markdown)
        return 0
    if args.add_dataset:
        raise ValueError("--add-dataset needs --suite")
    job = LeaderboardJob(
        dataset=args.dataset or DEFAULT_DATASET,
        preset=args.preset or "quick",
        out=args.out,
        overrides=tuple(args.overrides),
        env=args.env,
        seeds=args.seeds,
        steps=args.steps,
        policies=tuple(args.policies or ()),
        encoder=args.encoder,
        fresh=args.fresh,
        rebuild=args.rebuild,
    )
    official = shipped(job.dataset, job.resolved(), job.encoder)
    if official is not None and not job.rebuild:
        print(
            f"maw-gym leaderboard: the official {official.dataset}/{official.preset} tables "
            f"shipped with maw-gym (artifact {official.artifact}, env version {ENV_VERSION}): "
            "no encoder is trained; --rebuild builds everything from scratch",
            flush=True,
        )
    else:
        why = "--rebuild" if official is not None else "no official tables for these settings"
        print(
            f"maw-gym leaderboard: tables of {job.dataset} at {job.resolved().name} built here "
            f"({why}); each stage is reused from the cache where its key matches",
            flush=True,
        )
    markdown = run_leaderboard(job)
    print(markdown)
    print(
        f"\nwrote {args.out}/leaderboard.{{md,csv,json}}, raw_scores.json and plots "
        f"({time.perf_counter() - started:.0f} s)"
    )
    return 0
