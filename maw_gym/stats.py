"""Statistics the leaderboard reports: rliable interval estimates and paired bootstraps.

Two sources of uncertainty are kept apart on purpose. Over **seeds** (the training run's luck),
rliable's stratified bootstrap treats each test query as a task and resamples runs within it
(Agarwal et al., 2021, "Deep RL at the Edge of the Statistical Precipice"); a deterministic
policy has no seed variance, and its seed CI is a point. Over **queries** (which queries the test
split happens to hold), a percentile bootstrap resamples queries; comparisons between two
policies resample the same queries for both (paired), which is what decides whether routing
beats the best fixed depth.

**The one statistic** (issue 18): every figure that compares policies with each other or with
the bounds is a mean over test queries, with a percentile bootstrap over test queries. A policy
with several seeds is first averaged over its seeds *per query* (so seeds narrow the per-query
noise; they are not resampled), then queries are resampled; every function here that bootstraps
queries draws the same resampled indices for the same ``seed``, so intervals of different
figures of one leaderboard are paired with each other too. rliable's IQM over (seed, query)
scores stays available (:func:`seed_interval`) as its own, labelled, column.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from rliable import library as rly
from rliable import metrics

BOOTSTRAP_REPS = 2000
CONFIDENCE = 0.95


def _rliable_intervals(
    scores: dict[str, np.ndarray], func: Any, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's stratified bootstrap (runs resampled within each task) of ``func``."""
    with warnings.catch_warnings():
        # rliable passes arch a RandomState, which arch deprecates; the draws are the same.
        warnings.simplefilter("ignore", FutureWarning)
        return rly.get_interval_estimates(
            {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()},
            func,
            reps=BOOTSTRAP_REPS,
            confidence_interval_size=CONFIDENCE,
            random_state=np.random.RandomState(seed),
        )


def seed_interval(
    scores: np.ndarray, statistic: str = "iqm", seed: int = 0
) -> tuple[float, float, float]:
    """(point, low, high) of the IQM or mean of ``scores`` (runs, queries), stratified over runs.

    One run has nothing to resample: every bootstrap replicate is that run, so the interval is
    the point (rliable's 2000 replicates returned it up to float summation noise, and made up
    most of a quick leaderboard's report time).
    """
    func = {"iqm": metrics.aggregate_iqm, "mean": metrics.aggregate_mean}[statistic]
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[0] == 1:
        point = float(func(scores))
        return point, point, point
    point, interval = _rliable_intervals({"policy": scores}, lambda x: np.array([func(x)]), seed)
    low, high = interval["policy"][:, 0]
    return float(point["policy"][0]), float(low), float(high)


#: What :func:`task_aggregates` reports, in order (rliable's aggregate metrics).
AGGREGATES = ("iqm", "mean", "optimality_gap")


