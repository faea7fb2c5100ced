"""The MAW environments: API checkers (Gymnasium, SB3, RLlib), hand-computed rewards, oracle,
determinism, pickling, invalid actions, and the native vector env's parity with the single env.

Everything runs on small synthetic tables (``Tables.synthetic``) or a hand-built one, so the
file takes seconds; the real tables are exercised by the pipeline's own tests.
"""

from __future__ import annotations

import doctest
import importlib
import math
import pickle
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import maw_gym
from maw_gym.envs.base import resolve_reward_weights
from maw_gym.envs.vector import MAWVectorEnv
from maw_gym.tables import Tables

IDS = [
    "MAW/DepthSelection-v3",
    "MAW/DepthSelectionRetrieval-v3",
    "MAW/SoftDepthMixture-v3",
    "MAW/PerHeadDepth-v3",
    "MAW/LayerwiseDepth-v3",
]
ENV_MODULES = ["depth_selection", "soft_mixture", "per_head", "layerwise"]


@pytest.fixture(scope="module")
def tables() -> Tables:
    return Tables.synthetic(num_queries=12, depth=3, heads=2, pool=2, candidates=6, layers=True)


def sample_actions(space: gym.Space, count: int, seed: int) -> list:
    space.seed(seed)
    return [space.sample() for _ in range(count)]


def bad_actions(env_id: str, depth: int, heads: int) -> list:
    """Out of range, wrong shape, wrong dtype, NaN: each must raise ValueError."""
    if "SoftDepthMixture" in env_id:
        return [
            np.full(depth, np.nan, np.float32),
            np.array([-0.1] + [0.5] * (depth - 1), np.float32),
            np.array([1.5] + [0.5] * (depth - 1), np.float32),
            np.full(depth + 1, 0.5, np.float32),
            np.array([np.inf] * depth, np.float32),
        ]
    if "PerHeadDepth" in env_id:
        return [
            np.full(heads, depth),
            np.full(heads, -1),
            np.zeros(heads + 1, int),
            np.zeros(heads, np.float32),
        ]
    return [depth, -1, np.array([0, 1]), 1.0, np.nan, True]


def test_every_id_is_registered_and_makes_native_vector_envs(tables: Tables) -> None:
    assert set(IDS) <= set(gym.registry)
    for env_id in IDS:
        envs = gym.make_vec(
            env_id, num_envs=3, vectorization_mode="vector_entry_point", tables=tables
        )
        assert isinstance(envs, MAWVectorEnv)
        assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
        observations, _ = envs.reset(seed=0)
        assert observations in envs.observation_space
        observations, rewards, *_ = envs.step(envs.action_space.sample())
        assert observations in envs.observation_space and rewards.shape == (3,)


