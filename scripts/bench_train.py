"""Wall-clock seconds and env steps for agents to reach a target score on the same env.

Every agent comes from ``maw_gym_agents.train.AGENTS`` (native GRPO, SB3 PPO, RLlib PPO by
default) and
trains on the *train* split of one env; its router is scored on that same split (normalised
score: random 0, per-query oracle 1). Budgets double from ``--min-steps`` to ``--max-steps``,
each a fresh run with the same seed (after one untimed warm-up run), and the first budget
whose router reaches the target gives the agent's steps and training seconds to target. If
some agent never reaches ``--target`` (routing from noisy observations may not allow 90% of
the oracle), each agent is compared with the first one at the lower of their best scores, so
the ratios still compare equal outcomes.

    python scripts/bench_train.py --json                      # smoke preset tables
    python scripts/bench_train.py --synthetic --agents grpo,ppo --max-steps 4096
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


def ladder(min_steps: int, max_steps: int) -> list[int]:
    budgets = [min_steps]
    while budgets[-1] * 2 <= max_steps:
        budgets.append(budgets[-1] * 2)
    return budgets


def run_agent(
    agent: str, env_id: str, tables: Any, seed: int, budgets: list[int], target: float
) -> list[dict[str, float]]:
    """Train ``agent`` at each budget until it reaches ``target``; one row per budget."""
    from maw_gym_agents.evaluate import evaluate_router
    from maw_gym_agents.train import AGENTS

    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{agent}-warmup-") as out_dir,
        contextlib.redirect_stdout(sys.stderr),
    ):
        # untimed: one-off imports (torch, SB3, Ray start-up) are not training speed
        AGENTS[agent](env_id, tables, None, seed, budgets[0], Path(out_dir))
    rows = []
    for steps in tqdm(budgets, desc=agent, leave=False):
        # stdout stays clean for --json: SB3's progress bar prints there
        with (
            tempfile.TemporaryDirectory(prefix=f"bench-{agent}-") as out_dir,
            contextlib.redirect_stdout(sys.stderr),
        ):
            started = time.perf_counter()
            router = AGENTS[agent](env_id, tables, None, seed, steps, Path(out_dir))
            seconds = time.perf_counter() - started
        score = evaluate_router(router, env_id, tables).normalized_score
        rows.append({"steps": steps, "seconds": seconds, "normalized_score": score})
        if score >= target:
            break
    return rows


def first_reaching(rows: list[dict[str, float]], score: float) -> dict[str, float] | None:
    return next((row for row in rows if row["normalized_score"] >= score), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--agents",
        default="grpo,ppo,rllib-ppo",
        help="comma-separated names from maw_gym_agents.train.AGENTS; the first is the "
        "reference of the ratios",
    )
    parser.add_argument("--env", default="MAW/DepthSelection-v3")
    parser.add_argument("--dataset", default="nave-kjv")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="synthetic tables (64 queries, depth 1 clearly best) instead",
    )
    parser.add_argument(
        "--target", type=float, default=0.9, help="normalised score on the train split to reach"
    )
    parser.add_argument("--min-steps", type=int, default=1024)
    parser.add_argument("--max-steps", type=int, default=16384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from maw_gym.tables import Tables
    from maw_gym_agents.train import AGENTS

    agents = [name.strip() for name in args.agents.split(",") if name.strip()]
    unknown = sorted(set(agents) - set(AGENTS))
    if unknown:
        parser.error(f"--agents: unknown {unknown}; choose from {sorted(AGENTS)}")
    if args.synthetic:
        tables = Tables.synthetic(num_queries=64, best_depth=1, seed=args.seed)
    else:
        from maw_gym.build import ensure_tables

        tables = ensure_tables(args.dataset, "train", args.preset)
    budgets = ladder(args.min_steps, args.max_steps)
    runs = {
        agent: run_agent(agent, args.env, tables, args.seed, budgets, args.target)
        for agent in agents
    }

    best = {agent: max(row["normalized_score"] for row in rows) for agent, rows in runs.items()}
    first = agents[0]
    report: dict[str, Any] = {
        "env_id": args.env,
        "tables": "synthetic" if args.synthetic else f"{args.dataset}/{args.preset}/train",
        "target": args.target,
        "agents": {},
    }
    for agent in agents:
        entry: dict[str, Any] = {"best_normalized_score": best[agent], "runs": runs[agent]}
        own = first_reaching(runs[agent], args.target)
        if own is not None:
            entry.update(steps_to_target=own["steps"], seconds_to_target=own["seconds"])
        if agent != first:
            # each pair is compared at a score both reached: the target, else the lower best
            score = min(args.target, best[agent], best[first])
            mine, theirs = first_reaching(runs[agent], score), first_reaching(runs[first], score)
            entry[f"vs_{first}"] = {
                "compared_at_score": score,
                "seconds": mine["seconds"],
                f"{first}_seconds": theirs["seconds"],
                "seconds_ratio": mine["seconds"] / theirs["seconds"],
                "steps_ratio": mine["steps"] / theirs["steps"],
            }
        report["agents"][agent] = entry
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.env} on {report['tables']}, target normalised score {args.target}")
        for agent, entry in report["agents"].items():
            line = f"  {agent:>10}: best {entry['best_normalized_score']:.3f}"
            if "seconds_to_target" in entry:
                line += f", target in {entry['steps_to_target']} steps, "
                line += f"{entry['seconds_to_target']:.2f} s"
            pair = entry.get(f"vs_{first}")
            if pair:
                line += (
                    f"; at {pair['compared_at_score']:.3f}: {pair['seconds_ratio']:.1f}x the "
                    f"wall-clock and {pair['steps_ratio']:.1f}x the steps of {first}"
                )
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
