"""``maw-gym rllib``: RLlib PPO/APPO on a MAW env, locally or on a Ray cluster
(``maw_gym_agents.rllib``; docs/cluster.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from maw_gym.build import ensure_tables
from maw_gym.cache import write_json
from maw_gym.tables import Tables
from maw_gym_agents.evaluate import TRAINING_FILE, observation_source
from maw_gym_agents.rllib import ALGORITHMS, RLlibRun, train_run
from maw_gym_leaderboard.command import (
    add_device_argument,
    add_preset_arguments,
    env_id,
    output_dir,
    positive_int,
    preset_from_args,
    ray_address,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env", type=env_id, required=True, help="Gymnasium id, e.g. MAW/DepthSelection-v3"
    )
    parser.add_argument("--algo", choices=ALGORITHMS, default="ppo")
    parser.add_argument("--iterations", type=positive_int, default=5)
    parser.add_argument(
        "--num-env-runners",
        type=int,
        default=0,
        help="remote env runners (0: sample in the driver)",
    )
    parser.add_argument(
        "--address",
        type=ray_address,
        default=None,
        help="Ray cluster to join: 'auto' or host:port (default: private local)",
    )
    parser.add_argument(
        "--num-cpus", type=positive_int, default=None, help="CPUs of a private local Ray"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=output_dir, required=True, help="output directory")
    parser.add_argument("--checkpoint-every", type=int, default=0)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--synthetic",
        action="store_true",
        help="synthetic tables with one clearly best depth (smoke runs)",
    )
    source.add_argument("--dataset", help="dataset name or BEIR folder for the env's tables")
    parser.add_argument("--split", default="train")
    add_preset_arguments(parser, default="smoke")
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    if args.synthetic:
        env_config: dict[str, Any] = {"env_id": args.env, "synthetic": {"best_depth": 1}}
    else:
        env_config = {
            "env_id": args.env,
            "env_kwargs": {
                "dataset": args.dataset,
                "split": args.split,
                "preset": preset_from_args(args),
            },
        }
    rl_run = RLlibRun(
        env_config,
        args.out,
        algo=args.algo,
        iterations=args.iterations,
        num_env_runners=args.num_env_runners,
        address=args.address,
        num_cpus=args.num_cpus,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        device=args.device,
    )
    router = train_run(rl_run)
    router.save(Path(args.out) / "router")
    _write_training_record(Path(args.out) / "router", args, env_config)
    for row in rl_run.metrics:
        print(
            f"iteration {row['iteration']:>4}: return {row['episode_return_mean']:.4f}  "
            f"env steps {row['env_steps']:.0f}  {row['seconds']:.1f} s"
        )
    print(f"router saved to {Path(args.out) / 'router'}")
    return 0


def _write_training_record(
    directory: Path, args: argparse.Namespace, env_config: dict[str, Any]
) -> None:
    """``training.json`` as ``maw-gym train`` writes it: the env id and the tables' source, so
    that ``maw-gym evaluate`` refuses another env or encoder (the tables are cached by now:
    measuring the observation statistics built them in this process)."""
    if args.synthetic:
        tables = Tables.synthetic(**env_config["synthetic"])
    else:
        kwargs = env_config["env_kwargs"]
        tables = ensure_tables(kwargs["dataset"], kwargs["split"], kwargs["preset"])
    record = {"agent": f"rllib-{args.algo}", "env_id": args.env, "seed": args.seed}
    write_json(directory / TRAINING_FILE, {**record, "tables": observation_source(tables)})
