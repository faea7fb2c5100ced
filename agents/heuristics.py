"""Baselines and bounds that need no training (or only a lookup on the split they score).

| router                | what it does                                                       |
|-----------------------|--------------------------------------------------------------------|
| ``random``            | a uniform random action (seeded)                                   |
| ``fixed-d``           | depth d for every query (every head, every layer; one-hot weights) |
| ``best-fixed``        | the fixed depth with the highest mean return on the given split    |
| ``best-fixed-ndcg``   | the fixed depth with the highest mean NDCG@10 on the given split   |
| ``hash``              | a fixed hash (sha256) of the query id to a depth: a negative control |
| ``uniform-mixture``   | weights 1/D on every depth (``SoftDepthMixture`` only)             |
| ``entropy-max``       | the depth whose pooled maps have the highest normalised entropy    |
| ``entropy-min``       | ... the lowest (the most focused depth)                            |
| ``attention-norm``    | the depth whose pooled maps have the largest Frobenius norm        |
| ``topk-norm``         | the k largest-norm depths averaged (hard spaces: the largest)      |
| ``joint-router``      | the router trained jointly with the encoder (``joint_router_logits``) |
| ``oracle``            | the per-query best joint action: the upper bound                   |

The score-based strategies are the seeds' training-free combinations, computed from the
observation alone: per (depth, head) pooled map ``m``, entropy ``−Σ m̂ log m̂ / log P²`` with
``m̂ = m / Σ m``, or norm ``‖m‖_F``. The seeds weight depths by a softmax over these scores;
on hard action spaces that becomes the argmax (of the head mean, or per head on
``PerHeadDepth``), on ``SoftDepthMixture`` the softmax itself.

Why a lookup for ``joint-router``, ``oracle`` and ``hash``: a router sees observations only, but
these need the query's identity (the encoder's stored logits, the query's best action). They are
built *for one split* by playing its queries through the env and remembering, for every
observation the env shows, the action to take (keyed by a hash of the observation's bytes), so
they still go through the ordinary ``act(observations)`` path. On a split they were not built
for they raise a clear error rather than guess.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maw_gym.tables import Tables
from maw_gym_agents.base import Router
from maw_gym_agents.rollouts import (
    MAX_JOINT_ACTIONS,
    enumerate_returns,
    env_layout,
    make_vector_env,
    run_episodes,
)
from maw_gym_agents.saving import read_router_json, write_router_json
from maw_gym_agents.spaces import ActionSpec, attention_maps

SCORE_STRATEGIES = ("entropy-max", "entropy-min", "attention-norm", "topk-norm")


class RandomRouter:
    """Uniform random actions from a seeded generator (the normalised score's zero)."""

    def __init__(self, spec: ActionSpec, seed: int = 0, name: str = "random"):
        self.name, self.spec, self.seed = name, spec, seed
        self.rng = np.random.default_rng(seed)

    def reseeded(self, seed: int) -> RandomRouter:
        """A fresh random stream with ``seed`` (one per leaderboard seed)."""
        return RandomRouter(self.spec, seed, self.name)

    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.spec.random_actions(self.rng, len(observations))

    def save(self, directory: Path) -> None:
        write_router_json(
            directory,
            type(self),
            {"name": self.name, "seed": self.seed, "action": asdict(self.spec)},
        )

    @classmethod
    def load(cls, directory: Path) -> RandomRouter:
        config = read_router_json(directory)
        return cls(ActionSpec(**config["action"]), config["seed"], config["name"])


def depth_actions(spec: ActionSpec, depths: np.ndarray) -> np.ndarray:
    """The action that routes query i to depth ``depths[i]`` (B,): that depth (``discrete``),
    on every head (``multi_discrete``), or its one-hot weights (``simplex``)."""
    depths = np.asarray(depths, dtype=np.int64)
    if spec.kind == "discrete":
        return depths
    if spec.kind == "multi_discrete":
        return np.repeat(depths[:, None], spec.slots, axis=1)
    return np.eye(spec.choices, dtype=np.float32)[depths]


class FixedDepthRouter:
    """Depth ``depth`` for every query; ``uniform=True``: weights 1/D (a mixture space only)."""

    def __init__(self, spec: ActionSpec, depth: int | None, name: str | None = None):
        if depth is None and spec.kind != "simplex":
            raise ValueError(f"a uniform mixture needs a SoftDepthMixture action space, not {spec}")
        if depth is not None and not 0 <= depth < spec.choices:
            raise ValueError(f"depth={depth} outside [0, {spec.choices})")
        self.spec, self.depth = spec, depth
        self.name = name or ("uniform-mixture" if depth is None else f"fixed-{depth}")

    def act(self, observations: np.ndarray) -> np.ndarray:
        b = len(observations)
        if self.depth is None:
            return np.full((b, self.spec.choices), 1.0 / self.spec.choices, dtype=np.float32)
        return depth_actions(self.spec, np.full(b, self.depth))

    def save(self, directory: Path) -> None:
        write_router_json(
            directory,
            type(self),
            {"name": self.name, "depth": self.depth, "action": asdict(self.spec)},
        )

    @classmethod
    def load(cls, directory: Path) -> FixedDepthRouter:
        config = read_router_json(directory)
        return cls(ActionSpec(**config["action"]), config["depth"], config["name"])


def depth_head_scores(
    observations: np.ndarray, shape: tuple[int, int, int], strategy: str
) -> np.ndarray:
    """(B, H, D) per-head depth scores of a score strategy from (B, D·H·P·P) observations."""
    pool = shape[2]
    maps = attention_maps(observations, shape).astype(np.float64)
    if strategy.startswith("entropy"):
        p = maps / np.maximum(maps.sum(-1, keepdims=True), 1e-12)
        entropy = -(p * np.log(np.maximum(p, 1e-12))).sum(-1) / np.log(pool * pool)
        scores = entropy if strategy == "entropy-max" else -entropy
    elif strategy in ("attention-norm", "topk-norm"):
        scores = np.sqrt((maps**2).sum(-1))
    else:
        raise ValueError(f"unknown score strategy {strategy!r}; expected one of {SCORE_STRATEGIES}")
    return scores.transpose(0, 2, 1)  # (B, H, D)


class ScoreRouter:
    """A training-free strategy from :data:`SCORE_STRATEGIES` (see the module docstring)."""

    def __init__(
        self, spec: ActionSpec, strategy: str, shape: tuple[int, int, int], top_k: int = 2
    ):
        if strategy not in SCORE_STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {SCORE_STRATEGIES}")
        self.spec, self.strategy, self.shape, self.top_k = spec, strategy, tuple(shape), top_k
        self.name = strategy

    def act(self, observations: np.ndarray) -> np.ndarray:
        scores = depth_head_scores(observations, self.shape, self.strategy)
        if self.strategy == "topk-norm" and self.spec.kind == "simplex":
            mean = scores.mean(axis=1)  # (B, D)
            top = np.argsort(-mean, axis=1, kind="stable")[:, : self.top_k]
            weights = np.zeros_like(mean, dtype=np.float32)
            np.put_along_axis(weights, top, 1.0 / self.top_k, axis=1)
            return weights
        return self.spec.from_depth_scores(scores)

    def save(self, directory: Path) -> None:
        write_router_json(
            directory,
            type(self),
            {
                "name": self.name,
                "strategy": self.strategy,
                "shape": list(self.shape),
                "top_k": self.top_k,
                "action": asdict(self.spec),
            },
        )

    @classmethod
    def load(cls, directory: Path) -> ScoreRouter:
        config = read_router_json(directory)
        return cls(
            ActionSpec(**config["action"]),
            config["strategy"],
            tuple(config["shape"]),
            config["top_k"],
        )


def observation_key(observation: np.ndarray) -> str:
    """A hash of one observation's float32 bytes: how lookup routers recognise a state."""
    data = np.ascontiguousarray(np.asarray(observation, dtype=np.float32))
    return hashlib.sha1(data.tobytes()).hexdigest()


class LookupRouter:
    """Acts from a table observation-hash → action, built for one split (module docstring)."""

    def __init__(self, name: str, spec: ActionSpec, table: dict[str, Any], split: str = ""):
        self.name, self.spec, self.table, self.split = name, spec, table, split

    def act(self, observations: np.ndarray) -> np.ndarray:
        actions = []
        for observation in np.asarray(observations):
            key = observation_key(observation)
            if key not in self.table:
                raise KeyError(
                    f"router {self.name!r} was built for split {self.split!r} and has no action "
                    "for this observation; build it on the tables you evaluate"
                )
            actions.append(self.table[key])
        dtype = np.float32 if self.spec.kind == "simplex" else np.int64
        return np.array(actions, dtype=dtype)

    def save(self, directory: Path) -> None:
        write_router_json(
            directory,
            type(self),
            {
                "name": self.name,
                "split": self.split,
                "action": asdict(self.spec),
                "table": self.table,
            },
        )

    @classmethod
    def load(cls, directory: Path) -> LookupRouter:
        config = read_router_json(directory)
        return cls(config["name"], ActionSpec(**config["action"]), config["table"], config["split"])


def build_lookup(name: str, env_id: str, tables: Tables, plans: np.ndarray) -> LookupRouter:
    """Play ``plans[i]`` (per step t: ``plans[i, t]``) on every query i through the env and
    remember each observation → action. Two queries with identical observations but different
    plans keep the first query's action: the env cannot tell them apart either."""
    envs = make_vector_env(env_id, tables.num_queries, tables)
    spec = ActionSpec.from_space(envs.single_action_space)
    episodes = run_episodes(envs, np.arange(tables.num_queries), lambda obs, t: plans[:, t])
    envs.close()
    table: dict[str, Any] = {}
    for observations, actions, valid in zip(
        episodes.observations, episodes.actions, episodes.valid, strict=True
    ):
        for observation, action in zip(observations[valid], actions[valid], strict=True):
            table.setdefault(observation_key(observation), np.asarray(action).tolist())
    return LookupRouter(name, spec, table, split=str(tables.meta.get("split", "")))


def joint_router(env_id: str, tables: Tables) -> LookupRouter:
    """The encoder's jointly trained router: argmax of its logits (every head/layer), or their
    softmax on a mixture space."""
    logits = tables.joint_router_logits  # (N, D)
    layout = env_layout(env_id, tables)
    action = layout.spec.from_depth_scores(logits[:, None, :])  # (N,), (N, H) or (N, D)
    plans = np.repeat(action[:, None], layout.horizon, axis=1)
    return build_lookup("joint-router", env_id, tables, plans)


def oracle_router(env_id: str, tables: Tables) -> LookupRouter:
    """The per-query best joint action, found exhaustively (:func:`enumerate_returns`).

    On ``SoftDepthMixture`` it is the best one-hot mixture (the best hard depth), a lower bound
    of the true mixture oracle, as is the env's ``best_depth_reward``; on ``PerHeadDepth`` with more
    than ``MAX_JOINT_ACTIONS`` head assignments, the best depth shared by every head.
    """
    spec = env_layout(env_id, tables).spec
    too_large = spec.kind == "multi_discrete" and spec.choices**spec.slots > MAX_JOINT_ACTIONS
    if spec.kind == "simplex" or too_large:
        joint = enumerate_returns("MAW/DepthSelection-v3", tables)
        best = joint.actions[joint.returns.argmax(axis=1), 0]
        if too_large:  # D**H head assignments: the best shared depth, the env's own oracle
            plans = np.repeat(best[:, None, None], spec.slots, axis=2)
        else:
            plans = np.eye(spec.choices, dtype=np.float32)[best][:, None, :]
    else:
        joint = enumerate_returns(env_id, tables)
        plans = joint.actions[joint.returns.argmax(axis=1)]  # (N, T, ...)
    return build_lookup("oracle", env_id, tables, plans)


#: What a fixed depth can be chosen by: the env return, or the routed rerank's NDCG@10.
FIXED_METRICS = ("return", "ndcg")


@dataclass(frozen=True)
class FixedDepthValues:
    """Every query's value under every fixed depth (one split), through the env."""

    returns: np.ndarray
    """(N, D) the env return of query i with depth d on every decision."""
    ndcg: np.ndarray
    """(N, D) NDCG@10 of query i's rerank under those actions (the env's candidate scores,
    judged against the tables' ideal gains)."""

    def of(self, metric: str) -> np.ndarray:
        """The (N, D) values of ``metric``, one of :data:`FIXED_METRICS`."""
        if metric not in FIXED_METRICS:
            raise ValueError(f"metric={metric!r}; expected one of {FIXED_METRICS}")
        return self.returns if metric == "return" else self.ndcg


_FIXED_VALUES: dict[str, FixedDepthValues] = {}


def fixed_depth_values(env_id: str, tables: Tables) -> FixedDepthValues:
    """Each fixed depth played on every query of ``tables`` (full information: what the
    ceilings learn from, and what best-fixed is chosen by); cached per tables content, as
    a leaderboard asks for the same splits' values for best-fixed and every ceiling."""
    from maw_gym_agents.evaluate import evaluate_router
    from maw_gym_agents.rollouts import tables_key

    key = tables_key(env_id, tables)
    if key not in _FIXED_VALUES:
        spec = env_layout(env_id, tables).spec
        returns, ndcg = [], []
        for depth in range(spec.choices):
            result = evaluate_router(FixedDepthRouter(spec, depth), env_id, tables)
            returns.append(result.returns)
            ndcg.append(tables.ndcg(result.candidate_scores))
        values = np.stack(returns, axis=1), np.stack(ndcg, axis=1).astype(np.float64)
        for array in values:
            array.setflags(write=False)  # shared by every caller of the cache
        _FIXED_VALUES[key] = FixedDepthValues(*values)
    return _FIXED_VALUES[key]


def best_fixed_depth(
    env_id: str, tables: Tables, metric: str = "return"
) -> tuple[FixedDepthRouter, np.ndarray]:
    """The fixed depth with the highest mean ``metric`` (:data:`FIXED_METRICS`) on ``tables``,
    and every depth's mean. The leaderboard passes dev: the return and the NDCG@10 columns
    each compare with their own best depth, which may differ (issue 18)."""
    spec = env_layout(env_id, tables).spec
    means = fixed_depth_values(env_id, tables).of(metric).mean(axis=0)
    return _best_of(spec, means, metric), means


def _best_of(spec: ActionSpec, means: np.ndarray, metric: str) -> FixedDepthRouter:
    """The depth with the highest mean (the first on ties), named for its metric."""
    name = "best-fixed" if metric == "return" else f"best-fixed-{metric}"
    return FixedDepthRouter(spec, int(np.argmax(means)), name=name)


def hash_depth(query_id: str, depth: int) -> int:
    """A fixed depth in [0, depth) for ``query_id``: the first 8 bytes of the sha256 of its
    UTF-8 text, big-endian, modulo ``depth`` (the same on every run and machine, unlike
    Python's salted ``hash``)."""
    digest = hashlib.sha256(str(query_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % depth


def hash_router(env_id: str, tables: Tables) -> LookupRouter:
    """Query id → :func:`hash_depth` on every decision: a router that varies per query but
    knows nothing about it, a negative control beside ``random`` (issue 18)."""
    layout = env_layout(env_id, tables)
    depths = np.array([hash_depth(q, layout.spec.choices) for q in tables.query_ids])
    action = depth_actions(layout.spec, depths)  # (N,), (N, H) or (N, D)
    plans = np.repeat(action[:, None], layout.horizon, axis=1)
    return build_lookup("hash", env_id, tables, plans)


def uniform_mixture(depth: int) -> FixedDepthRouter:
    """Weights 1/D on each of ``depth`` depths: the ``SoftDepthMixture`` reference router."""
    return FixedDepthRouter(ActionSpec("simplex", depth), None)


def heuristic_routers(
    env_id: str, dev_tables: Tables, eval_tables: Tables, seed: int = 0
) -> dict[str, Router]:
    """Every baseline and bound of this module for ``env_id``: the lookups built on
    ``eval_tables``, the two best fixed depths chosen on ``dev_tables`` (never on the split
    they are scored on)."""
    spec = env_layout(env_id, eval_tables).spec
    shape = (eval_tables.depth, eval_tables.heads, int(eval_tables.observation.shape[-1]))
    routers: dict[str, Router] = {"random": RandomRouter(spec, seed)}
    routers["hash"] = hash_router(env_id, eval_tables)
    for depth in range(spec.choices):
        routers[f"fixed-{depth}"] = FixedDepthRouter(spec, depth)
    values = fixed_depth_values(env_id, dev_tables)
    for metric in FIXED_METRICS:
        best = _best_of(spec, values.of(metric).mean(axis=0), metric)
        routers[best.name] = best
    if spec.kind == "simplex":
        routers["uniform-mixture"] = uniform_mixture(spec.choices)
    for strategy in SCORE_STRATEGIES:
        routers[strategy] = ScoreRouter(spec, strategy, shape)
    routers["joint-router"] = joint_router(env_id, eval_tables)
    routers["oracle"] = oracle_router(env_id, eval_tables)
    return routers