def task_aggregates(
    scores: dict[str, np.ndarray], seed: int = 0
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per policy, (point, low, high) of each of :data:`AGGREGATES` over normalised scores
    ``(runs, tasks)`` (oracle = 1), stratified over runs within tasks (Agarwal et al. 2021).

    The optimality gap is the mean shortfall below 1 (the oracle), so lower is better.
    """

    def func(x: np.ndarray) -> np.ndarray:
        return np.array(
            [
                metrics.aggregate_iqm(x),
                metrics.aggregate_mean(x),
                metrics.aggregate_optimality_gap(x, gamma=1.0),
            ]
        )

    point, interval = _rliable_intervals(scores, func, seed)
    return {
        policy: {
            name: (float(point[policy][i]), *map(float, interval[policy][:, i]))
            for i, name in enumerate(AGGREGATES)
        }
        for policy in scores
    }


def query_means(per_query: np.ndarray) -> np.ndarray:
    """(queries,) a per-query metric ``(runs, queries)`` or ``(queries,)`` averaged over runs."""
    values = np.asarray(per_query, dtype=np.float64)
    return values.reshape(-1, values.shape[-1]).mean(axis=0)


def _query_picks(queries: int, seed: int) -> np.ndarray:
    """(BOOTSTRAP_REPS, queries) resampled query indices; the same for the same ``seed``."""
    return np.random.default_rng(seed).integers(0, queries, size=(BOOTSTRAP_REPS, queries))


def query_interval(per_query: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of a per-query metric ``(runs, queries)``, bootstrapping queries."""
    means = query_means(per_query)
    boot = means[_query_picks(means.size, seed)].mean(axis=1)
    alpha = (1 - CONFIDENCE) / 2
    return (
        float(means.mean()),
        float(np.quantile(boot, alpha)),
        float(np.quantile(boot, 1 - alpha)),
    )


#: A mean gap (oracle − baseline) at or below this is no gap: the ratio is undefined there.
#: Returns and NDCG lie in [0, 1], so 1e-9 is far below any gap worth closing.
GAP_FLOOR = 1e-9


def closed_gap(
    policy: np.ndarray, baseline: np.ndarray, oracle: np.ndarray, seed: int = 0
) -> tuple[float, float, float]:
    """(point, low, high) of ``(mean π − mean baseline) / (mean oracle − mean baseline)``.

    ASlib's closed gap, (SBS − π)/(SBS − VBS) written for rewards (Lindauer et al. 2019): 0 is
    the baseline (best-fixed), 1 the oracle; with the uniform random policy as baseline it is
    the normalised score. Each argument is ``(runs, queries)`` or ``(queries,)``, averaged over
    runs per query first. The CI resamples the same test queries for all three (paired) and
    recomputes the ratio per resample.

    A gap at or below :data:`GAP_FLOOR` has no ratio. The point is then NaN (nothing to
    close). A resample with no gap counts as unknown in *both* directions: it is ``−inf`` for
    the low percentile and ``+inf`` for the high one, so when more than 2.5% of resamples have
    no gap (few queries carry all of it) the interval is unbounded, never narrowed by
    dropping them.
    """
    return mean_closed_gap([(policy, baseline, oracle)], seed)


def mean_closed_gap(
    tasks: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], seed: int = 0
) -> tuple[float, float, float]:
    """(point, low, high) of the mean over tasks of each task's :func:`closed_gap`, given per
    task (policy, baseline, oracle) per-query arrays. The bootstrap resamples queries within
    each task (task k with seed ``seed + k``, so two policies of one task are paired) and
    averages the tasks' ratios per resample; a resample where any task has no gap is unknown,
    as in :func:`closed_gap`, and so is the point if any task has none."""
    gains, gaps = [], []
    for policy, baseline, oracle in tasks:
        values = [query_means(v) for v in (policy, baseline, oracle)]
        if len({v.size for v in values}) != 1:
            raise ValueError(f"closed gap: per-query arrays of {[v.size for v in values]} queries")
        gains.append(values[0] - values[1])
        gaps.append(values[2] - values[1])
    if not gaps:
        raise ValueError("closed gap: no tasks")
    boot_ratio = np.zeros(BOOTSTRAP_REPS)
    defined = np.ones(BOOTSTRAP_REPS, dtype=bool)
    for k, (gain, gap) in enumerate(zip(gains, gaps, strict=True)):
        picks = _query_picks(gap.size, seed + k)
        boot_gain, boot_gap = gain[picks].mean(axis=1), gap[picks].mean(axis=1)
        task_defined = boot_gap > GAP_FLOOR
        boot_ratio += np.divide(
            boot_gain, boot_gap, out=np.zeros(BOOTSTRAP_REPS), where=task_defined
        )
        defined &= task_defined
    boot_ratio /= len(gaps)
    alpha = (1 - CONFIDENCE) / 2
    low = _quantile_with_unknowns(boot_ratio, defined, alpha, -np.inf)
    high = _quantile_with_unknowns(boot_ratio, defined, 1 - alpha, np.inf)
    has_gap = all(gap.mean() > GAP_FLOOR for gap in gaps)
    point = (
        np.mean([g.mean() / p.mean() for g, p in zip(gains, gaps, strict=True)])
        if has_gap
        else np.nan
    )
    return float(point), low, high


def _quantile_with_unknowns(
    values: np.ndarray, known: np.ndarray, q: float, unknown: float
) -> float:
    """The ``q`` quantile of ``values`` with the unknown ones set to ``unknown`` (±inf).

    numpy interpolates an infinite neighbour into NaN (inf − inf); that neighbour is the
    unknown side, so the quantile is ``unknown`` there.
    """
    with np.errstate(invalid="ignore"):
        result = float(np.quantile(np.where(known, values, unknown), q))
    return unknown if np.isnan(result) else result


#: Bootstrap bounds are means of float64 differences: a bound within this of 0 *is* 0 (e.g.
#: 7e-20 when most resampled means are exactly 0), so it must not turn a tie into a "win".
FLOAT_ROUNDING = 1e-12


def contains_zero(low: float, high: float) -> bool:
    """Whether the interval [low, high] contains 0, up to :data:`FLOAT_ROUNDING` (a tie)."""
    return low <= FLOAT_ROUNDING and high >= -FLOAT_ROUNDING


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of ``a - b`` per query (each ``(runs, queries)``, averaged over runs)."""
    return query_interval(query_means(a) - query_means(b), seed=seed)


def probability_of_improvement(
    x: np.ndarray, y: np.ndarray, seed: int = 0
) -> tuple[float, float, float]:
    """P(X > Y) with a stratified-bootstrap CI; ``x``, ``y``: (runs, queries), queries = tasks.

    The estimator of ``rliable.metrics.probability_of_improvement`` (per task, the Mann-Whitney
    statistic over all run pairs, ties counting half; averaged over tasks), vectorised: rliable's
    own loop over tasks took 71 s for 400 queries on 2 cores. Runs are resampled within each task.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)

    def estimate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        # a: (..., m, Q), b: (..., n, Q) -> (...,)
        wins = (a[..., :, None, :] > b[..., None, :, :]).mean(axis=(-3, -2))
        ties = (a[..., :, None, :] == b[..., None, :, :]).mean(axis=(-3, -2))
        return (wins + 0.5 * ties).mean(axis=-1)

    rng = np.random.default_rng(seed)
    reps = BOOTSTRAP_REPS // 4
    queries = np.arange(x.shape[1])
    bx = x[rng.integers(0, x.shape[0], size=(reps, *x.shape)), queries]
    by = y[rng.integers(0, y.shape[0], size=(reps, *y.shape)), queries]
    boot = estimate(bx, by)
    alpha = (1 - CONFIDENCE) / 2
    return (
        float(estimate(x, y)),
        float(np.quantile(boot, alpha)),
        float(np.quantile(boot, 1 - alpha)),
    )
