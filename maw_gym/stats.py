"""Statistics the leaderboard reports: rliable interval estimates and paired bootstraps.

Two sources of uncertainty are kept apart on purpose. Over **seeds** (the training run's luck),
rliable's stratified bootstrap treats each test query as a task and resamples runs within it
(Agarwal et al., 2021, "Deep RL at the Edge of the Statistical Precipice"); a deterministic
policy has no seed variance, and its seed CI is a point. Over **queries** (which queries the test
split happens to hold), a percentile bootstrap resamples queries; comparisons between two
policies resample the same queries for both (paired), which is what decides whether routing
beats the best fixed depth.
"""

from __future__ import annotations

import warnings
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
    """(point, low, high) of the IQM or mean of ``scores`` (runs, queries), stratified over runs."""
    func = {"iqm": metrics.aggregate_iqm, "mean": metrics.aggregate_mean}[statistic]
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


def query_interval(per_query: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of a per-query metric ``(runs, queries)``, bootstrapping queries."""
    per_query = np.asarray(per_query, dtype=np.float64).reshape(-1, np.shape(per_query)[-1])
    query_means = per_query.mean(axis=0)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, query_means.size, size=(BOOTSTRAP_REPS, query_means.size))
    boot = query_means[picks].mean(axis=1)
    alpha = (1 - CONFIDENCE) / 2
    return (
        float(query_means.mean()),
        float(np.quantile(boot, alpha)),
        float(np.quantile(boot, 1 - alpha)),
    )


#: Bootstrap bounds are means of float64 differences: a bound within this of 0 *is* 0 (e.g.
#: 7e-20 when most resampled means are exactly 0), so it must not turn a tie into a "win".
FLOAT_ROUNDING = 1e-12


def contains_zero(low: float, high: float) -> bool:
    """Whether the interval [low, high] contains 0, up to :data:`FLOAT_ROUNDING` (a tie)."""
    return low <= FLOAT_ROUNDING and high >= -FLOAT_ROUNDING


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of ``a - b`` per query (each ``(runs, queries)``, averaged over runs)."""
    diff = np.asarray(a, dtype=np.float64).reshape(-1, np.shape(a)[-1]).mean(axis=0) - np.asarray(
        b, dtype=np.float64
    ).reshape(-1, np.shape(b)[-1]).mean(axis=0)
    return query_interval(diff[None, :], seed=seed)


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
