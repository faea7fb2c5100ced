"""The leaderboard's rows (one per policy, ceiling or bound), their Markdown, and every output.

One statistic (issue 18, :mod:`maw_gym.stats`): every figure is a mean over the test queries
with a 95% bootstrap CI over test queries, seeds averaged per query first; every comparison is
paired (the same resampled queries for both sides). The headline is the **closed gap**,
``(π − best-fixed) / (oracle − best-fixed)``, on the env return and on NDCG@10, each against
its own best fixed depth chosen on dev (:data:`~maw_gym_leaderboard.policies.GAP_REFERENCES`).
rliable's IQM over (seed, query) scores, with its CI over seeds, is one extra, labelled column.

A row is built from column groups, each a function of the policy's per-seed results and all
results: env return, retrieval quality, cost, and what dev chose for a ceiling. A new column
group is one more function in :data:`COLUMN_GROUPS`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from typing import Any

import numpy as np

from maw_gym.cache import atomic_path, write_json
from maw_gym_leaderboard.policies import (
    ALL_POLICIES,
    BOUNDS,
    CEILINGS,
    GAP_REFERENCES,
    LEARNED,
    Context,
)

Runs = list[dict[str, Any]]
"""One policy's per-seed results, as ``result.json`` stores them."""
#: Per metric: the per-query key in ``result.json`` and the row keys' stem.
METRIC_KEYS = {"return": "returns", "ndcg": "ndcg_per_query"}
METRIC_LABELS = {"return": "return", "ndcg": "NDCG@10"}
ROW_KINDS = ("policy", "ceiling", "bound")


def _per_query(runs: Runs, key: str) -> np.ndarray:
    """(seeds, queries) of the per-query values ``key``."""
    return np.array([r[key] for r in runs], dtype=np.float64)


def _with_interval(name: str, point_low_high: tuple[float, float, float]) -> dict[str, float]:
    point, low, high = point_low_high
    return {name: point, f"{name}_ci_low": low, f"{name}_ci_high": high}


def return_columns(runs: Runs, results: dict[str, Runs]) -> dict[str, Any]:
    """Mean return, normalised score (random 0, oracle 1; a closed gap from random) and
    rliable's IQM over seeds; regret; depth use and latency."""
    from maw_gym.stats import closed_gap, query_interval, seed_interval

    if "returns" not in runs[0]:
        return {}
    returns = _per_query(runs, "returns")
    random, oracle = _per_query(runs, "random_returns"), _per_query(runs, "oracle_returns")
    mean = query_interval(returns)
    usage = np.mean([r["depth_usage"] for r in runs], axis=0)
    return {
        **_with_interval("return_mean", mean),
        **_with_interval("normalized_score", closed_gap(returns, random, oracle)),
        **_with_interval("return_iqm", seed_interval(returns, "iqm")),
        "regret": float(oracle.mean() - mean[0]),
        # a policy that routes every decision to one depth (best-fixed) names it
        "fixed_depth": int(np.argmax(usage)) if np.isclose(usage.max(), 1.0) else None,
        "depth_usage_entropy": float(np.mean([r["depth_usage_entropy"] for r in runs])),
        "latency_ms_per_query": float(np.mean([r["latency_ms_per_query"] for r in runs])),
    }


def retrieval_columns(runs: Runs, results: dict[str, Runs]) -> dict[str, Any]:
    """NDCG@10 with its CI over queries, MRR@10 and Hit@1."""
    from maw_gym.stats import query_interval

    if "ndcg_per_query" not in runs[0]:
        return {}
    return {
        **_with_interval("ndcg@10", query_interval(_per_query(runs, "ndcg_per_query"))),
        "mrr@10": float(np.mean([r["mrr@10"] for r in runs])),
        "hit@1": float(np.mean([r["hit@1"] for r in runs])),
    }


def _oracle(metric: str, runs: Runs, results: dict[str, Runs]) -> np.ndarray | None:
    """(runs, queries) per-query oracle of ``metric``: each result's own ``oracle_returns``
    for the return (the env's bound, the same for every policy), the NDCG oracle's row for
    NDCG@10; None where the leaderboard has no such row."""
    if metric == "return":
        return _per_query(runs, "oracle_returns")
    bound = results.get(GAP_REFERENCES[metric][1])
    return _per_query(bound, METRIC_KEYS[metric]) if bound else None


