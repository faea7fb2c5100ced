"""The leaderboard's rows (one per policy), their Markdown table, and every output file.

A row is built from column groups, each a function of the policy's per-seed results: env
returns, retrieval quality (with the paired comparison to ``best-fixed``), and cost. A new
column group is one more function in :data:`COLUMN_GROUPS`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from typing import Any

import numpy as np

from maw_gym.cache import atomic_path, write_json
from maw_gym_leaderboard.policies import ALL_POLICIES, BOUNDS, LEARNED, Context

Runs = list[dict[str, Any]]
"""One policy's per-seed results, as ``result.json`` stores them."""
REFERENCE = "best-fixed"
"""The policy every other one's NDCG@10 is compared with, query by query."""


def return_columns(runs: Runs, results: dict[str, Runs]) -> dict[str, Any]:
    """Env return (mean, IQM with its CI over seeds), normalised score and regret."""
    from maw_gym.stats import seed_interval

    if "returns" not in runs[0]:
        return {}
    returns = np.array([r["returns"] for r in runs])  # (seeds, queries)
    random_mean, oracle_mean = runs[0]["random_mean"], runs[0]["oracle_mean"]
    span = oracle_mean - random_mean

    def normalised(value: float) -> float:
        return (value - random_mean) / span if span > 0 else 0.0

    mean, mean_low, mean_high = seed_interval(returns, "mean")
    iqm, low, high = seed_interval(returns, "iqm")
    return {
        **_versus_reference(runs, results, "returns", "return"),
        "return_mean": mean,
        "return_iqm": iqm,
        "return_ci_low": low,
        "return_ci_high": high,
        "normalized_score": normalised(mean),
        "normalized_ci_low": normalised(mean_low),
        "normalized_ci_high": normalised(mean_high),
        "regret": oracle_mean - mean,
        "depth_usage_entropy": float(np.mean([r["depth_usage_entropy"] for r in runs])),
        "latency_ms_per_query": float(np.mean([r["latency_ms_per_query"] for r in runs])),
    }


def retrieval_columns(runs: Runs, results: dict[str, Runs]) -> dict[str, Any]:
    """NDCG@10 with its CI over queries, MRR@10, Hit@1, and the paired gain over best-fixed."""
    from maw_gym.stats import query_interval

    if "ndcg_per_query" not in runs[0]:
        return {}
    per_query = np.array([r["ndcg_per_query"] for r in runs])
    ndcg, low, high = query_interval(per_query)
    columns = {
        "ndcg@10": ndcg,
        "ndcg_ci_low": low,
        "ndcg_ci_high": high,
        "mrr@10": float(np.mean([r["mrr@10"] for r in runs])),
        "hit@1": float(np.mean([r["hit@1"] for r in runs])),
    }
    return {**columns, **_versus_reference(runs, results, "ndcg_per_query", "ndcg")}


def _versus_reference(runs: Runs, results: dict[str, Runs], key: str, name: str) -> dict[str, Any]:
    """The paired per-query difference of ``key`` to best-fixed's, with its 95% CI over test
    queries, and whether it is a tie (the CI contains 0: not significant, so not ranked apart)."""
    from maw_gym.stats import contains_zero, paired_difference

    reference = results.get(REFERENCE)
    if not reference or key not in reference[0] or runs is reference:
        return {}
    values = np.array([r[key] for r in runs])  # (seeds, queries)
    gain, low, high = paired_difference(values, np.array([r[key] for r in reference]))
    column = f"{name}_vs_best_fixed"
    return {
        column: gain,
        f"{column}_ci_low": low,
        f"{column}_ci_high": high,
        f"{column}_tie": contains_zero(low, high),
    }


def cost_columns(runs: Runs, results: dict[str, Runs]) -> dict[str, Any]:
    """Training time and env steps, averaged over seeds."""
    return {
        "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
        "env_steps": int(np.mean([r["env_steps"] for r in runs])),
    }


COLUMN_GROUPS: tuple[Callable[[Runs, dict[str, Runs]], dict[str, Any]], ...] = (
    return_columns,
    retrieval_columns,
    cost_columns,
)


