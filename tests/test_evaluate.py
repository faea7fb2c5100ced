"""Evaluation scores a router with the env's own candidate scoring, for every action kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maw_gym.tables import Tables
from maw_gym_agents.evaluate import candidate_qrels, evaluate_router
from maw_gym_agents.rollouts import make_vector_env, run_episodes
from maw_gym_leaderboard.policies import Context
from maw_gym_leaderboard.score import score_router

N, D, H = 12, 4, 2


class PlannedRouter:
    """Plays ``plans[:, t]`` at decision t (queries are pinned in order 0..N-1)."""

    name = "planned"

    def __init__(self, plans: np.ndarray) -> None:
        self.plans, self.step = plans, 0

    def act(self, observations: np.ndarray) -> np.ndarray:
        actions = self.plans[:, self.step % self.plans.shape[1]]
        self.step += 1
        return actions

    def save(self, directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path) -> PlannedRouter:
        raise NotImplementedError


def mixture_plans(rng: np.random.Generator) -> np.ndarray:
    """All-zero, one-hot, uniform and random mixtures, a quarter of the queries each."""
    weights = rng.random((N, D)).astype(np.float32)
    weights[0::4] = 0.0
    weights[1::4] = np.eye(D, dtype=np.float32)[rng.integers(D, size=len(weights[1::4]))]
    weights[2::4] = 1.0 / D
    return weights[:, None]  # (N, T=1, D)


def plans_for(env_id: str, rng: np.random.Generator) -> np.ndarray:
    if env_id == "MAW/SoftDepthMixture-v3":
        return mixture_plans(rng)
    if env_id == "MAW/PerHeadDepth-v3":
        return rng.integers(D, size=(N, 1, H))
    if env_id == "MAW/LayerwiseDepth-v3":
        return rng.integers(D, size=(N, 2))
    return rng.integers(D, size=(N, 1))


@pytest.mark.parametrize(
    "env_id",
    [
        "MAW/DepthSelection-v3",
        "MAW/PerHeadDepth-v3",
        "MAW/SoftDepthMixture-v3",
        "MAW/LayerwiseDepth-v3",
    ],
)
def test_leaderboard_ndcg_equals_the_env_alignment(env_id: str, tmp_path: Path) -> None:
    """The leaderboard's NDCG@10 (beir/pytrec_eval over the routed rerank) of each query is
    the alignment the env paid for the same actions."""
    tables = Tables.synthetic(num_queries=N, depth=D, heads=H, layers=True, seed=3)
    plans = plans_for(env_id, np.random.default_rng(0))
    envs = make_vector_env(env_id, N, tables)
    played = run_episodes(envs, np.arange(N), lambda obs, t: plans[:, t])
    alignment = played.final_info["alignment"]
    assert alignment.std() > 0  # the queries differ, so a shifted ranking would show

    qrels = candidate_qrels(tables)
    ctx = Context(env_id, tables, tables, tables, qrels, 0, tmp_path, {})
    scored = score_router(ctx, PlannedRouter(plans), "planned", 0, env_id, tmp_path / "run")
    np.testing.assert_allclose(scored["ndcg_per_query"], alignment, atol=1e-6)


def test_an_all_zero_mixture_is_the_uniform_mixture() -> None:
    """The env reads an all-zero mixture as uniform weights; evaluation must score it so."""
    tables = Tables.synthetic(num_queries=N, depth=D, seed=3)
    env_id = "MAW/SoftDepthMixture-v3"
    zero = evaluate_router(PlannedRouter(np.zeros((N, 1, D), np.float32)), env_id, tables)
    uniform = evaluate_router(PlannedRouter(np.full((N, 1, D), 0.25, np.float32)), env_id, tables)
    np.testing.assert_allclose(zero.candidate_scores, uniform.candidate_scores, rtol=1e-6)
    np.testing.assert_allclose(zero.candidate_scores, tables.depth_scores().mean(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(zero.returns, uniform.returns)
