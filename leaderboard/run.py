"""``maw-gym leaderboard``: train and rank every routing policy against one frozen MAW encoder.

Every policy is scored on the test split of the same tables (so the same frozen encoder): env
return (mean, and IQM with rliable's stratified bootstrap over seeds), normalised score
(uniform random = 0, per-query oracle = 1, both exact from the tables), regret, and the
retrieval quality of the BM25 → MAW rerank it routes (NDCG@10 with a bootstrap CI over
queries, MRR@10, Hit@1, through beir). ``vs best-fixed`` is the paired per-query NDCG@10
difference to the best fixed depth (chosen on train) with its 95% CI: routing helps only where
that CI lies above 0. BM25 and the NON-MAW twin have no env return; they are there for the
retrieval columns.

Each (policy, seed) is trained, evaluated and written to ``DIR/runs/<policy>/seed<k>/`` before
the next starts, so an interrupted leaderboard resumes where it stopped; a finished result is
reused only if it was made with the same configuration.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maw_gym.cache import write_json
from maw_gym.presets import PRESETS, get_preset

#: Learned policies (trained per seed through ``maw_gym_agents.train.AGENTS``), in table order.
LEARNED = (
    "supervised-rule",
    "supervised",
    "supervised-depth",
    "grpo",
    "grpo-enum",
    "ppo",
    "a2c",
    "dqn",
    "rllib-ppo",
)
#: Training-free policies and bounds (``maw_gym_agents.heuristics.heuristic_routers``), in
#: table order.
HEURISTICS = (
    "random",
    "best-fixed",
    "entropy-max",
    "entropy-min",
    "attention-norm",
    "topk-norm",
    "joint-router",
    "oracle",
)
#: Rerankers that need no router: their candidate scores come straight from the tables.
RERANKERS = {"BM25": "bm25_scores", "NON-MAW reranker": "nonmaw_scores"}
EXTRA = ("uniform-mixture",)
ALL_POLICIES = (*RERANKERS, *HEURISTICS, *EXTRA, *LEARNED)
MIXTURE_ENV = "MAW/SoftDepthMixture-v0"
RESULT_FILE = "result.json"
#: Fewest judged queries per split the leaderboard accepts (bootstraps need a sample).
MIN_QUERIES = 8


@dataclass
class Context:
    """What every policy is trained and scored with."""

    env_id: str
    train: Any
    dev: Any
    test: Any
    qrels: dict[str, dict[str, int]]
    steps: int
    out: Path
    config: dict[str, Any]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default="nave-kjv",
        help="BEIR dataset: embedded name, public BEIR name, or folder path",
    )
    parser.add_argument(
        "--preset", default="quick", choices=sorted(PRESETS), help="pipeline size (default: quick)"
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="seeds per learned policy (default: the preset's)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/leaderboard"),
        help="output directory (default: runs/leaderboard)",
    )
    parser.add_argument(
        "--env", default="MAW/DepthSelection-v0", help="env the policies are trained and scored on"
    )
    parser.add_argument(
        "--steps",
        type=int,
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
        "--fresh", action="store_true", help="discard finished results in --out instead of resuming"
    )


def run(args: argparse.Namespace) -> int:
    from maw_gym.encoder.table_builder import get_tables
    from maw_gym.pipeline import preset_split

    preset = get_preset(args.preset)
    seeds = args.seeds if args.seeds is not None else preset.seeds
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    policies = tuple(args.policies or ALL_POLICIES)
    unknown = sorted(set(policies) - set(ALL_POLICIES))
    if unknown:
        raise ValueError(f"unknown policies {unknown}; choose from {list(ALL_POLICIES)}")
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    check_dataset(args.dataset, preset)
    started = time.perf_counter()
    tables = {
        split: get_tables(args.dataset, split, preset, args.encoder)
        for split in ("train", "dev", "test")
    }
    steps = args.steps if args.steps is not None else preset.agent_steps
    config = {
        "dataset": str(args.dataset),
        "preset": preset.to_dict(),
        "env": args.env,
        "steps": steps,
        "seeds": seeds,
        "test_tables": tables["test"].meta,
    }
    write_json(args.out / "config.json", config)
    ctx = Context(
        args.env,
        tables["train"],
        tables["dev"],
        tables["test"],
        preset_split(args.dataset, "test", preset).qrels,
        steps,
        args.out,
        config,
    )
    results = collect(ctx, policies, seeds)
    rows = summarise(ctx, results)
    write_outputs(ctx, rows, results)
    print(render_markdown(rows, ctx))
    print(
        f"\nwrote {args.out}/leaderboard.{{md,csv,json}}, raw_scores.json and plots "
        f"({time.perf_counter() - started:.0f} s)"
    )
    return 0


def check_dataset(dataset: str, preset: Any) -> None:
    """Refuse, before any training, a dataset without train/dev/test splits or too small.

    A BEIR folder with only a ``test`` split is refused (the data layer names the splits it
    has): routers need train queries to learn from and dev queries to stop on, and splitting
    test queries here would quietly evaluate on what was trained on.
    """
    import sys

    from maw_gym.pipeline import preset_queries, preset_split

    for split in ("train", "dev", "test"):
        count = len(preset_split(dataset, split, preset).queries)
        if count < MIN_QUERIES:
            raise ValueError(
                f"dataset {dataset!r}: split {split!r} has {count} judged queries; the "
                f"leaderboard needs at least {MIN_QUERIES} per split for its statistics"
            )
        wanted = preset_queries(preset, split)
        if wanted is not None and count < wanted:
            print(
                f"note: split {split!r} has {count} queries, fewer than preset "
                f"{preset.name!r} samples ({wanted}); using all of them",
                file=sys.stderr,
            )


def collect(ctx: Context, policies: tuple[str, ...], seeds: int) -> dict[str, list[dict[str, Any]]]:
    """Every policy's per-seed results, computed now or read back from an earlier run."""
    from tqdm import tqdm

    jobs = [(p, s) for p in policies for s in range(seeds if p in (*LEARNED, "random") else 1)]
    results: dict[str, list[dict[str, Any]]] = {p: [] for p in policies}
    heuristics: dict[str, Any] | None = None
    progress = tqdm(jobs, desc="leaderboard", unit="run")
    for policy, seed in progress:
        progress.set_postfix_str(f"{policy} seed {seed}")
        run_dir = ctx.out / "runs" / policy / f"seed{seed}"
        done = run_dir / RESULT_FILE
        if done.exists():
            saved = json.loads(done.read_text())
            if saved.get("config") == ctx.config:
                results[policy].append(saved)
                continue
        if policy in RERANKERS:
            result = score_reranker(ctx, policy)
        elif policy in HEURISTICS or policy in EXTRA:
            if heuristics is None:
                heuristics = build_heuristics(ctx)
            router = heuristics[policy]
            if policy == "random":  # one random stream per leaderboard seed
                router = type(router)(router.spec, seed)
            result = score_router(
                ctx, router, policy, seed, env_id=MIXTURE_ENV if policy in EXTRA else ctx.env_id
            )
        else:
            result = train_and_score(ctx, policy, seed, run_dir)
        result["config"] = ctx.config
        write_json(done, result)
        results[policy].append(result)
    return results