def gap_columns(runs: Runs, results: dict[str, Runs]) -> dict[str, Any]:
    """Per metric, the closed gap and the paired difference to that metric's best-fixed, each
    with its CI over test queries; a difference whose CI contains 0 is a tie."""
    from maw_gym.stats import closed_gap, contains_zero, paired_difference

    columns: dict[str, Any] = {}
    for metric, (baseline_name, _) in GAP_REFERENCES.items():
        key, baseline = METRIC_KEYS[metric], results.get(baseline_name)
        oracle = _oracle(metric, runs, results) if key in runs[0] else None
        if oracle is None or not baseline:
            continue
        values, reference = _per_query(runs, key), _per_query(baseline, key)
        gap = closed_gap(values, reference, oracle)
        columns.update(_with_interval(f"closed_gap_{metric}", gap))
        if runs is not baseline:
            name = f"{metric}_vs_best_fixed"
            difference = _with_interval(name, paired_difference(values, reference))
            tie = contains_zero(difference[f"{name}_ci_low"], difference[f"{name}_ci_high"])
            columns.update(difference, **{f"{name}_tie": tie})
    return columns


def cost_columns(runs: Runs, results: dict[str, Runs]) -> dict[str, Any]:
    """Training time and env steps, averaged over seeds; for a learned agent, what dev
    selection kept per seed (``maw_gym_agents.curve``): its best checkpoint or a constant."""
    columns: dict[str, Any] = {
        "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
        "env_steps": int(np.mean([r["env_steps"] for r in runs])),
    }
    choices = [r["dev_choice"] for r in runs if "dev_choice" in r]
    if choices:
        constants = [c["constant_depth"] for c in choices if c.get("constant_kept")]
        kept = [f"checkpoint {len(choices) - len(constants)}/{len(choices)}"]
        kept += [f"depth {d} {constants.count(d)}/{len(choices)}" for d in sorted(set(constants))]
        columns["kept_on_dev"] = ", ".join(kept)
    return columns


def ceiling_columns(runs: Runs, results: dict[str, Runs]) -> dict[str, Any]:
    """What a ceiling learned (return or NDCG@10) and what dev chose for it."""
    choice = runs[0].get("ceiling")
    if not choice:
        return {}
    settings = {k: v for k, v in choice.items() if k not in ("learner", "target", "dev_mean")}
    return {
        "ceiling_target": choice["target"],
        "ceiling_dev_mean": choice["dev_mean"],
        "ceiling_choice": ", ".join(f"{k}={v:g}" for k, v in settings.items()),
    }


COLUMN_GROUPS: tuple[Callable[[Runs, dict[str, Runs]], dict[str, Any]], ...] = (
    return_columns,
    retrieval_columns,
    gap_columns,
    cost_columns,
    ceiling_columns,
)


def row_kind(policy: str) -> str:
    """``bound`` (reads the test judgments), ``ceiling`` (full information) or ``policy``."""
    return "bound" if policy in BOUNDS else "ceiling" if policy in CEILINGS else "policy"


def summarise(results: dict[str, Runs]) -> list[dict[str, Any]]:
    """One row per policy with results: policies, then ceilings, then bounds; each by mean
    return (equivalently closed gap on return), best first."""
    rows = []
    for policy, runs in results.items():
        if not runs:
            continue
        row: dict[str, Any] = {"policy": policy, "seeds": len(runs), "kind": row_kind(policy)}
        for columns in COLUMN_GROUPS:
            row.update(columns(runs, results))
        rows.append(row)
    order = {p: i for i, p in enumerate(ALL_POLICIES)}
    rows.sort(
        key=lambda r: (
            ROW_KINDS.index(r["kind"]),
            -r.get("return_mean", -np.inf),
            order.get(r["policy"], len(order)),
        )
    )
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _interval(row: dict[str, Any], key: str, signed: bool = False, digits: int = 3) -> str:
    """``value [low, high]`` of ``key`` and its ``_ci_low``/``_ci_high`` columns; a difference
    whose CI contains 0 is marked ``≈`` (a tie); an unknown point (no gap to close) is ``–``."""
    if key not in row or np.isnan(row[key]):
        return "–"
    form = f"{'+' if signed else ''}.{digits}f"
    low, high = row[f"{key}_ci_low"], row[f"{key}_ci_high"]
    tie = " ≈" if row.get(f"{key}_tie") else ""
    return f"{row[key]:{form}} [{low:{form}}, {high:{form}}]{tie}"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cells) + " |" for cells in lines),
    ]