def summarise(results: dict[str, Runs]) -> list[dict[str, Any]]:
    """One row per policy with results, best normalised score first."""
    rows = []
    for policy, runs in results.items():
        if not runs:
            continue
        row: dict[str, Any] = {"policy": policy, "seeds": len(runs), "bound": policy in BOUNDS}
        for columns in COLUMN_GROUPS:
            row.update(columns(runs, results))
        rows.append(row)
    order = {p: i for i, p in enumerate(ALL_POLICIES)}
    rows.sort(
        key=lambda r: (
            r["bound"],
            -r.get("normalized_score", -np.inf),
            order.get(r["policy"], len(order)),
        )
    )
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _interval(row: dict[str, Any], key: str, signed: bool = False, digits: int = 3) -> str:
    """``value [low, high]`` of ``key`` and its ``*_ci_low``/``*_ci_high`` columns; a
    comparison to best-fixed whose CI contains 0 is marked ``≈`` (a tie)."""
    if key not in row:
        return "–"
    stem = {"return_iqm": "return", "ndcg@10": "ndcg"}.get(key, key)
    form = f"{'+' if signed else ''}.{digits}f"
    low, high = row[f"{stem}_ci_low"], row[f"{stem}_ci_high"]
    tie = " ≈" if row.get(f"{key}_tie") else ""
    return f"{row[key]:{form}} [{low:{form}}, {high:{form}}]{tie}"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cells) + " |" for cells in lines),
    ]


RANKED_COLUMNS = (
    "policy",
    "seeds",
    "norm. score",
    "return IQM [95% CI]",
    "return vs best-fixed [95% CI]",
    "regret",
    "NDCG@10 [95% CI]",
    "NDCG@10 vs best-fixed [95% CI]",
    "MRR@10",
    "Hit@1",
    "depth-use H",
    "train s",
    "env steps",
    "ms/query",
)
BOUND_COLUMNS = ("bound", "mean return", "norm. score", "NDCG@10", "MRR@10", "Hit@1")


def _ranked_cells(r: dict[str, Any]) -> list[str]:
    """One policy's row, in :data:`RANKED_COLUMNS` order."""
    return [
        r["policy"],
        str(r["seeds"]),
        _fmt(r.get("normalized_score")),
        _interval(r, "return_iqm"),
        _interval(r, "return_vs_best_fixed", signed=True, digits=4),
        _fmt(r.get("regret")),
        _interval(r, "ndcg@10"),
        _interval(r, "ndcg_vs_best_fixed", signed=True),
        _fmt(r.get("mrr@10")),
        _fmt(r.get("hit@1")),
        _fmt(r.get("depth_usage_entropy"), 2),
        f"{r['train_seconds']:.1f}",
        str(r["env_steps"]),
        _fmt(r.get("latency_ms_per_query"), 4),
    ]


def _bound_cells(r: dict[str, Any]) -> list[str]:
    """One bound's row, in :data:`BOUND_COLUMNS` order: values only, no CI."""
    keys = ("return_mean", "normalized_score", "ndcg@10", "mrr@10", "hit@1")
    return [r["policy"], *(_fmt(r.get(key)) for key in keys)]


def render_markdown(rows: list[dict[str, Any]], ctx: Context) -> str:
    """The ranked policies, then the bounds apart (they read the test judgments)."""
    lines = [
        f"Test split, {ctx.test.num_queries} queries, env {ctx.env_id}, "
        f"preset {ctx.config['preset']['name']}, D={ctx.test.depth}. Ranked by normalised "
        "score; ≈ marks a difference to best-fixed whose paired 95% CI over test queries "
        "contains 0 (a tie, not an improvement).",
        "",
        *_table(list(RANKED_COLUMNS), [_ranked_cells(r) for r in rows if not r["bound"]]),
    ]
    bounds = [_bound_cells(r) for r in rows if r["bound"]]
    if bounds:
        lines += [
            "",
            "Bounds, not policies: each reads the test judgments per query (`oracle` the best "
            "env reward, `oracle-ndcg` the best NDCG@10 over depths); not ranked, no CI.",
            "",
            *_table(list(BOUND_COLUMNS), bounds),
        ]
    return "\n".join(lines)


def write_outputs(ctx: Context, rows: list[dict[str, Any]], results: dict[str, Runs]) -> None:
    """leaderboard.{md,csv,json}, raw per-seed scores and the plots, each written atomically."""
    from maw_gym_agents.train import read_curve
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
        p: [read_curve(ctx.out / "runs" / p / f"seed{r['seed']}") for r in runs]
        for p, runs in results.items()
        if p in LEARNED
    }
    plot_all(ctx.out, rows, results, curves)
