"""Heuristics and bounds: hand-computed rewards and scores, the oracle is the maximum."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from maw_gym.tables import Tables
from maw_gym_agents.evaluate import evaluate_router
from maw_gym_agents.heuristics import (
    FixedDepthRouter,
    LookupRouter,
    RandomRouter,
    ScoreRouter,
    best_fixed_depth,
    depth_head_scores,
    hash_depth,
    hash_router,
    heuristic_routers,
    oracle_router,
)
from maw_gym_agents.saving import load_router
from maw_gym_agents.spaces import ActionSpec

ENV = "MAW/DepthSelection-v3"


@pytest.fixture(scope="module")
def tables() -> tuple[Tables, Tables]:
    return (
        Tables.synthetic(num_queries=24, best_depth=1, seed=0),
        Tables.synthetic(num_queries=16, best_depth=1, seed=1),
    )


def _reward_table(t: Tables) -> np.ndarray:
    """The seeds' default reward of every (query, depth), straight from the tables."""
    return 0.3 * t.entropy.mean(axis=2) + 0.3 * t.focus.mean(axis=2) + 0.4 * t.alignment


def test_oracle_is_the_max_and_random_is_the_exact_mean(tables) -> None:
    _, test = tables
    rewards = _reward_table(test)
    result = evaluate_router(oracle_router(ENV, test), ENV, test)
    assert result.mean_return == pytest.approx(rewards.max(axis=1).mean(), rel=1e-5)
    assert result.oracle_mean == pytest.approx(rewards.max(axis=1).mean(), rel=1e-5)
    assert result.normalized_score == pytest.approx(1.0)
    assert result.regret == pytest.approx(0.0, abs=1e-6)
    assert result.random_exact
    assert result.random_mean == pytest.approx(rewards.mean(), rel=1e-5)


def test_fixed_and_best_fixed(tables) -> None:
    train, test = tables
    router, means = best_fixed_depth(ENV, train)
    np.testing.assert_allclose(means, _reward_table(train).mean(axis=0), rtol=1e-5)
    assert router.depth == int(np.argmax(means)) == 1
    result = evaluate_router(FixedDepthRouter(ActionSpec("discrete", 4), 2), ENV, test)
    assert result.mean_return == pytest.approx(_reward_table(test)[:, 2].mean(), rel=1e-5)
    assert result.depth_usage.tolist() == [0, 0, 1, 0]
    assert result.depth_usage_entropy == 0.0
    np.testing.assert_allclose(result.candidate_scores, test.depth_scores()[:, 2])


def _focused(tables: Tables, depth: int) -> Tables:
    """``tables`` with entropy and focus 1 at ``depth`` and 0 elsewhere: that depth's reward is
    0.6 + 0.4·NDCG@10, every other depth's at most 0.4, whatever their NDCG."""
    onehot = np.zeros_like(tables.entropy)
    onehot[:, depth] = 1.0
    return dataclasses.replace(tables, entropy=onehot, focus=onehot.copy())


