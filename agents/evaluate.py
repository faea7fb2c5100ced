"""Score a router on a split: env return, normalised score, regret, and the routed rerank.

Every query of the tables is played once, deterministically, through the native vector env
with pinned query indices (one sub-env per query). The normalised score is
``(mean − random_mean) / (oracle_mean − random_mean)``: random is the *exact* expected return of
the uniform random policy (every joint action enumerated through the env) when the action space
is small enough, else a seeded Monte-Carlo estimate (``random_exact`` says which); the oracle is
each query's best return over every joint action where they can be enumerated, else the env's
per-query ``best_depth_reward``.

``maw-gym evaluate --router DIR --split test`` also reports the retrieval metrics (NDCG@10,
MRR@10, Hit@1) of the BM25 → MAW rerank with each query's candidates scored under the router's
actions, through ``maw_gym.retrieval.evaluate`` against the split's full qrels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maw_gym.envs.base import Variant
from maw_gym.tables import Tables
from maw_gym_agents.base import Router
from maw_gym_agents.rollouts import enumerate_returns, make_vector_env, run_episodes, tables_key
from maw_gym_agents.spaces import ActionSpec

TRAINING_FILE = "training.json"
"""Written by ``maw-gym train`` beside the router: env id, dataset and preset it was trained on."""
MONTE_CARLO_PASSES = 16


@dataclass(frozen=True)
class Bounds:
    """The normalised score's zero and one on one split."""

    random_mean: float
    """Expected return of the uniform random policy."""
    random_exact: bool
    """True if ``random_mean`` is exact (every joint action enumerated), False if Monte Carlo."""
    oracle: np.ndarray | None
    """(N,) the best return of each query over every joint action, or None when the action
    space is too large to enumerate (then the env's ``best_depth_reward`` is used)."""
    random: np.ndarray
    """(N,) each query's expected return under the uniform random policy (exact or Monte
    Carlo, as ``random_exact`` says); ``random_mean`` is its mean. The leaderboard's paired
    CI of the normalised score resamples it with the policy's returns."""


_BOUNDS: dict[str, Bounds] = {}


def bounds(env_id: str, tables: Tables, seed: int = 0) -> Bounds:
    """Random and oracle returns of ``tables`` under ``env_id``, cached per tables content.

    The oracle enumerates every joint action where it can, so that on ``PerHeadDepth`` (whose
    env ``best_depth_reward`` is the best *shared* depth) the per-query oracle is the true maximum
    and no router scores above 1.
    """
    key = tables_key(env_id, tables)
    if key in _BOUNDS:
        return _BOUNDS[key]
    try:
        joint = enumerate_returns(env_id, tables)
    except ValueError:
        envs = make_vector_env(env_id, tables.num_queries, tables)
        spec, rng = ActionSpec.from_space(envs.single_action_space), np.random.default_rng(seed)
        total = np.zeros(tables.num_queries)
        for _ in range(MONTE_CARLO_PASSES):
            episodes = run_episodes(
                envs,
                np.arange(tables.num_queries),
                lambda obs, t: spec.random_actions(rng, len(obs)),
            )
            total += episodes.returns
        envs.close()
        random = total / MONTE_CARLO_PASSES
        result = Bounds(float(random.mean()), False, None, random)
    else:
        random = joint.returns.mean(axis=1)
        result = Bounds(float(random.mean()), True, joint.returns.max(axis=1), random)
    _BOUNDS[key] = result
    return result


def depth_usage(spec: ActionSpec, actions: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(D,) share of each depth among the decisions (mean weights on a mixture space)."""
    if spec.kind == "simplex":
        return actions[valid].mean(axis=0)
    counts = np.bincount(actions[valid].ravel(), minlength=spec.choices).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


@dataclass(frozen=True)
class Evaluation:
    """A router played once on every query of one split's tables."""

    router: str
    env_id: str
    returns: np.ndarray
    """(N,) each query's return."""
    oracle: np.ndarray
    """(N,) each query's best return (enumerated, else the env's ``best_depth_reward``)."""
    random_mean: float
    """Expected return of the uniform random policy (the normalised score's zero)."""
    random_exact: bool
    """True if ``random_mean`` is exact (every joint action enumerated), False if Monte Carlo."""
    oracle_enumerated: bool
    """True if ``oracle`` comes from enumerating every joint action."""
    actions: np.ndarray
    """(N, T, ...) the action of every decision of every query."""
    depth_usage: np.ndarray
    """(D,) share of each depth among the decisions (mean weights on a mixture space)."""
    candidate_scores: np.ndarray
    """(N, C) each query's candidate scores under its actions (the env's own scoring)."""
    latency_ms_per_query: float
    """Wall time of ``router.act`` per query."""

    @property
    def num_queries(self) -> int:
        return len(self.returns)

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())

    @property
    def oracle_mean(self) -> float:
        return float(self.oracle.mean())

    @property
    def normalized_score(self) -> float:
        """(mean − random) / (oracle − random): 0 is random, 1 the per-query oracle."""
        span = self.oracle_mean - self.random_mean
        return (self.mean_return - self.random_mean) / span if span > 0 else 0.0

    @property
    def regrets(self) -> np.ndarray:
        return self.oracle - self.returns

    @property
    def regret(self) -> float:
        return float(self.regrets.mean())

    @property
    def depth_usage_entropy(self) -> float:
        """Entropy of :attr:`depth_usage`, normalised to [0, 1]."""
        used = self.depth_usage[self.depth_usage > 0]
        return float(-(used * np.log(used)).sum() / np.log(len(self.depth_usage)))

    def summary(self) -> dict[str, Any]:
        """The scalar figures, as ``maw-gym evaluate`` prints them."""
        return {
            "router": self.router,
            "env_id": self.env_id,
            "num_queries": self.num_queries,
            "mean_return": self.mean_return,
            "normalized_score": self.normalized_score,
            "regret": self.regret,
            "random_mean": self.random_mean,
            "oracle_mean": self.oracle_mean,
            "depth_usage_entropy": self.depth_usage_entropy,
            "latency_ms_per_query": self.latency_ms_per_query,
        }