def test_registration_is_idempotent_and_maw_gym_import_is_light() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(maw_gym)  # registering twice must not raise or warn
    code = (
        "import sys, gymnasium as gym\n"
        "from maw_gym.tables import Tables\n"
        "env = gym.make('maw_gym:MAW/DepthSelection-v3', tables=Tables.synthetic())\n"
        "env.reset(seed=0)\n"
        "assert 'torch' not in sys.modules, 'import maw_gym pulled torch'\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)


@pytest.mark.parametrize("obs_mode", ["flat", "structured"])
@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_env_checker(env_id: str, obs_mode: str, tables: Tables) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gymnasium_check_env(gym.make(env_id, tables=tables, obs_mode=obs_mode).unwrapped)


@pytest.mark.parametrize("env_id", IDS)
def test_stable_baselines3_env_checker(env_id: str, tables: Tables) -> None:
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Documented choice: mixture weights are a Box(0, 1), not SB3's preferred [-1, 1].
        warnings.filterwarnings("ignore", message="We recommend you to use a symmetric")
        check_env(gym.make(env_id, tables=tables), warn=True)


def test_rllib_env_runner_samples_every_variant(tables: Tables) -> None:
    """RLlib 2.60 has no single-agent env pre-check (only the multi-agent one), so run the env
    through RLlib's own SingleAgentEnvRunner, which is what checks it in training."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    for env_id in IDS:
        config = (
            PPOConfig()
            .environment(f"maw_gym:{env_id}", env_config={"tables": tables})
            .env_runners(num_envs_per_env_runner=2)
        )
        runner = SingleAgentEnvRunner(config=config)
        try:
            episodes = runner.sample(num_timesteps=8, random_actions=False)
        finally:
            runner.stop()
        assert sum(len(episode) for episode in episodes) >= 8
        finished = [episode for episode in episodes if episode.is_done]
        assert finished and all(0 <= episode.get_return() <= 1 for episode in finished)


def rollout(env: gym.Env, seed: int, episodes: int = 6) -> list:
    """(observation, reward, info) triples of a few episodes with seeded random actions."""
    env.action_space.seed(seed)
    trace = []
    observation, info = env.reset(seed=seed)
    for _ in range(episodes):
        terminated = False
        while not terminated:
            observation, reward, terminated, _, info = env.step(env.action_space.sample())
            trace.append((np.asarray(observation).tolist(), reward, info["query_index"]))
        observation, info = env.reset()
    return trace


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_rollout_other_seed_differs(env_id: str, tables: Tables) -> None:
    first = rollout(gym.make(env_id, tables=tables), seed=3)
    assert first == rollout(gym.make(env_id, tables=tables), seed=3)
    assert first != rollout(gym.make(env_id, tables=tables), seed=4)


@pytest.mark.parametrize("env_id", IDS)
def test_pickle_round_trip_continues_identically(env_id: str, tables: Tables) -> None:
    env = gym.make(env_id, tables=tables)
    env.reset(seed=5)
    clone = pickle.loads(pickle.dumps(env))
    for action in sample_actions(env.action_space, 4, seed=1):
        original, copied = env.step(action), clone.step(action)
        np.testing.assert_equal(original[:4], copied[:4])
        if original[2]:
            np.testing.assert_equal(env.reset(), clone.reset())
    vector = gym.make_vec(
        env_id, num_envs=2, vectorization_mode="vector_entry_point", tables=tables
    )
    vector.reset(seed=0)
    vector_clone = pickle.loads(pickle.dumps(vector))
    actions = vector.action_space.sample()
    np.testing.assert_equal(vector.step(actions)[:4], vector_clone.step(actions)[:4])


@pytest.mark.parametrize("env_id", IDS)
def test_invalid_actions_raise_and_leave_the_env_usable(env_id: str, tables: Tables) -> None:
    env = gym.make(env_id, tables=tables)
    reference = gym.make(env_id, tables=tables)
    options = {"query_index": 4}
    env.reset(seed=0, options=options)
    reference.reset(seed=0, options=options)
    for action in bad_actions(env_id, tables.depth, tables.heads):
        with pytest.raises(ValueError, match="expected an element of"):
            env.step(action)
    good = sample_actions(env.action_space, 1, seed=0)[0]
    np.testing.assert_equal(env.step(good), reference.step(good))

    vectors = [
        gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point", tables=tables)
        for _ in range(2)
    ]
    for vector in vectors:
        vector.reset(seed=0, options=options)
    good_batch = np.stack([np.asarray(good)] * 3)
    out_of_range = good_batch.copy()
    out_of_range[2] = 2 if out_of_range.dtype.kind == "f" else tables.depth
    with_nan = good_batch.astype(np.float64)
    with_nan[2] = np.nan
    for batch in (good_batch[:2], out_of_range, with_nan):
        with pytest.raises(ValueError, match="expected an element of"):
            vectors[0].step(batch)
    np.testing.assert_equal(vectors[0].step(good_batch)[:4], vectors[1].step(good_batch)[:4])


def test_bad_reset_options_and_arguments_are_clear_errors(tables: Tables) -> None:
    env = gym.make("MAW/DepthSelection-v3", tables=tables)
    with pytest.raises(ValueError, match="query_index"):
        env.reset(options={"query_index": tables.num_queries})
    with pytest.raises(ValueError, match="unknown"):
        env.reset(options={"query": 1})
    env.reset(seed=0, options={"query_index": 2})  # still usable
    with pytest.raises(ValueError, match="has_layers"):
        gym.make("MAW/LayerwiseDepth-v3", tables=Tables.synthetic())
    with pytest.raises(ValueError, match="depth=5"):
        gym.make("MAW/DepthSelection-v3", tables=tables, depth=5)
    with pytest.raises(ValueError, match="obs_mode"):
        gym.make("MAW/DepthSelection-v3", tables=tables, obs_mode="image")
    small = gym.make("MAW/DepthSelection-v3", tables=tables, max_queries=5)
    assert small.unwrapped.tables.num_queries == 5


def test_tables_default_to_get_tables_and_observations_are_checked(monkeypatch) -> None:
    import maw_gym.build as builder

    calls = []

    def fake_get_tables(dataset, split, preset, encoder):
        calls.append((dataset, split, preset, encoder))
        return Tables.synthetic(num_queries=9)

    monkeypatch.setattr(builder, "ensure_tables", fake_get_tables)
    env = gym.make("MAW/DepthSelection-v3", split="dev", max_queries=4, encoder="enc")
    assert calls == [("nave-kjv", "dev", "quick", "enc")]  # the official benchmark by default
    assert env.unwrapped.tables.num_queries == 4

    rounding = Tables.synthetic()
    rounding.observation[0, 0, 0, 0, 0] = 1 + 1e-7  # float rounding of an average: clipped
    observation, _ = gym.make("MAW/DepthSelection-v3", tables=rounding).reset(
        options={"query_index": 0}
    )
    assert observation.max() <= 1.0
    rounding.observation[0, 0, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"Tables.observation lies in .*expected \[0, 1\]"):
        gym.make("MAW/DepthSelection-v3", tables=rounding)


def test_reward_weights_presets_normalisation_and_validation() -> None:
    np.testing.assert_allclose(resolve_reward_weights("default"), [0.3, 0.3, 0.4])
    np.testing.assert_allclose(resolve_reward_weights("retrieval"), [0, 0, 1])
    np.testing.assert_allclose(resolve_reward_weights((3, 3, 4)), [0.3, 0.3, 0.4])
    np.testing.assert_allclose(
        resolve_reward_weights({"alignment": 2, "entropy": 2}), [0.5, 0, 0.5]
    )
    for bad in ["best", (1, 2), (-1, 1, 1), (0, 0, 0), (math.nan, 1, 1), {"relevance": 1}]:
        with pytest.raises(ValueError, match="reward_weights"):
            resolve_reward_weights(bad)


def tiny_tables() -> Tables:
    """One query, D=2 depths, H=2 heads, P=1, C=3 candidates; only candidate 0 is relevant.

    Depth 0's scores [3, 1, 0] rank it first (NDCG 1); depth 1's [0, 0, 3] rank it second
    (NDCG 1/log2(3)).
    """
    score_parts = np.zeros((1, 2, 2, 3), np.float32)
    score_parts[0, 0, 0] = [3, 0, 0]
    score_parts[0, 0, 1] = [0, 1, 0]
    score_parts[0, 1, 0] = [0, 0, 2]
    score_parts[0, 1, 1] = [0, 0, 1]
    layer2_scores = np.zeros((1, 2, 2, 3), np.float32)
    layer2_scores[0, 1, 0] = [2, 0, 1]  # (d1=1, d2=0) ranks candidate 0 first
    layer2_scores[0, 0, 1] = [0, 1, 2]  # (d1=0, d2=1) ranks it last
    return Tables(
        query_ids=np.array(["q"]),
        candidate_ids=np.array([["a", "b", "c"]]),
        candidate_mask=np.ones((1, 3), bool),
        relevance=np.array([[1, 0, 0]], np.float32),
        ideal_gains=np.array([[1] + [0] * 9], np.float32),
        observation=np.array([0.1, 0.2, 0.3, 0.4], np.float32).reshape(1, 2, 2, 1, 1),
        entropy=np.array([[[0.2, 0.4], [0.8, 0.6]]], np.float32),
        focus=np.array([[[0.9, 0.7], [0.1, 0.3]]], np.float32),
        score_parts=score_parts,
        score_base=np.zeros((1, 3), np.float32),
        bm25_scores=np.zeros((1, 3), np.float32),
        nonmaw_scores=np.zeros((1, 3), np.float32),
        joint_router_logits=np.zeros((1, 2), np.float32),
        layer2_observation=np.full((1, 2, 2, 2, 1, 1), 0.5, np.float32),
        layer2_entropy=np.full((1, 2, 2, 2), 0.5, np.float32),
        layer2_focus=np.array([[[[0.1, 0.3], [0.0, 0.0]], [[1.0, 0.8], [0.0, 0.0]]]], np.float32),
        layer2_scores=layer2_scores,
    )


def final_step(env_id: str, action, first_action=None) -> tuple[float, dict]:
    env = gym.make(env_id, tables=tiny_tables())
    env.reset(seed=0)
    if first_action is not None:
        env.step(first_action)
    _, reward, terminated, _, info = env.step(action)
    assert terminated
    return reward, info


def test_reward_components_by_hand() -> None:
    second = 1 / math.log2(3)  # NDCG@10 with the one relevant candidate at rank 2
    reward, info = final_step("MAW/DepthSelection-v3", 0)
    assert (info["entropy"], info["focus"], info["alignment"]) == pytest.approx((0.3, 0.8, 1))
    assert reward == pytest.approx(0.3 * 0.3 + 0.3 * 0.8 + 0.4 * 1)
    reward, info = final_step("MAW/DepthSelection-v3", 1)
    assert (info["entropy"], info["focus"], info["alignment"]) == pytest.approx((0.7, 0.2, second))
    assert reward == pytest.approx(0.3 * 0.7 + 0.3 * 0.2 + 0.4 * second)
    assert info["best_depth_reward"] == pytest.approx(0.73)
    assert info["regret"] == pytest.approx(0.73 - reward)
    reward, _ = final_step("MAW/DepthSelectionRetrieval-v3", 1)
    assert reward == pytest.approx(second)

    # Per head: heads (0, 1) use depths (0, 1): scores [3,0,0] + [0,0,1] rank candidate 0 first.
    reward, info = final_step("MAW/PerHeadDepth-v3", np.array([0, 1]))
    assert (info["entropy"], info["focus"], info["alignment"]) == pytest.approx((0.4, 0.6, 1))
    reward, info = final_step("MAW/PerHeadDepth-v3", np.array([1, 0]))  # [0,1,2]: rank 3
    assert (info["entropy"], info["focus"], info["alignment"]) == pytest.approx((0.6, 0.4, 0.5))
    assert reward == pytest.approx(0.3 * 0.6 + 0.3 * 0.4 + 0.4 * 0.5)

    # Mixture 1:3 -> w = (.25, .75): scores [.75, .25, 2.25] put candidate 0 second.
    reward, info = final_step("MAW/SoftDepthMixture-v3", np.array([0.25, 0.75], np.float32))
    assert (info["entropy"], info["focus"], info["alignment"]) == pytest.approx(
        (0.25 * 0.3 + 0.75 * 0.7, 0.25 * 0.8 + 0.75 * 0.2, second)
    )
    # All zeros -> uniform: scores [1.5, .5, 1.5], the tie kept in BM25 order (candidate 0 first).
    reward, info = final_step("MAW/SoftDepthMixture-v3", np.zeros(2, np.float32))
    assert (info["entropy"], info["focus"], info["alignment"]) == pytest.approx((0.5, 0.5, 1))
    assert reward == pytest.approx(0.3 * 0.5 + 0.3 * 0.5 + 0.4)

    # Layerwise: (d1=1, d2=0) ranks candidate 0 first; focus mean(1.0, 0.8).
    env = gym.make("MAW/LayerwiseDepth-v3", tables=tiny_tables())
    observation, _ = env.reset(seed=0)
    np.testing.assert_allclose(observation, [0.1, 0.2, 0.3, 0.4, 1, 0])
    observation, reward, terminated, _, _ = env.step(1)
    assert (reward, terminated) == (0.0, False)
    np.testing.assert_allclose(observation, [0.5, 0.5, 0.5, 0.5, 0, 1])
    reward, info = final_step("MAW/LayerwiseDepth-v3", 0, first_action=1)
    assert (info["entropy"], info["focus"], info["alignment"]) == pytest.approx((0.5, 0.9, 1))
    assert reward == pytest.approx(0.3 * 0.5 + 0.3 * 0.9 + 0.4) == info["best_depth_reward"]
    _, info = final_step("MAW/LayerwiseDepth-v3", 1, first_action=0)
    assert info["alignment"] == pytest.approx(1 / math.log2(4))


def all_final_rewards(env_id: str, tables: Tables, query: int, actions: list) -> list[float]:
    env = gym.make(env_id, tables=tables)
    rewards = []
    for action in actions:
        env.reset(options={"query_index": query})
        *steps, last = action if "Layerwise" in env_id else (action,)
        for step in steps:
            env.step(step)
        _, reward, _, _, info = env.step(last)
        rewards.append(reward)
    return rewards, info["best_depth_reward"]


def test_best_depth_reward_is_the_best_action(tables: Tables) -> None:
    depths = range(tables.depth)
    for query in range(tables.num_queries):
        rewards, oracle = all_final_rewards("MAW/DepthSelection-v3", tables, query, list(depths))
        assert oracle == max(rewards)
        pairs = [(d1, d2) for d1 in depths for d2 in depths]
        rewards, oracle = all_final_rewards("MAW/LayerwiseDepth-v3", tables, query, pairs)
        assert oracle == max(rewards)
        # Mixture and per-head: the reference is the best *hard* depth; at one-hot / shared
        # depths they reproduce DepthSelection exactly.
        one_hot = list(np.eye(tables.depth, dtype=np.float32))
        soft, soft_oracle = all_final_rewards("MAW/SoftDepthMixture-v3", tables, query, one_hot)
        shared = [np.full(tables.heads, d) for d in depths]
        per_head, head_oracle = all_final_rewards("MAW/PerHeadDepth-v3", tables, query, shared)
        hard, _ = all_final_rewards("MAW/DepthSelection-v3", tables, query, list(depths))
        np.testing.assert_allclose(soft, hard, rtol=1e-12)
        np.testing.assert_allclose(per_head, hard, rtol=1e-6)
        assert soft_oracle == head_oracle == max(hard)


def assert_rows_equal(batch, row: int, single) -> None:
    if isinstance(single, dict):
        for key, value in single.items():
            assert_rows_equal(batch[key], row, value)
    else:
        np.testing.assert_equal(np.asarray(batch[row]), np.asarray(single))


@pytest.mark.parametrize("obs_mode", ["flat", "structured"])
@pytest.mark.parametrize("env_id", IDS)
def test_vector_env_matches_single_envs_step_for_step(
    env_id: str, obs_mode: str, tables: Tables
) -> None:
    num_envs = 4
    queries = np.array([0, 5, 5, 11])
    vector = gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        tables=tables,
        obs_mode=obs_mode,
    )
    singles = [gym.make(env_id, tables=tables, obs_mode=obs_mode) for _ in range(num_envs)]
    observations, info = vector.reset(seed=0, options={"query_index": queries})
    for i, env in enumerate(singles):
        single_obs, single_info = env.reset(options={"query_index": int(queries[i])})
        assert_rows_equal(observations, i, single_obs)
        assert info["query_index"][i] == single_info["query_index"]
    for actions in sample_actions(vector.action_space, 6, seed=2):
        observations, rewards, terminated, truncated, info = vector.step(actions)
        assert not truncated.any()
        for i, env in enumerate(singles):
            single_obs, reward, single_terminated, _, single_info = env.step(actions[i])
            assert rewards[i] == reward and terminated[i] == single_terminated
            if single_terminated:
                assert_rows_equal(info["final_obs"], i, single_obs)
                assert info["_final_info"][i]
                for key, value in single_info.items():
                    assert_rows_equal(info["final_info"][key], i, value)
                # the vector env drew sub-env i's next query: start the single env on it
                drawn = int(info["query_index"][i])
                single_obs, single_info = env.reset(options={"query_index": drawn})
            assert_rows_equal(observations, i, single_obs)
            assert info["query_index"][i] == single_info["query_index"]


@pytest.mark.parametrize("env_id", IDS)
def test_one_sub_env_draws_the_same_queries_as_the_single_env(env_id: str, tables: Tables) -> None:
    """Unpinned: the vector env's autoresets draw like the single env's reset() calls."""
    env = gym.make(env_id, tables=tables)
    vector = gym.make_vec(
        env_id, num_envs=1, vectorization_mode="vector_entry_point", tables=tables
    )
    single_obs, single_info = env.reset(seed=9)
    observations, info = vector.reset(seed=9)
    for action in sample_actions(env.action_space, 10, seed=3):
        single_obs, reward, terminated, _, single_info = env.step(action)
        if terminated:
            single_obs, single_info = env.reset()
        observations, rewards, _, _, info = vector.step(np.asarray(action)[None])
        assert rewards[0] == reward and info["query_index"][0] == single_info["query_index"]
        assert_rows_equal(observations, 0, single_obs)


def test_info_layout_matches_sync_vector_env_same_step(tables: Tables) -> None:
    env_id = "MAW/LayerwiseDepth-v3"
    sync = SyncVectorEnv(
        [lambda: gym.make(env_id, tables=tables)] * 2, autoreset_mode=AutoresetMode.SAME_STEP
    )
    native = gym.make_vec(
        env_id, num_envs=2, vectorization_mode="vector_entry_point", tables=tables
    )
    for envs in (sync, native):
        envs.reset(seed=0, options={"query_index": 3})
    actions = np.array([1, 2])
    sync_step, native_step = sync.step(actions), native.step(actions)
    np.testing.assert_equal(sync_step[:4], native_step[:4])
    # The second step ends the episodes; the autoreset then draws from different generators.
    sync_step, native_step = sync.step(actions), native.step(actions)
    np.testing.assert_equal(sync_step[1:4], native_step[1:4])
    sync_info, native_info = sync_step[4], native_step[4]
    assert sorted(sync_info) == sorted(native_info)
    assert sorted(sync_info["final_info"]) == sorted(native_info["final_info"])
    for key, value in sync_info["final_info"].items():
        np.testing.assert_equal(value.tolist(), native_info["final_info"][key].tolist())


@pytest.mark.parametrize("module", ENV_MODULES)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"maw_gym.envs.{module}"))
    assert result.attempted > 0 and result.failed == 0


def test_relevant_mass_alignment_by_hand() -> None:
    """alignment="relevant_mass": softmax(scores) mass on candidate 0, the only relevant one."""

    def mass(scores: list[float]) -> float:
        weights = np.exp(scores)
        return float(weights[0] / weights.sum())

    cases = [
        ("MAW/DepthSelection-v3", 0, None, [3, 1, 0]),
        ("MAW/DepthSelection-v3", 1, None, [0, 0, 3]),
        ("MAW/PerHeadDepth-v3", np.array([0, 1]), None, [3, 0, 1]),
        ("MAW/SoftDepthMixture-v3", np.zeros(2, np.float32), None, [1.5, 0.5, 1.5]),
        ("MAW/LayerwiseDepth-v3", 0, 1, [2, 0, 1]),
    ]
    for env_id, action, first, scores in cases:
        env = gym.make(
            env_id, tables=tiny_tables(), reward_weights="retrieval", alignment="relevant_mass"
        )
        env.reset(seed=0)
        if first is not None:
            env.step(first)
        _, reward, _, _, info = env.step(action)
        assert info["alignment"] == pytest.approx(mass(scores), abs=1e-6), env_id
        assert reward == pytest.approx(info["alignment"])
    with pytest.raises(ValueError, match=r"alignment=.mrr..*relevant_mass"):
        gym.make("MAW/DepthSelection-v3", tables=tiny_tables(), alignment="mrr")
