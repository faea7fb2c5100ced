"""How the leaderboard scores one (policy, seed): a result dict that ``result.json`` stores.

Routers come from the agents' public API only (``heuristic_routers``, ``uniform_mixture``,
``RandomRouter.reseeded``, ``train_agent``); every router is scored by
``maw_gym_agents.evaluate.evaluate_router`` on the test tables, so the retrieval metrics use the
env's own candidate scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from maw_gym_agents.base import Router
from maw_gym_leaderboard.policies import (
    CEILINGS,
    EXTRA,
    HEURISTICS,
    NDCG_ORACLE,
    RERANKERS,
    Context,
    policy_env,
)


class Scorer:
    """Scores policies of one leaderboard run; builds the heuristic routers once, on demand."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._heuristics: dict[str, Router] | None = None

    def score(self, policy: str, seed: int, run_dir: Path) -> dict[str, Any]:
        """Train (if it learns) and score ``policy`` with ``seed``; logs go to ``run_dir``."""
        if policy in RERANKERS or policy == NDCG_ORACLE:
            return score_reranker(self.ctx, policy)
        if policy in CEILINGS:
            return score_ceiling(self.ctx, policy, run_dir)
        if policy in HEURISTICS or policy in EXTRA:
            router = self.heuristic(policy, seed)
            env_id = policy_env(policy, self.ctx.env_id)
            return score_router(self.ctx, router, policy, seed, env_id, run_dir)
        return train_and_score(self.ctx, policy, seed, run_dir)

    def heuristic(self, policy: str, seed: int) -> Router:
        """The training-free router ``policy``; ``random`` draws one stream per seed."""
        from maw_gym_agents.heuristics import RandomRouter, heuristic_routers, uniform_mixture

        if policy == "uniform-mixture":
            return uniform_mixture(self.ctx.test.depth)
        if self._heuristics is None:
            # both best fixed depths are chosen on dev, as every choice compared on test.
            self._heuristics = heuristic_routers(self.ctx.env_id, self.ctx.dev, self.ctx.test)
        router = self._heuristics[policy]
        return router.reseeded(seed) if isinstance(router, RandomRouter) else router


def score_reranker(ctx: Context, policy: str) -> dict[str, Any]:
    """A reranker that needs no router: its candidate scores come straight from the tables
    (for the NDCG oracle: each query's depth with the best NDCG@10 on the test judgments)."""
    if policy == NDCG_ORACLE:
        best = ctx.test.alignment.argmax(axis=1)  # (N,) alignment is each depth's NDCG@10
        scores = ctx.test.depth_scores()[np.arange(ctx.test.num_queries), best]
    else:
        scores = getattr(ctx.test, RERANKERS[policy])
    return {
        "policy": policy,
        "seed": 0,
        **retrieval(ctx, scores),
        "train_seconds": 0.0,
        "env_steps": 0,
    }


def score_ceiling(ctx: Context, policy: str, run_dir: Path) -> dict[str, Any]:
    """A full-information reference row (``maw_gym_agents.ceiling``): fitted on router-train
    with every depth's value, chosen on dev, saved beside its submission. Its env steps are
    the N·D plays of router-train it learns from."""
    import time

    from maw_gym_agents.ceiling import fit_ceiling

    started = time.perf_counter()
    router, choice = fit_ceiling(policy, ctx.env_id, ctx.train, ctx.dev)
    seconds = time.perf_counter() - started
    router.save(run_dir)
    result = score_router(ctx, router, policy, 0, ctx.env_id, run_dir)
    result["train_seconds"] = seconds
    result["env_steps"] = ctx.train.num_queries * ctx.train.depth
    result["ceiling"] = choice
    return result


def train_and_score(ctx: Context, policy: str, seed: int, run_dir: Path) -> dict[str, Any]:
    from maw_gym_agents.train import read_curve, train_agent

    router, record = train_agent(policy, ctx.env_id, ctx.train, ctx.dev, seed, ctx.steps, run_dir)
    result = score_router(ctx, router, policy, seed, ctx.env_id, run_dir)
    result["train_seconds"] = float(record["train_seconds"])
    result["env_steps"] = int(record["steps"])
    # what dev selection kept: the best checkpoint, or the best constant (maw_gym_agents.curve)
    selected = [p for p in read_curve(run_dir) if p.get("selected")]
    if selected:
        result["dev_choice"] = selected[0]
    return result


def score_router(
    ctx: Context, router: Router, policy: str, seed: int, env_id: str, run_dir: Path
) -> dict[str, Any]:
    """Play the test split with ``router``; returns are normalised by the leaderboard's env.

    Its per-query actions are recorded in ``run_dir`` (:mod:`maw_gym_leaderboard.submissions`)
    so that ``maw-gym validate`` can replay them.
    """
    from maw_gym_agents.evaluate import bounds, evaluate_router
    from maw_gym_leaderboard.submissions import write_submission

    result = evaluate_router(router, env_id, ctx.test)
    write_submission(run_dir, policy, seed, env_id, ctx.test, result.actions, result.returns)
    limits = bounds(ctx.env_id, ctx.test)  # the leaderboard's env, whatever ``env_id`` is
    oracle = limits.oracle if limits.oracle is not None else result.oracle
    return {
        "policy": policy,
        "seed": seed,
        "returns": result.returns.tolist(),
        "random_mean": limits.random_mean,
        "oracle_mean": float(oracle.mean()),
        "random_returns": limits.random.tolist(),
        "oracle_returns": oracle.tolist(),
        "depth_usage": result.depth_usage.tolist(),
        "depth_usage_entropy": result.depth_usage_entropy,
        "latency_ms_per_query": result.latency_ms_per_query,
        "train_seconds": 0.0,
        "env_steps": 0,
        **retrieval(ctx, result.candidate_scores),
    }


def retrieval(ctx: Context, scores: np.ndarray) -> dict[str, Any]:
    """The result fields of the rerank given by candidate ``scores`` (N, C) on the test split
    (``maw_gym_agents.evaluate.retrieval_metrics``)."""
    from maw_gym_agents.evaluate import retrieval_metrics

    metrics = retrieval_metrics(ctx.test, scores, ctx.qrels)
    return {
        "ndcg_per_query": metrics["ndcg_per_query"],
        "ndcg@10": metrics["NDCG@10"],
        "mrr@10": metrics["MRR@10"],
        "hit@1": metrics["Hit@1"],
    }