def _depth(rows: list[dict[str, Any]], policy: str) -> str:
    """``policy (depth d)`` for a fixed-depth row (its depth use is one-hot), else the name."""
    row = next((r for r in rows if r["policy"] == policy), {})
    depth = row.get("fixed_depth")
    return policy if depth is None else f"{policy} (depth {depth})"


GAP_COLUMNS = (
    ("closed gap, return [95% CI]", lambda r: _interval(r, "closed_gap_return", signed=True)),
    (
        "return − best-fixed [95% CI]",
        lambda r: _interval(r, "return_vs_best_fixed", signed=True, digits=4),
    ),
    ("closed gap, NDCG@10 [95% CI]", lambda r: _interval(r, "closed_gap_ndcg", signed=True)),
    (
        "NDCG@10 − best-fixed-ndcg [95% CI]",
        lambda r: _interval(r, "ndcg_vs_best_fixed", signed=True),
    ),
)
RANKED_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("policy", lambda r: r["policy"]),
    ("seeds", lambda r: str(r["seeds"])),
    *GAP_COLUMNS,
    ("return [95% CI]", lambda r: _interval(r, "return_mean")),
    ("norm. score [95% CI]", lambda r: _interval(r, "normalized_score", signed=True)),
    ("NDCG@10 [95% CI]", lambda r: _interval(r, "ndcg@10")),
    ("MRR@10", lambda r: _fmt(r.get("mrr@10"))),
    ("Hit@1", lambda r: _fmt(r.get("hit@1"))),
    ("rliable: return IQM [95% CI over seeds]", lambda r: _interval(r, "return_iqm")),
    ("depth-use H", lambda r: _fmt(r.get("depth_usage_entropy"), 2)),
    ("kept on dev (seeds)", lambda r: r.get("kept_on_dev", "–")),
    ("train s", lambda r: f"{r['train_seconds']:.1f}"),
    ("env steps", lambda r: str(r["env_steps"])),
    ("ms/query", lambda r: _fmt(r.get("latency_ms_per_query"), 4)),
)
CEILING_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("ceiling", lambda r: r["policy"]),
    ("learns", lambda r: METRIC_LABELS.get(r.get("ceiling_target", ""), "–")),
    ("chosen on dev", lambda r: r.get("ceiling_choice", "–")),
    *GAP_COLUMNS,
    ("return [95% CI]", lambda r: _interval(r, "return_mean")),
    ("NDCG@10 [95% CI]", lambda r: _interval(r, "ndcg@10")),
    ("MRR@10", lambda r: _fmt(r.get("mrr@10"))),
    ("Hit@1", lambda r: _fmt(r.get("hit@1"))),
    ("train s", lambda r: f"{r['train_seconds']:.1f}"),
)
BOUND_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("bound", lambda r: r["policy"]),
    ("return [95% CI]", lambda r: _interval(r, "return_mean")),
    ("norm. score", lambda r: _fmt(r.get("normalized_score"))),
    ("NDCG@10 [95% CI]", lambda r: _interval(r, "ndcg@10")),
    ("MRR@10", lambda r: _fmt(r.get("mrr@10"))),
    ("Hit@1", lambda r: _fmt(r.get("hit@1"))),
)


