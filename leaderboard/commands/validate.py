"""``maw-gym validate RUN_DIR``: replay a leaderboard's recorded test actions and check every
score (``maw_gym_leaderboard.submissions``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maw_gym.artifacts import tables_fingerprint
from maw_gym_agents.saving import TRUST_WARNING
from maw_gym_leaderboard.submissions import run_tables, validate_run


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a directory written by `maw-gym leaderboard`")
    parser.add_argument(
        "--tables",
        type=Path,
        default=None,
        help="the test tables to score on: an artifact file or its installed directory "
        "(default: rebuild/load the run's own from its config.json)",
    )
    parser.add_argument(
        "--trust-routers",
        action="store_true",
        help="also re-run every saved router (UNPICKLES CODE from the run directory)",
    )


def run(args: argparse.Namespace) -> int:
    if args.trust_routers:
        print(TRUST_WARNING, file=sys.stderr)
    tables = run_tables(args.run_dir, args.tables)
    count, issues = validate_run(args.run_dir, tables, args.trust_routers)
    for issue in issues:
        print(issue)
    routers = "and saved routers re-run" if args.trust_routers else "(routers not re-run)"
    verdict = "reproduce" if not issues else f"{len(issues)} differences"
    fingerprint = tables_fingerprint(tables)[:16]
    print(f"{count} submissions replayed on tables {fingerprint} {routers}: {verdict}")
    return 1 if issues else 0