def build_heuristics(ctx: Context, seed: int = 0) -> dict[str, Any]:
    from maw_gym_agents.common import ActionSpec
    from maw_gym_agents.heuristics import FixedDepthRouter, heuristic_routers

    routers = heuristic_routers(ctx.env_id, ctx.train, ctx.test, seed=seed)
    mixture = ActionSpec("simplex", ctx.test.depth)
    routers["uniform-mixture"] = FixedDepthRouter(mixture, None, name="uniform-mixture")
    return routers


def score_reranker(ctx: Context, policy: str) -> dict[str, Any]:
    scores = getattr(ctx.test, RERANKERS[policy])
    return {
        "policy": policy,
        "seed": 0,
        **retrieval(ctx, scores),
        "train_seconds": 0.0,
        "env_steps": 0,
    }


def train_and_score(ctx: Context, policy: str, seed: int, run_dir: Path) -> dict[str, Any]:
    from maw_gym_agents.train import train_agent

    router, record = train_agent(policy, ctx.env_id, ctx.train, ctx.dev, seed, ctx.steps, run_dir)
    result = score_router(ctx, router, policy, seed, ctx.env_id)
    result["train_seconds"] = float(record["train_seconds"])
    result["env_steps"] = int(record["steps"])
    return result


def learning_curve(run_dir: Path, train_queries: int) -> list[dict[str, float]]:
    """Dev mean return against env steps, from whatever the agent logged.

    Native agents log ``metrics.json`` (``eval/mean_return`` by ``env_steps``, or by ``epoch``
    for the supervised router, whose step is one labelled query); SB3's ``EvalCallback`` writes
    ``eval/evaluations.npz``. RLlib logs no dev curve here.
    """
    metrics, sb3 = run_dir / "metrics.json", run_dir / "eval" / "evaluations.npz"
    if metrics.exists():
        points = [p for p in json.loads(metrics.read_text()) if "eval/mean_return" in p]
        return [
            {
                "env_steps": float(p.get("env_steps", p.get("epoch", 0) * train_queries)),
                "dev_return": float(p["eval/mean_return"]),
            }
            for p in points
        ]
    if sb3.exists():
        with np.load(sb3) as logged:
            return [
                {"env_steps": float(t), "dev_return": float(r.mean())}
                for t, r in zip(logged["timesteps"], logged["results"], strict=True)
            ]
    return []