def test_best_fixed_is_chosen_per_metric_on_the_split_it_is_given() -> None:
    # dev: depth 1 ranks best (NDCG), depth 2 has the best return; test: depths 3 and 0
    dev = _focused(Tables.synthetic(num_queries=24, best_depth=1, seed=3), depth=2)
    test = _focused(Tables.synthetic(num_queries=16, best_depth=3, seed=4), depth=0)
    by_return, returns = best_fixed_depth(ENV, dev, "return")
    by_ndcg, ndcg = best_fixed_depth(ENV, dev, "ndcg")
    assert (by_return.depth, by_ndcg.depth) == (2, 1)
    np.testing.assert_allclose(ndcg, dev.alignment.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(returns, 0.6 * (np.arange(4) == 2) + 0.4 * ndcg, rtol=1e-5)
    routers = heuristic_routers(ENV, dev, test)
    assert (routers["best-fixed"].depth, routers["best-fixed-ndcg"].depth) == (2, 1)
    assert routers["best-fixed-ndcg"].name == "best-fixed-ndcg"
    with pytest.raises(ValueError, match="metric='mrr'"):
        best_fixed_depth(ENV, dev, "mrr")


def test_hash_router_is_a_fixed_function_of_the_query_id(tmp_path) -> None:
    # first 8 bytes of `echo -n q0 | sha256sum` (341c0a3e67c31467) mod 8, and of q1 (c75de8c1...)
    assert (hash_depth("q0", 8), hash_depth("q1", 8), hash_depth("q0", 4)) == (7, 2, 3)
    # the same in a process with another string-hash salt (Python's hash() would differ)
    code = "from maw_gym_agents.heuristics import hash_depth; print(hash_depth('q0', 8))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "123"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout.strip() == "7"
    test = Tables.synthetic(num_queries=16, seed=6)
    router = hash_router(ENV, test)
    expected = [hash_depth(q, test.depth) for q in test.query_ids]
    result = evaluate_router(router, ENV, test)
    assert result.actions[:, 0].tolist() == expected
    assert len(set(expected)) > 1  # it varies per query
    router.save(tmp_path)
    assert evaluate_router(load_router(tmp_path), ENV, test).actions[:, 0].tolist() == expected
    mixture = evaluate_router(
        hash_router("MAW/SoftDepthMixture-v3", test), "MAW/SoftDepthMixture-v3", test
    )
    assert mixture.actions[:, 0].argmax(-1).tolist() == expected


def test_score_strategies_hand_computed() -> None:
    # D=2, H=1, P=2: depth 0 uniform (entropy 1, norm 0.5), depth 1 one-hot (entropy 0, norm 1)
    observation = np.array([[0.25, 0.25, 0.25, 0.25, 1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    entropy = depth_head_scores(observation, (2, 1, 2), "entropy-max")
    np.testing.assert_allclose(entropy, [[[1.0, 0.0]]], atol=1e-9)
    np.testing.assert_allclose(
        depth_head_scores(observation, (2, 1, 2), "attention-norm"), [[[0.5, 1.0]]]
    )
    spec = ActionSpec("discrete", 2)
    assert ScoreRouter(spec, "entropy-max", (2, 1, 2)).act(observation).tolist() == [0]
    assert ScoreRouter(spec, "entropy-min", (2, 1, 2)).act(observation).tolist() == [1]
    assert ScoreRouter(spec, "attention-norm", (2, 1, 2)).act(observation).tolist() == [1]
    mixture = ScoreRouter(ActionSpec("simplex", 2), "topk-norm", (2, 1, 2), top_k=1)
    np.testing.assert_allclose(mixture.act(observation), [[0.0, 1.0]])
    soft = ScoreRouter(ActionSpec("simplex", 2), "attention-norm", (2, 1, 2)).act(observation)
    np.testing.assert_allclose(
        soft, [[1 / (1 + np.e**0.5), np.e**0.5 / (1 + np.e**0.5)]], rtol=1e-6
    )


def test_every_heuristic_saves_loads_and_acts_alike(tables, tmp_path) -> None:
    train, test = tables
    routers = heuristic_routers(ENV, train, test)
    assert {
        "random",
        "hash",
        "best-fixed",
        "best-fixed-ndcg",
        "entropy-max",
        "attention-norm",
        "topk-norm",
        "joint-router",
        "oracle",
    } <= set(routers)
    observations = test.observation.reshape(test.num_queries, -1)
    for name, router in routers.items():
        router.save(tmp_path / name)
        loaded = load_router(tmp_path / name)
        assert type(loaded) is type(router) and loaded.name == router.name
        if isinstance(router, RandomRouter):
            continue  # a fresh generator: same seed, same draws, checked below
        np.testing.assert_array_equal(loaded.act(observations), router.act(observations))
    fresh = load_router(tmp_path / "random")
    np.testing.assert_array_equal(
        fresh.act(observations), RandomRouter(ActionSpec("discrete", 4)).act(observations)
    )
    joint = evaluate_router(routers["joint-router"], ENV, test)
    np.testing.assert_array_equal(joint.actions[:, 0], test.joint_router_logits.argmax(1))


def test_lookup_router_refuses_foreign_observations(tables) -> None:
    train, test = tables
    router = oracle_router(ENV, test)
    assert isinstance(router, LookupRouter)
    with pytest.raises(KeyError, match="build it on the tables you evaluate"):
        router.act(train.observation[:1].reshape(1, -1))


@pytest.mark.parametrize(
    "env_id", ["MAW/PerHeadDepth-v3", "MAW/SoftDepthMixture-v3", "MAW/LayerwiseDepth-v3"]
)
def test_bounds_on_every_variant(env_id) -> None:
    train = Tables.synthetic(num_queries=12, best_depth=1, seed=0, layers=True)
    test = Tables.synthetic(num_queries=8, best_depth=1, seed=1, layers=True)
    routers = heuristic_routers(env_id, train, test)
    results = {name: evaluate_router(router, env_id, test) for name, router in routers.items()}
    assert results["oracle"].normalized_score == pytest.approx(1.0)
    assert max(r.normalized_score for r in results.values()) == pytest.approx(1.0)
    assert ("uniform-mixture" in routers) == (env_id == "MAW/SoftDepthMixture-v3")
    oracle = results["oracle"]
    if env_id == "MAW/LayerwiseDepth-v3":
        d1, d2 = oracle.actions[:, 0], oracle.actions[:, 1]
        expected = test.layer2_scores[np.arange(8), d1, d2]
    elif env_id == "MAW/PerHeadDepth-v3":
        heads = oracle.actions[:, 0]  # (N, H) one depth per head
        expected = test.score_base + sum(
            test.score_parts[np.arange(8), heads[:, h], h] for h in range(test.heads)
        )
    else:
        expected = test.depth_scores()[np.arange(8), oracle.actions[:, 0].argmax(-1)]
    np.testing.assert_allclose(oracle.candidate_scores, expected, rtol=1e-5, atol=1e-5)


def test_oracle_falls_back_to_the_best_shared_depth_when_heads_are_too_many() -> None:
    # 4 depths ** 8 heads = 65,536 head assignments: more than enumeration allows
    test = Tables.synthetic(num_queries=6, heads=8, best_depth=1, seed=2)
    result = evaluate_router(
        oracle_router("MAW/PerHeadDepth-v3", test), "MAW/PerHeadDepth-v3", test
    )
    actions = result.actions[:, 0]  # (N, H)
    assert (actions == actions[:, :1]).all()
    np.testing.assert_array_equal(actions[:, 0], _reward_table(test).argmax(axis=1))
    assert not result.oracle_enumerated and not result.random_exact
    assert result.normalized_score == pytest.approx(1.0)  # the env's shared-depth oracle