def _render(columns: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...], rows: list) -> list:
    return _table([name for name, _ in columns], [[cell(r) for _, cell in columns] for r in rows])


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Per metric, in plain words, what the ceiling says about the task and the agents.

    The ceiling of a metric is the one of its learners (ridge, MLP) with the best dev mean of
    that metric (chosen on dev, as everything else). It ties best-fixed (CI contains 0): no
    learnable routing signal for these learners. It is above, and no learned agent is: the
    agents fail. Below: dev's choice did not carry over to test. Without a gap (the oracle
    equals best-fixed on test) there is nothing to route.
    """
    lines = []
    for metric, label in METRIC_LABELS.items():
        diff = f"{metric}_vs_best_fixed"
        ceilings = [r for r in rows if r["kind"] == "ceiling" and r.get("ceiling_target") == metric]
        ceilings = [r for r in ceilings if diff in r]
        if not ceilings:
            continue
        ceiling = max(ceilings, key=lambda r: r["ceiling_dev_mean"])
        digits = 4 if metric == "return" else 3  # as the table's difference columns
        figures = (
            f"`{ceiling['policy']}`, chosen on dev: "
            f"{_interval(ceiling, diff, signed=True, digits=digits)} against best-fixed, "
            f"closed gap {_interval(ceiling, f'closed_gap_{metric}', signed=True)}"
        )
        above = [
            r["policy"]
            for r in rows
            if r["policy"] in LEARNED
            and diff in r
            and r[f"{diff}_ci_low"] > 0
            and not r[f"{diff}_tie"]
        ]
        if np.isnan(ceiling.get(f"closed_gap_{metric}", np.nan)):
            verdict = "the oracle does no better than best-fixed: **there is nothing to route**"
        elif ceiling[f"{diff}_tie"]:
            verdict = (
                f"the ceiling ties best-fixed ({figures}): **the task has no learnable routing "
                "signal for these learners**"
            )
        elif ceiling[f"{diff}_ci_low"] > 0:
            verdict = f"the ceiling is above best-fixed ({figures}); " + (
                "no learned agent is: **the agents fail**"
                if not above
                else f"so are {', '.join(f'`{p}`' for p in above)}"
            )
        else:
            verdict = (
                f"the ceiling is below best-fixed ({figures}): what dev chose did not carry "
                "over to test, so **these learners find no routing signal**"
            )
        lines.append(f"- On {label}, {verdict}.")
    return lines


def render_markdown(rows: list[dict[str, Any]], ctx: Context) -> str:
    """The ranked policies, then the ceilings and the bounds apart, then the verdicts."""
    baseline_return, baseline_ndcg = (GAP_REFERENCES[m][0] for m in ("return", "ndcg"))
    by_kind = {kind: [r for r in rows if r["kind"] == kind] for kind in ROW_KINDS}
    lines = [
        f"Test split, {ctx.test.num_queries} queries, env {ctx.env_id}, "
        f"preset {ctx.config['preset']['name']}, D={ctx.test.depth}. Every figure is a mean "
        "over the test queries with a 95% bootstrap CI over test queries (a policy's seeds "
        "averaged per query first; comparisons paired on the same resampled queries). Closed "
        "gap = (π − best-fixed) / (oracle − best-fixed): 0 is best-fixed, 1 the oracle. Return "
        f"columns compare with {_depth(rows, baseline_return)}, the best mean return on dev; "
        f"NDCG@10 columns with {_depth(rows, baseline_ndcg)}, the best mean NDCG@10 on dev. "
        "≈ marks a difference whose CI contains 0 (a tie). Ranked by mean return. The rliable "
        "column is the IQM over (seed, query) returns with its CI over seeds. Kept on dev: "
        "per seed, a learned agent's best dev checkpoint, or the best constant depth where "
        "that was better on dev.",
        "",
        *_render(RANKED_COLUMNS, by_kind["policy"]),
    ]
    if by_kind["ceiling"]:
        lines += [
            "",
            "Ceilings, reference rows and not agents: full-information learners fitted on "
            "router-train with every depth's value per query (return, or NDCG@10 for the "
            "`-ndcg` rows), hyperparameters chosen on dev, acting by the argmax; same "
            "statistic.",
            "",
            *_render(CEILING_COLUMNS, by_kind["ceiling"]),
        ]
    if by_kind["bound"]:
        lines += [
            "",
            "Bounds, not policies: each reads the test judgments per query (`oracle` the best "
            "env reward, `oracle-ndcg` the best NDCG@10 over depths); not ranked; same "
            "statistic.",
            "",
            *_render(BOUND_COLUMNS, by_kind["bound"]),
        ]
    said = verdicts(rows)
    if said:
        lines += ["", "What the ceiling says:", "", *said]
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