def score_router(ctx: Context, router: Any, policy: str, seed: int, env_id: str) -> dict[str, Any]:
    """Play the test split with ``router``; returns are normalised by the leaderboard's env."""
    from maw_gym_agents.evaluate import bounds, evaluate_router

    result = evaluate_router(router, env_id, ctx.test)
    limits = bounds(ctx.env_id, ctx.test)
    returns = np.asarray(result["returns"], dtype=np.float64)
    out = {
        "policy": policy,
        "seed": seed,
        "returns": returns.tolist(),
        "random_mean": limits.random_mean,
        "oracle_mean": float(limits.oracle.mean())
        if limits.oracle is not None
        else result["oracle_mean"],
        "depth_usage": np.asarray(result["depth_usage"]).tolist(),
        "depth_usage_entropy": result["depth_usage_entropy"],
        "latency_ms_per_query": result["latency_ms_per_query"],
        "train_seconds": 0.0,
        "env_steps": 0,
    }
    if result["candidate_scores"] is not None:
        out.update(retrieval(ctx, np.asarray(result["candidate_scores"])))
    return out


def retrieval(ctx: Context, scores: np.ndarray) -> dict[str, Any]:
    """beir metrics of the rerank given by candidate ``scores`` (N, C), and per-query NDCG@10."""
    from maw_gym.encoder.table_builder import routed_results
    from maw_gym.retrieval import evaluate, per_query_ndcg10

    results = routed_results(ctx.test, scores)
    metrics = evaluate(ctx.qrels, results)
    per_query = per_query_ndcg10(ctx.qrels, results)
    return {
        "ndcg_per_query": [float(per_query.get(str(q), 0.0)) for q in ctx.test.query_ids],
        "ndcg@10": metrics["NDCG@10"],
        "mrr@10": metrics["MRR@10"],
        "hit@1": metrics["Hit@1"],
    }


