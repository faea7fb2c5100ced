"""The leaderboard's statistics against rliable and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from rliable import library as rly
from rliable import metrics

from maw_gym.stats import (
    BOOTSTRAP_REPS,
    paired_difference,
    probability_of_improvement,
    query_interval,
    seed_interval,
)


def test_probability_of_improvement_matches_rliable() -> None:
    rng = np.random.default_rng(0)
    x = np.round(rng.random((3, 12)), 1)  # rounding makes ties, which count half
    y = np.round(rng.random((2, 12)) * 0.8, 1)
    point, low, high = probability_of_improvement(x, y)
    assert point == pytest.approx(metrics.probability_of_improvement(x, y))
    assert low <= point <= high


def test_probability_of_improvement_hand_computed() -> None:
    # task 0: x wins both pairs; task 1: one tie, one loss -> (1 + 0.25) / 2
    x = np.array([[2.0, 1.0]])
    y = np.array([[1.0, 1.0], [0.0, 3.0]])
    assert probability_of_improvement(x, y)[0] == pytest.approx(0.625)


def test_seed_interval_is_rliables_and_is_a_point_for_one_run() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random((4, 50)) + np.linspace(0, 1, 4)[:, None]  # runs differ: a real interval
    for statistic, func in (("iqm", metrics.aggregate_iqm), ("mean", metrics.aggregate_mean)):
        point, low, high = seed_interval(scores, statistic)
        _, expected = rly.get_interval_estimates(
            {"p": scores}, lambda x, f=func: np.array([f(x)]), reps=BOOTSTRAP_REPS
        )
        # rliable's bootstrap does not honour its random_state (measured: two calls with
        # RandomState(0) differ by ~0.003 here), so the two intervals agree to bootstrap noise.
        assert (low, high) == pytest.approx(tuple(expected["p"][:, 0]), abs=0.02)
        assert point == pytest.approx(func(scores)) and low < point < high
    assert seed_interval(scores[:1], "mean") == pytest.approx((scores[0].mean(),) * 3)
    # IQM of 0..99 drops the lowest and highest quarter: mean of 25..74
    assert seed_interval(np.arange(100.0)[None, :], "iqm")[0] == pytest.approx(49.5)


def test_query_bootstrap_and_paired_difference() -> None:
    per_query = np.array([[0.0, 1.0, 0.5, 0.5]])
    assert query_interval(per_query)[0] == pytest.approx(0.5)
    # On 400 queries the percentile bootstrap of a mean is close to the normal interval,
    # mean ± 1.96·sd/√n: a wrong resampling (of seeds, not queries; or no resampling) is not.
    values = np.random.default_rng(2).random((1, 400))
    mean, low, high = query_interval(values)
    half = 1.96 * values.std() / np.sqrt(400)
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx((mean - half, mean + half), abs=0.2 * half)
    same = paired_difference(per_query, per_query)
    assert same == (0.0, 0.0, 0.0)
    gain = paired_difference(per_query + 0.1, per_query)
    assert gain == pytest.approx((0.1, 0.1, 0.1))


def test_a_bound_at_zero_up_to_float_rounding_is_a_tie() -> None:
    """Measured at quick: grpo-enum's NDCG gain CI was [6.9e-20, 6.8e-4] (most resampled means
    exactly 0); read as > 0 it ranked a tie as a win."""
    from maw_gym.stats import contains_zero

    assert contains_zero(6.9e-20, 6.8e-4) and contains_zero(-3e-4, -5e-19)
    assert contains_zero(-0.01, 0.01)
    assert not contains_zero(1e-6, 1e-3) and not contains_zero(-1e-3, -1e-6)
    # One query of 400 gains 0.1: a resample misses it with probability (1 - 1/400)^400 ≈ 37%,
    # so the 2.5% bound is 0 and the difference is a tie, not an improvement.
    gain = np.zeros((1, 400))
    gain[0, 0] = 0.1
    _, low, high = paired_difference(gain, np.zeros((1, 400)))
    assert contains_zero(low, high)


def test_closed_gap_hand_computed_and_paired() -> None:
    from maw_gym.stats import closed_gap

    baseline = np.array([0.2, 0.4, 0.1, 0.5])
    oracle = np.array([0.6, 0.4, 0.3, 0.9])  # gaps 0.4, 0, 0.2, 0.4: mean 0.25
    # two seeds, averaged per query first: (0.3, 0.4, 0.2, 0.6); gains 0.1, 0, 0.1, 0.1
    policy = np.array([[0.2, 0.4, 0.1, 0.7], [0.4, 0.4, 0.3, 0.5]])
    point, low, high = closed_gap(policy, baseline, oracle)
    assert point == pytest.approx(0.075 / 0.25)
    assert low < point < high  # the gains are not proportional to the gaps: a real interval
    # each query's gain a fixed share of its gap: every resample's ratio is that share, so the
    # paired CI is the point (an unpaired bootstrap of the three means would be wide)
    rng = np.random.default_rng(0)
    baseline, gap = rng.random(50), rng.random(50)
    assert closed_gap(baseline + 0.25 * gap, baseline, baseline + gap) == pytest.approx(
        (0.25, 0.25, 0.25)
    )
    assert closed_gap(baseline, baseline, baseline + gap) == pytest.approx((0.0, 0.0, 0.0))
    assert closed_gap(baseline + gap, baseline, baseline + gap) == pytest.approx((1.0, 1.0, 1.0))


def test_closed_gap_without_gap_is_unknown_not_narrowed() -> None:
    from maw_gym.stats import closed_gap, mean_closed_gap

    values = np.linspace(0.0, 1.0, 40)
    point, low, high = closed_gap(values + 0.1, values, values)  # oracle = baseline everywhere
    assert np.isnan(point) and (low, high) == (-np.inf, np.inf)
    # one query of 40 carries the whole gap: a resample misses it with probability
    # (39/40)^40 ≈ 36% > 2.5%, so both ends are unknown although the point is 0.5
    gap = np.zeros(40)
    gap[0] = 1.0
    assert closed_gap(values + 0.5 * gap, values, values + gap) == pytest.approx(
        (0.5, -np.inf, np.inf)
    )
    # ten of 40 queries share the gap: a resample misses all ten with probability
    # (30/40)^40 ≈ 1e-5, so every resample has a ratio; it is 0.5 on each (proportional)
    gap[:10] = 1.0
    assert closed_gap(values + 0.5 * gap, values, values + gap) == pytest.approx((0.5, 0.5, 0.5))
    # over tasks: the mean of the tasks' ratios, 0.5 and 1.0
    tasks = [(values + 0.5 * gap, values, values + gap), (values + gap, values, values + gap)]
    assert mean_closed_gap(tasks) == pytest.approx((0.75, 0.75, 0.75))