def evaluate_router(router: Router, env_id: str, tables: Tables) -> Evaluation:
    """Play every query of ``tables`` once with ``router``; see the module docstring."""
    n = tables.num_queries
    envs = make_vector_env(env_id, n, tables)
    spec = ActionSpec.from_space(envs.single_action_space)
    seconds = 0.0

    def choose(observations: np.ndarray, step: int) -> np.ndarray:
        nonlocal seconds
        started = time.perf_counter()
        actions = router.act(observations)
        seconds += time.perf_counter() - started
        return actions

    episodes = run_episodes(envs, np.arange(n), choose)
    envs.close()
    limits = bounds(env_id, tables)
    if limits.oracle is not None:
        oracle = limits.oracle
    elif "best_depth_reward" in episodes.final_info:
        oracle = episodes.final_info["best_depth_reward"].astype(np.float64)
    else:
        raise KeyError(
            f"{env_id}: too many joint actions to enumerate and no 'best_depth_reward' in "
            "the env's final info"
        )
    actions = np.stack(episodes.actions, axis=1)  # (N, T, ...)
    return Evaluation(
        router=router.name,
        env_id=env_id,
        returns=episodes.returns,
        oracle=oracle,
        random_mean=limits.random_mean,
        random_exact=limits.random_exact,
        oracle_enumerated=limits.oracle is not None,
        actions=actions,
        depth_usage=depth_usage(spec, np.stack(episodes.actions), episodes.valid),
        candidate_scores=final_candidate_scores(envs.variant, actions),
        latency_ms_per_query=1000.0 * seconds / n,
    )


def final_candidate_scores(variant: Variant, actions: np.ndarray) -> np.ndarray:
    """(N, C) candidate scores of query i after its decisions ``actions[i]`` (N, T, ...),
    through the variant's own :meth:`~maw_gym.envs.base.Variant.candidate_scores`."""
    n = len(actions)
    previous = actions[:, -2] if variant.horizon > 1 else np.zeros(n, dtype=np.int64)
    return variant.candidate_scores(np.arange(n), previous, actions[:, -1])


def retrieval_metrics(
    tables: Tables, scores: np.ndarray, qrels: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """beir's NDCG@10, MRR@10, Hit@1 (and more) of the rerank given by ``scores`` (N, C) of
    the tables' queries, and ``ndcg_per_query`` (N,) in the tables' order for paired
    statistics: the one way a policy's retrieval quality is scored."""
    from maw_gym.retrieval import evaluate, per_query_ndcg10

    wanted = {str(q) for q in tables.query_ids}
    judged = {qid: docs for qid, docs in qrels.items() if qid in wanted}
    results = tables.results(scores)
    per_query = per_query_ndcg10(judged, results)
    return {
        **evaluate(judged, results),
        "ndcg_per_query": [per_query.get(str(q), 0.0) for q in tables.query_ids],
    }


def candidate_qrels(tables: Tables) -> dict[str, dict[str, int]]:
    """Qrels restricted to the judged candidates of ``tables`` (relevant documents outside the
    candidates are unknown here, so metrics against these are optimistic)."""
    return {
        str(qid): {
            str(doc): int(grade)
            for doc, grade, real in zip(docs, grades, mask, strict=True)
            if real and grade > 0
        }
        for qid, docs, grades, mask in zip(
            tables.query_ids,
            tables.candidate_ids,
            tables.relevance,
            tables.candidate_mask,
            strict=True,
        )
    }


def observation_source(tables: Tables) -> dict[str, Any]:
    """What a router's observations are a function of (recorded in ``training.json``): the
    encoder that computed them, the data, and their shape."""
    return {
        "encoder_hash": tables.meta.get("encoder_hash"),
        "dataset": tables.meta.get("dataset"),
        "split": tables.meta.get("split"),
        "split_fingerprint": tables.meta.get("fingerprint"),
        "observation_shape": list(tables.observation.shape[1:]),
    }


def check_trained_on(trained: dict[str, Any] | None, tables: Tables, where: Path) -> list[str]:
    """Refuse scoring a router on observations it was not trained for; return warnings for
    what is scored but worth knowing.

    Another observation shape or another encoder is refused: the numbers would be a tensor-size
    error, or silently another encoder's observations (issue 10). The same encoder on another
    dataset is scored with a warning (a transfer test), and so is the router's own training
    split (optimistic). ``trained`` is ``training.json``'s record (None for an older router).
    """
    if not trained:
        return []
    now = observation_source(tables)
    for key, what in (("observation_shape", "observations of shape"), ("encoder_hash", "encoder")):
        if trained.get(key) != now[key]:
            raise ValueError(
                f"{where}: the router was trained on {what} {trained.get(key)}, these tables "
                f"have {now[key]}; evaluate with the tables (or --encoder) it was trained with"
            )
    warnings = []
    if trained.get("dataset") != now["dataset"]:
        warnings.append(
            f"router trained on dataset {trained.get('dataset')!r}, scored on "
            f"{now['dataset']!r} (same encoder)"
        )
    if trained.get("split_fingerprint") == now["split_fingerprint"]:
        warnings.append(
            f"scored on the queries it was trained on (split {now['split']!r}): optimistic"
        )
    return warnings