def summarise(ctx: Context, results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per policy; see the module docstring for what each column means."""
    from maw_gym.stats import paired_difference, query_interval, seed_interval

    reference = results.get("best-fixed")
    rows = []
    for policy, runs in results.items():
        if not runs:
            continue
        row: dict[str, Any] = {"policy": policy, "seeds": len(runs)}
        if "returns" in runs[0]:
            returns = np.array([r["returns"] for r in runs])  # (seeds, queries)
            random_mean, oracle_mean = runs[0]["random_mean"], runs[0]["oracle_mean"]
            mean, mean_low, mean_high = seed_interval(returns, "mean")
            iqm, low, high = seed_interval(returns, "iqm")
            span = oracle_mean - random_mean
            row.update(
                {
                    "return_mean": mean,
                    "return_iqm": iqm,
                    "return_ci_low": low,
                    "return_ci_high": high,
                    "normalized_score": (mean - random_mean) / span if span > 0 else 0.0,
                    "normalized_ci_low": (mean_low - random_mean) / span if span > 0 else 0.0,
                    "normalized_ci_high": (mean_high - random_mean) / span if span > 0 else 0.0,
                    "regret": oracle_mean - mean,
                    "depth_usage_entropy": float(np.mean([r["depth_usage_entropy"] for r in runs])),
                    "latency_ms_per_query": float(
                        np.mean([r["latency_ms_per_query"] for r in runs])
                    ),
                }
            )
        if "ndcg_per_query" in runs[0]:
            per_query = np.array([r["ndcg_per_query"] for r in runs])
            ndcg, low, high = query_interval(per_query)
            row.update(
                {
                    "ndcg@10": ndcg,
                    "ndcg_ci_low": low,
                    "ndcg_ci_high": high,
                    "mrr@10": float(np.mean([r["mrr@10"] for r in runs])),
                    "hit@1": float(np.mean([r["hit@1"] for r in runs])),
                }
            )
            if reference and "ndcg_per_query" in reference[0] and policy != "best-fixed":
                base = np.array([r["ndcg_per_query"] for r in reference])
                gain, low, high = paired_difference(per_query, base)
                row.update(
                    {
                        "ndcg_vs_best_fixed": gain,
                        "ndcg_vs_best_fixed_ci_low": low,
                        "ndcg_vs_best_fixed_ci_high": high,
                    }
                )
        row["train_seconds"] = float(np.mean([r["train_seconds"] for r in runs]))
        row["env_steps"] = int(np.mean([r["env_steps"] for r in runs]))
        rows.append(row)
    order = {p: i for i, p in enumerate(ALL_POLICIES)}
    rows.sort(key=lambda r: (-r.get("normalized_score", -np.inf), order[r["policy"]]))
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _interval(row: dict[str, Any], key: str, low: str, high: str, signed: bool = False) -> str:
    if key not in row:
        return "–"
    sign = "+" if signed else ""
    return f"{row[key]:{sign}.3f} [{row[low]:{sign}.3f}, {row[high]:{sign}.3f}]"


def render_markdown(rows: list[dict[str, Any]], ctx: Context) -> str:
    header = (
        "| policy | seeds | norm. score | return IQM [95% CI] | regret | NDCG@10 [95% CI] "
        "| vs best-fixed [95% CI] | MRR@10 | Hit@1 | depth-use H | train s | env steps "
        "| ms/query |"
    )
    lines = [
        f"Test split, {ctx.test.num_queries} queries, env {ctx.env_id}, "
        f"preset {ctx.config['preset']['name']}, D={ctx.test.depth}.",
        "",
        header,
        "|" + "---|" * (header.count("|") - 1),
    ]
    for r in rows:
        cells = [
            r["policy"],
            str(r["seeds"]),
            _fmt(r.get("normalized_score")),
            _interval(r, "return_iqm", "return_ci_low", "return_ci_high"),
            _fmt(r.get("regret")),
            _interval(r, "ndcg@10", "ndcg_ci_low", "ndcg_ci_high"),
            _interval(
                r,
                "ndcg_vs_best_fixed",
                "ndcg_vs_best_fixed_ci_low",
                "ndcg_vs_best_fixed_ci_high",
                signed=True,
            ),
            _fmt(r.get("mrr@10")),
            _fmt(r.get("hit@1")),
            _fmt(r.get("depth_usage_entropy"), 2),
            f"{r['train_seconds']:.1f}",
            str(r["env_steps"]),
            _fmt(r.get("latency_ms_per_query"), 4),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(
    ctx: Context, rows: list[dict[str, Any]], results: dict[str, list[dict[str, Any]]]
) -> None:
    """leaderboard.{md,csv,json}, raw per-seed scores and the plots, each written atomically."""
    from maw_gym.cache import atomic_path
    from maw_gym_leaderboard.plots import plot_all

    with atomic_path(ctx.out / "leaderboard.md") as tmp:
        tmp.write_text(render_markdown(rows, ctx) + "\n")
    write_json(ctx.out / "leaderboard.json", rows)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(ctx.out / "leaderboard.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    raw = {
        p: [{k: v for k, v in r.items() if k != "config"} for r in runs]
        for p, runs in results.items()
    }
    write_json(ctx.out / "raw_scores.json", raw)
    curves = {
        p: [
            learning_curve(ctx.out / "runs" / p / f"seed{r['seed']}", ctx.train.num_queries)
            for r in runs
        ]
        for p, runs in results.items()
        if p in LEARNED
    }
    plot_all(ctx.out, rows, results, curves)
