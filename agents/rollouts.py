"""Playing tables through an env's native vector env: pinned one-episode rollouts
(:func:`run_episodes`) and exhaustive returns of every joint action (:func:`enumerate_returns`)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from maw_gym.envs.vector import MAWVectorEnv
from maw_gym.tables import Tables
from maw_gym_agents.spaces import ActionSpec

MAX_JOINT_ACTIONS = 4096
"""Joint actions per query up to which :func:`enumerate_returns` plays them all."""


@dataclass
class Episodes:
    """One episode per sub-env, from pinned queries (steps after an episode's end are masked)."""

    observations: list[np.ndarray]
    """Per step t: (n, *obs_shape) observations the actions were chosen on."""
    actions: list[np.ndarray]
    """Per step t: (n, ...) actions taken."""
    valid: np.ndarray
    """(T, n) True where step t belongs to sub-env i's first episode."""
    returns: np.ndarray
    """(n,) undiscounted sum of rewards of each sub-env's episode."""
    final_info: dict[str, np.ndarray]
    """Info of each episode's last step, keyed like the env's info: (n,) arrays."""


def make_vector_env(env_id: str, num_envs: int, tables: Tables) -> MAWVectorEnv:
    """The env's native vector env over ``tables`` (SAME_STEP autoreset, pinnable queries)."""
    from maw_gym import registered_env_id  # (importing maw_gym registers the MAW/ ids)

    registered_env_id(env_id, "env_id")  # a "module:" prefix would make gymnasium import it
    envs = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", tables=tables
    )
    if not isinstance(envs, MAWVectorEnv):
        raise ValueError(f"{env_id!r} is not a MAW env id (its vector env is {type(envs)})")
    return envs


@dataclass(frozen=True)
class EnvLayout:
    """What a router must fit for one env variant on one set of tables."""

    spec: ActionSpec
    horizon: int
    """Decisions per episode."""
    observation_space: gym.Space


def env_layout(env_id: str, tables: Tables) -> EnvLayout:
    """The action spec, episode length and observation space of ``env_id`` over ``tables``."""
    envs = make_vector_env(env_id, 1, tables)
    variant = envs.variant
    envs.close()
    return EnvLayout(
        ActionSpec.from_space(variant.action_space), variant.horizon, variant.observation_space
    )


def _final_info_row(infos: dict[str, Any], index: int) -> dict[str, Any]:
    # SAME_STEP autoreset: a finished sub-env's own info sits under "final_info"; the top level
    # already holds the next episode's reset info.
    source = infos.get("final_info", infos)
    return {
        key: np.asarray(value)[index]
        for key, value in source.items()
        if not key.startswith("_") and np.ndim(value) >= 1
    }


def run_episodes(
    envs: gym.vector.VectorEnv,
    query_index: np.ndarray,
    choose: Callable[[np.ndarray, int], np.ndarray],
    seed: int | None = None,
    max_steps: int = 64,
) -> Episodes:
    """Play exactly one episode per sub-env, sub-env i pinned to query ``query_index[i]``.

    ``choose(observations, t)`` returns the actions for step t. Steps after a sub-env's episode
    ended (it autoresets into a new one) are stepped but masked out of everything returned.
    """
    n = envs.num_envs
    if len(query_index) != n:
        raise ValueError(f"query_index has {len(query_index)} entries, the vector env {n}")
    obs, _ = envs.reset(seed=seed, options={"query_index": np.asarray(query_index)})
    done = np.zeros(n, dtype=bool)
    returns = np.zeros(n, dtype=np.float64)
    observations, actions, valid = [], [], []
    final: dict[int, dict[str, Any]] = {}
    for t in range(max_steps):
        action = choose(obs, t)
        observations.append(obs)
        actions.append(action)
        valid.append(~done)
        obs, reward, terminated, truncated, infos = envs.step(action)
        returns += np.where(done, 0.0, reward)
        ended = (terminated | truncated) & ~done
        for i in np.flatnonzero(ended):
            final[int(i)] = _final_info_row(infos, int(i))
        done |= ended
        if done.all():
            break
    else:
        raise RuntimeError(f"episodes did not end within {max_steps} steps")
    keys = set.intersection(*(set(row) for row in final.values())) if final else set()
    final_info = {k: np.array([final[i][k] for i in range(n)]) for k in sorted(keys)}
    return Episodes(observations, actions, np.array(valid), returns, final_info)


@dataclass
class JointReturns:
    """Every query's return under every joint action (exhaustive, so exact)."""

    actions: np.ndarray
    """(J, T, *action_shape): the joint actions, one per step T of an episode."""
    returns: np.ndarray
    """(N, J): return of query i under joint action j."""


def enumerate_returns(
    env_id: str,
    tables: Tables,
    max_joint_actions: int = MAX_JOINT_ACTIONS,
    chunk: int = 8192,
) -> JointReturns:
    """Return of every (query, joint action) pair, played through the native vector env.

    Works for ``Discrete`` (one decision per step, any fixed episode length T: D**T sequences)
    and single-step ``MultiDiscrete`` (D**H head assignments). Used for the per-query oracle,
    the exact expectation of the uniform random policy and the fixed-depth baselines.
    """
    layout = env_layout(env_id, tables)
    spec, steps = layout.spec, layout.horizon
    if spec.kind == "simplex" or (spec.kind == "multi_discrete" and steps > 1):
        raise ValueError(f"{env_id}: joint actions of a {spec.kind} space cannot be enumerated")
    width = steps * spec.slots
    if spec.choices**width > max_joint_actions:
        raise ValueError(
            f"{env_id}: {spec.choices}**{width} joint actions exceed max_joint_actions="
            f"{max_joint_actions}; enumeration is only for small action spaces"
        )
    grid = np.array(list(itertools.product(range(spec.choices), repeat=width)), dtype=np.int64)
    joint = grid.reshape(len(grid), steps, *((spec.slots,) if spec.slots > 1 else ()))
    n, j = tables.num_queries, len(joint)
    pairs_query = np.repeat(np.arange(n), j)
    pairs_joint = np.tile(np.arange(j), n)
    size = min(chunk, n * j)
    envs = make_vector_env(env_id, size, tables)
    returns = np.empty(n * j)
    for start in range(0, n * j, size):
        rows = np.arange(start, start + size) % (n * j)  # the last chunk wraps round (padding)
        choice = joint[pairs_joint[rows]]
        episodes = run_episodes(envs, pairs_query[rows], lambda obs, t, c=choice: c[:, t])
        keep = min(size, n * j - start)
        returns[start : start + keep] = episodes.returns[:keep]
    envs.close()
    return JointReturns(joint, returns.reshape(n, j))


def tables_key(env_id: str, tables: Tables) -> str:
    """What per-tables results are cached by: the env id and a hash of the tables' content."""
    digest = hashlib.sha1(tables.observation.tobytes())
    digest.update(tables.score_parts.tobytes())
    digest.update(tables.query_ids.astype(str).tobytes())
    return f"{env_id}|{digest.hexdigest()}"
