"""SB3 baselines: they learn the smoke env, save/load round trips, seeding, YAML, the adapter."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from maw_gym.tables import Tables
from maw_gym_agents import sb3
from maw_gym_agents.curve import DevCurve
from maw_gym_agents.evaluate import evaluate_router
from maw_gym_agents.hyperparams import load_hyperparams
from maw_gym_agents.saving import load_router

ENV_ID = "MAW/DepthSelection-v3"
# Small budgets that still learn the synthetic env (depth 1 is clearly best on every query).
BUDGETS = {
    "ppo": (4096, {}),
    "a2c": (4096, {}),
    "dqn": (
        4096,
        {
            "learning_starts": 128,
            "train_freq": 4,
            "target_update_interval": 64,
            "exploration_fraction": 0.5,
        },
    ),
}


@pytest.fixture(scope="module")
def tables() -> Tables:
    return Tables.synthetic(num_queries=32, best_depth=1)


def observations(tables: Tables) -> np.ndarray:
    envs = gym.make_vec(
        ENV_ID, num_envs=tables.num_queries, vectorization_mode="vector_entry_point", tables=tables
    )
    obs, _ = envs.reset(seed=0, options={"query_index": np.arange(tables.num_queries)})
    envs.close()
    return obs


def quick_train(
    algo: str,
    tables: Tables,
    out_dir: Path,
    seed: int = 0,
    steps: int | None = None,
    curve: DevCurve | None = None,
) -> sb3.SB3Router:
    budget, overrides = BUDGETS[algo]
    params = {**load_hyperparams(algo, ENV_ID), **overrides}
    return sb3.train(
        algo,
        ENV_ID,
        tables,
        curve,
        seed,
        steps or budget,
        out_dir,
        hyperparams=params,
        progress=False,
    )


@pytest.mark.parametrize("algo", sorted(BUDGETS))
def test_learns_the_clearly_best_depth_and_round_trips(algo, tmp_path):
    """Scored on queries it never trained on: on synthetic tables the observation says nothing
    about the best depth, so what generalises is "depth 1 always" (best-fixed: 0.70 here);
    trained and scored on 32 queries the agents had memorised them instead (held out: PPO
    0.10, DQN -0.01)."""
    tables = Tables.synthetic(num_queries=256, best_depth=1)
    router = quick_train(algo, tables, tmp_path / "run")
    held_out = Tables.synthetic(num_queries=32, best_depth=1, seed=7)
    result = evaluate_router(router, ENV_ID, held_out)
    # random scores 0 and the per-query oracle 1; measured (seeded): PPO 0.71, A2C 0.55, DQN 0.44
    floor = {"ppo": 0.65, "a2c": 0.5, "dqn": 0.4}[algo]
    assert result.normalized_score > floor, result.normalized_score
    assert result.depth_usage[1] == result.depth_usage.max()
    router.save(tmp_path / "router")
    loaded = load_router(tmp_path / "router", allow_pickle=True)
    assert isinstance(loaded, sb3.SB3Router) and loaded.algo == algo
    obs = observations(tables)
    np.testing.assert_array_equal(loaded.act(obs), router.act(obs))
    np.testing.assert_array_equal(loaded.normalise(obs), router.normalise(obs))


def test_same_seed_same_policy_other_seed_differs(tables, tmp_path):
    def weights(seed: int, name: str) -> list[torch.Tensor]:
        router = quick_train("ppo", tables, tmp_path / name, seed=seed, steps=256)
        return list(router.model.policy.state_dict().values())

    first, again, other = weights(3, "a"), weights(3, "b"), weights(4, "c")
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(first, other, strict=True))


def test_tensorboard_and_the_dev_curve_at_its_budgets(tables, tmp_path):
    dev = Tables.synthetic(num_queries=8, best_depth=1, seed=1)
    curve = DevCurve(ENV_ID, dev, total_steps=256, points=4)
    router = quick_train("ppo", tables, tmp_path, steps=256, curve=curve)
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    # one point at the first step count at or past each budget of 64, 128, 192, 256 steps
    steps = [p["env_steps"] for p in curve.points]
    assert len(steps) == 4 and all(s >= b for s, b in zip(steps, (64, 128, 192, 256), strict=True))
    assert router.name == "sb3-ppo"


def test_native_vec_env_matches_sb3_contract(tables):
    env = sb3.make_vec_env(ENV_ID, tables, 4)
    env.seed(0)
    obs = env.reset()
    assert obs.shape == (4, *env.observation_space.shape)
    next_obs, rewards, dones, infos = env.step(np.ones(4, dtype=np.int64))
    # One-step episodes: every sub-env finished, reported its final observation and returned
    # the next episode's first one in the same step.
    assert dones.all() and rewards.dtype == np.float32 and next_obs.shape == obs.shape
    np.testing.assert_array_equal(np.stack([i["terminal_observation"] for i in infos]), obs)
    assert all("episode" in info for info in infos)
    env.seed(0)
    np.testing.assert_array_equal(env.reset(), obs)
    env.close()


def test_hyperparams_have_an_entry_or_default_per_env():
    ppo = load_hyperparams("ppo", ENV_ID)
    assert ppo["n_envs"] >= 1 and ppo["policy"] == "MlpPolicy"
    assert load_hyperparams("dqn", "MAW/NotAnEnv-v2")["policy"] == "MlpPolicy"
    with pytest.raises(FileNotFoundError, match="sac"):
        load_hyperparams("sac", ENV_ID)


def test_dqn_refuses_a_non_discrete_action_space():
    space = gym.spaces.MultiDiscrete([4, 4])
    with pytest.raises(ValueError, match="dqn needs a Discrete action space"):
        sb3.check_action_space("dqn", "MAW/PerHeadDepth-v3", space)
    sb3.check_action_space("ppo", "MAW/PerHeadDepth-v3", space)
