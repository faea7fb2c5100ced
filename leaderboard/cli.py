"""The ``maw-gym`` command: one subcommand per stage of the pipeline.

Each subcommand is a module of :mod:`maw_gym_leaderboard.commands` exposing
``configure(parser)`` to declare its arguments and ``run(args) -> int`` to call the library and
print; modules are imported only when their subcommand runs, so ``maw-gym --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from maw_gym_leaderboard.command import log_to_stderr, run_command, sleep_waiting_threads

#: name -> one-line help; each runs ``maw_gym_leaderboard.commands.<name>``.
SUBCOMMANDS: dict[str, str] = {
    "retrieve": "BM25 first stage and its BEIR metrics on a split",
    "encoder": "train the MAW encoder, or report its diagnostics",
    "tables": "build the per-query, per-depth tables envs read",
    "train": "train a routing policy (GRPO, supervised, SB3, RLlib)",
    "evaluate": "score a saved router on a split",
    "rllib": "train RLlib PPO/APPO locally or on a Ray cluster",
    "show": "print one query's env frame under an action, save its image",
    "leaderboard": "train and rank every routing policy (the main job)",
    "validate": "replay a leaderboard's recorded test actions and check every score",
    "tier": "measure the ground-truth tier: depths as experts on query groups, per rho",
}


#: Subcommands that continue where they stopped when rerun (cached stages, finished runs, RLlib
#: checkpoints); ``train`` and ``evaluate`` start over.
RESUMABLE = frozenset({"retrieve", "encoder", "tables", "rllib", "leaderboard"})


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maw-gym",
        description="Route Multi-Attention-Weight depths with reinforcement learning.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        # Only the chosen subcommand's module is imported (heavy deps: torch, ray).
        if argv and argv[0] == name:
            module = importlib.import_module(f"maw_gym_leaderboard.commands.{name}")
            module.configure(sub)
            sub.set_defaults(_run=module.run)
    return parser


def resolve_paths(args: argparse.Namespace) -> argparse.Namespace:
    """Make every ``Path`` argument absolute (``~`` expanded), once, here at the boundary.

    Libraries below may change directory or hand paths to other processes (RLlib checkpoints
    need absolute URIs), so nothing below the CLI sees a relative path.
    """
    for name, value in vars(args).items():
        if isinstance(value, Path):
            setattr(args, name, value.expanduser().resolve())
    return args


def main(argv: list[str] | None = None) -> int:
    sleep_waiting_threads()  # before build_parser imports a subcommand's module (and torch)
    log_to_stderr()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = resolve_paths(build_parser(argv).parse_args(argv))
    return run_command(f"maw-gym {argv[0]}", lambda: args._run(args), argv[0] in RESUMABLE)


if __name__ == "__main__":
    raise SystemExit(main())
