"""The supervised router: the seeds' rule labels, learning, determinism, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maw_gym.tables import Tables
from maw_gym_agents.evaluate import evaluate_router
from maw_gym_agents.saving import load_router
from maw_gym_agents.supervised import SupervisedConfig, oracle_labels, rule_labels, train

ENV = "MAW/DepthSelection-v3"
CLEAR_ENV = "MAW/DepthSelectionRetrieval-v3"  # alignment only: depth 1 wins on synthetic tables


@pytest.fixture(scope="module")
def synthetic() -> tuple[Tables, Tables]:
    return (
        Tables.synthetic(num_queries=64, best_depth=1, seed=0),
        Tables.synthetic(num_queries=32, best_depth=1, seed=1),
    )


def test_rule_labels_follow_the_seeds_rule_scaled_to_depth() -> None:
    tables = Tables.synthetic(num_queries=4, depth=8)
    gains = np.zeros((4, 10), dtype=np.float32)
    for row, relevant in enumerate((0, 2, 9, 10)):
        gains[row, :relevant] = 1.0
    tables.ideal_gains = gains
    # 5, 15, 25 of 32 depths → rint(1.25), rint(3.75), rint(6.25) of 8
    assert rule_labels(tables).tolist() == [1, 1, 4, 6]
    full = Tables.synthetic(num_queries=4, depth=32)
    full.ideal_gains = gains
    assert rule_labels(full).tolist() == [5, 5, 15, 25]


def test_oracle_labels_are_the_best_reward(synthetic) -> None:
    tables = synthetic[0]
    rewards = 0.3 * tables.entropy.mean(2) + 0.3 * tables.focus.mean(2) + 0.4 * tables.alignment
    np.testing.assert_array_equal(oracle_labels(tables), rewards.argmax(axis=1))


@pytest.mark.parametrize("depth_aware", [False, True])
def test_supervised_router_learns_and_round_trips(synthetic, depth_aware, tmp_path) -> None:
    train_tables, dev_tables = synthetic
    config = SupervisedConfig(epochs=30, depth_aware=depth_aware)
    router, metrics = train(CLEAR_ENV, train_tables, config, progress=False)
    result = evaluate_router(router, CLEAR_ENV, dev_tables)
    assert result.normalized_score > 0.6  # random is 0
    assert metrics[-1]["losses/loss"] < metrics[0]["losses/loss"]
    router.save(tmp_path)
    loaded = load_router(tmp_path)
    observations = dev_tables.observation.reshape(dev_tables.num_queries, -1)
    np.testing.assert_array_equal(loaded.act(observations), router.act(observations))
    # structured observations (obs_mode="structured") give the same actions
    np.testing.assert_array_equal(loaded.act(dev_tables.observation), router.act(observations))


def test_rule_labels_train_and_seeds_are_deterministic(synthetic) -> None:
    config = SupervisedConfig(epochs=5, labels="rule", seed=7)
    first, metrics_a = train(ENV, synthetic[0], config, progress=False)
    second, metrics_b = train(ENV, synthetic[0], config, progress=False)
    assert first.name == "supervised-rule"
    assert metrics_a == metrics_b
    for a, b in zip(first.net.state_dict().values(), second.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="labels"):
        train(ENV, synthetic[0], SupervisedConfig(labels="complexity"), progress=False)
