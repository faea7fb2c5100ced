"""Ceilings: above best-fixed where the best depth is readable from the observation, tied with
it where it is not, and replayable like any router."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maw_gym.stats import contains_zero, paired_difference
from maw_gym.tables import Tables
from maw_gym_agents.ceiling import CEILINGS, fit_ceiling, has_ceiling
from maw_gym_agents.evaluate import evaluate_router
from maw_gym_agents.heuristics import best_fixed_depth
from maw_gym_agents.saving import load_router
from maw_gym_leaderboard import policies

ENV = "MAW/DepthSelection-v3"


def grouped(per_group: int, seed: int, signal: bool) -> Tables:
    """Two query groups, whose relevant documents depth 0 (group A) or depth 2 (group B)
    ranks first. With ``signal`` every head's map of a group-B query puts 0.9 on its first
    cell; without, the mark falls on a random half of the queries, whatever their group."""
    a = Tables.synthetic(num_queries=per_group, best_depth=0, seed=seed)
    b = Tables.synthetic(num_queries=per_group, best_depth=2, seed=seed + 100)
    arrays = {k: np.concatenate([v, b.arrays()[k]]) for k, v in a.arrays().items()}
    arrays["query_ids"] = np.array([f"s{seed}q{i}" for i in range(2 * per_group)])
    marked = np.repeat([False, True], per_group)
    if not signal:
        marked = np.random.default_rng(seed).permutation(marked)
    observation = arrays["observation"].copy()
    observation[marked, :, :, 0, 0] = 0.9
    arrays["observation"] = observation
    return Tables(**arrays, meta={"split": f"grouped-{seed}"})


def _versus_best_fixed(name: str, signal: bool) -> tuple[float, float, float]:
    train, dev, test = (grouped(40, seed, signal) for seed in (1, 2, 3))
    router, choice = fit_ceiling(name, ENV, train, dev)
    assert choice["learner"] == CEILINGS[name][0]
    best_fixed = best_fixed_depth(ENV, dev)[0]
    return paired_difference(
        evaluate_router(router, ENV, test).returns,
        evaluate_router(best_fixed, ENV, test).returns,
    )


@pytest.mark.parametrize("name", ["ceiling-ridge", "ceiling-mlp"])
def test_a_ceiling_beats_best_fixed_where_the_observation_tells_the_depth(name) -> None:
    gain, low, _ = _versus_best_fixed(name, signal=True)
    assert low > 0, (gain, low)


@pytest.mark.parametrize("name", ["ceiling-ridge", "ceiling-mlp"])
def test_a_ceiling_ties_best_fixed_where_the_observation_does_not(name) -> None:
    gain, low, high = _versus_best_fixed(name, signal=False)
    assert contains_zero(low, high), (gain, low, high)


def test_ndcg_ceilings_learn_ndcg_and_every_ceiling_replays(tmp_path) -> None:
    train, dev, test = (grouped(40, seed, True) for seed in (1, 2, 3))
    router, choice = fit_ceiling("ceiling-ridge-ndcg", ENV, train, dev)
    assert choice["target"] == "ndcg"
    result = evaluate_router(router, ENV, test)
    # group A's best NDCG is depth 0, group B's depth 2 (synthetic best_depth)
    assert (result.actions[:40, 0] == 0).mean() > 0.9 and (result.actions[40:, 0] == 2).mean() > 0.9
    router.save(tmp_path)
    replayed = evaluate_router(load_router(tmp_path), ENV, test)
    np.testing.assert_array_equal(replayed.actions, result.actions)


def test_ceilings_refuse_multi_decision_envs_and_unknown_names() -> None:
    tables = Tables.synthetic(num_queries=8, layers=True)
    with pytest.raises(ValueError, match="one-decision envs only"):
        fit_ceiling("ceiling-ridge", "MAW/LayerwiseDepth-v3", tables, tables)
    with pytest.raises(ValueError, match="unknown ceiling 'ceiling-knn'"):
        fit_ceiling("ceiling-knn", ENV, tables, tables)


def test_the_leaderboard_lists_every_ceiling_where_it_applies() -> None:
    from maw_gym.presets import get_preset
    from maw_gym_leaderboard.run import LeaderboardJob, check_job

    assert tuple(CEILINGS) == policies.CEILINGS
    assert has_ceiling(ENV) and has_ceiling("MAW/PerHeadDepth-v3")
    assert not has_ceiling("MAW/LayerwiseDepth-v3")
    for env_id, expected in ((ENV, set(CEILINGS)), ("MAW/LayerwiseDepth-v3", set())):
        job = LeaderboardJob(dataset="nave-kjv", preset="smoke", out=Path("unused"), env=env_id)
        _, chosen = check_job(job, get_preset("smoke"))
        assert set(chosen) & set(CEILINGS) == expected
        assert {"best-fixed", "best-fixed-ndcg", "oracle", "oracle-ndcg"} <= set(chosen)
