"""Native vector envs: ``num_envs`` sub-envs of one variant stepped as batched numpy gathers.

Reached through ``gym.make_vec(id, num_envs=n, vectorization_mode="vector_entry_point", ...)``
(same keyword arguments as the single env). A sub-env runs exactly the single env's
:class:`~maw_gym.envs.base.Variant`, so with the same queries and actions it returns the same
observations, rewards and infos (tested).

Autoreset: ``AutoresetMode.SAME_STEP``. A one-step env terminates on every step, so under
Gymnasium's default NEXT_STEP mode every other ``step`` would be a wasted reset; here the
observation returned with ``terminated[i]=True`` is already the *next* episode's first
observation, and the finished episode's are in ``info``:

- ``info["final_obs"]``: the batch of final observations (rows where ``info["_final_obs"]``),
  stacked like ``observations`` rather than an object array, so no per-row Python work;
- ``info["final_info"]``: dict of (num_envs,) arrays (``query_index``, ``query_id``, ``entropy``,
  ``focus``, ``alignment``, ``best_depth_reward``, ``regret``, ``action``), each with its ``_key``
  mask (= ``terminated``), as ``SyncVectorEnv(..., autoreset_mode=SAME_STEP)`` lays it out;
- ``info["query_index"]``, ``info["query_id"]``: each sub-env's current (new) query.

Query pinning: ``reset(options={"query_index": i})`` with ``i`` an int or a ``(num_envs,)``
array sets each sub-env's first query (GRPO: a group of sub-envs plays one query). Autoresets
draw from the vector env's ``np_random``, seeded by ``reset(seed=...)``; with ``num_envs=1`` the
draws equal the single env's ``reset()`` draws.

Rendering (``render_mode="ansi"`` or ``"rgb_array"``): ``render()`` returns one frame per
sub-env, as ``SyncVectorEnv.render`` does (so Gymnasium's vector ``RecordVideo`` and
``HumanRendering`` work); frame ``i`` is sub-env ``i``'s last decision, drawn as the single env
draws it, not the next episode's first state that SAME_STEP autoreset already moved it to.

RLlib's ``SingleAgentEnvRunner`` assumes NEXT_STEP semantics: use its default ``"sync"``
vectorization there, not this entry point.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from maw_gym.envs.base import EnvConfig, MAWEnv, TablesSource, choose_queries
from maw_gym.envs.depth_selection import DepthSelectionEnv
from maw_gym.envs.layerwise import LayerwiseDepthEnv
from maw_gym.envs.per_head import PerHeadDepthEnv
from maw_gym.envs.render import (
    RENDER_FPS,
    RENDER_MODES,
    Renderer,
    RenderState,
    check_render_mode,
)
from maw_gym.envs.soft_mixture import SoftDepthMixtureEnv


class MAWVectorEnv(VectorEnv):
    """``num_envs`` copies of ``single_env_class``'s variant, stepped in one batch.

    Arguments are the single env's plus ``num_envs``; see the module docstring for the
    autoreset layout and query pinning.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": list(RENDER_MODES),
        "render_fps": RENDER_FPS,
    }
    single_env_class: ClassVar[type[MAWEnv]]

    def __init__(
        self,
        num_envs: int = 1,
        tables: TablesSource = None,
        *,
        render_mode: str | None = None,
        **config: Any,
    ) -> None:
        """``config``: the other :class:`~maw_gym.envs.base.EnvConfig` fields, as keywords;
        ``render_mode`` as the single env's."""
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r}: expected a positive integer")
        self.num_envs = num_envs
        self.config = EnvConfig.from_keywords(type(self).__name__, tables, config)
        self.variant = self.config.build(self.single_env_class.variant_class)
        self.tables = self.variant.tables
        self.single_observation_space = self.variant.observation_space
        self.single_action_space = self.variant.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._query: np.ndarray | None = None  # (num_envs,) int64; None before the first reset
        self._step = np.zeros(num_envs, dtype=np.int64)
        self._previous = np.zeros(num_envs, dtype=np.int64)
        self._observations: Any = None
        self.render_mode = check_render_mode(render_mode)
        self._renderer = Renderer(self.variant)
        self._shown: RenderState | None = None  # kept only when render_mode is set

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every sub-env; ``options``: ``query_index`` (int or (num_envs,))."""
        super().reset(seed=seed)
        self._query = choose_queries(
            options, self.np_random, self.tables.num_queries, self.num_envs
        )
        self._step[:] = 0
        self._previous[:] = 0
        self._observations = self.variant.observe(self._query, self._step, self._previous)
        if self.render_mode is not None:
            self._shown = RenderState(self._query.copy(), self._step.copy(), self._previous.copy())
        return self._observations, self._query_info()

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step every sub-env; finished ones autoreset in the same step (see module doc)."""
        if self._query is None:
            raise ResetNeeded(f"{type(self).__name__}.step: call reset() before step()")
        actions = np.asarray(actions)
        problem = self.variant.action_problem(actions, self.num_envs)
        if problem is not None:
            raise ValueError(
                f"{type(self).__name__}.step: actions {problem}; expected an element of "
                f"{self.action_space}"
            )
        variant, query = self.variant, self._query
        final = self._step >= variant.horizon - 1  # (num_envs,) episodes that end now
        entropy, focus, alignment = variant.components(query, self._previous, actions)
        rewards = variant.reward(entropy, focus, alignment)
        oracle = variant.best_depth_reward[query]
        final_info = {
            "query_index": query.copy(),
            "query_id": self.tables.query_ids[query],
            "entropy": entropy,
            "focus": focus,
            "alignment": alignment,
            "best_depth_reward": oracle,
            "regret": oracle - rewards,
            "action": actions.copy(),
        }
        all_final = variant.horizon == 1 or bool(final.all())
        if not all_final:
            rewards = np.where(final, rewards, 0.0)
            for value in final_info.values():
                value[~final] = 0 if value.dtype.kind != "U" else ""
        parts = {"entropy": entropy, "focus": focus, "alignment": alignment, "reward": rewards}
        self._remember(query, actions, final, {**parts, "best_depth_reward": oracle})
        for key in list(final_info):
            final_info[f"_{key}"] = final
        info: dict[str, Any] = {
            "final_obs": self._observations,
            "_final_obs": final,
            "final_info": final_info,
            "_final_info": final,
        }
        # Advance: finished sub-envs start a new episode, the others move to their next step.
        if all_final:
            query = self.np_random.integers(self.tables.num_queries, size=self.num_envs)
        else:
            query = query.copy()
            query[final] = self.np_random.integers(self.tables.num_queries, size=final.sum())
        self._query = query
        if variant.horizon > 1:
            self._previous = np.where(final, 0, actions)
            self._step = np.where(final, 0, self._step + 1)
        self._observations = variant.observe(query, self._step, self._previous)
        info.update(self._query_info())
        terminated = final.copy()
        return self._observations, rewards, terminated, np.zeros_like(terminated), info

    def _remember(
        self, query: np.ndarray, actions: np.ndarray, final: np.ndarray, parts: dict
    ) -> None:
        """Keep a step's decisions for render(), as copies (the step reuses its arrays)."""
        if self.render_mode is None:
            return
        state = (query, self._step, self._previous, actions, final)
        copies = {name: value.copy() for name, value in parts.items()}
        self._shown = RenderState(*(array.copy() for array in state), copies)

    def render(self) -> tuple[str | np.ndarray, ...] | None:
        """Every sub-env's frame, as ``SyncVectorEnv.render`` returns them: sub-env ``i``'s
        last decision (or its state after reset), as the single env draws it."""
        if self.render_mode is None:
            return None
        if self._shown is None:
            raise ResetNeeded(f"{type(self).__name__}.render: call reset() before render()")
        env_id = self.spec.id if self.spec is not None else type(self).__name__
        return tuple(
            self._renderer.render(self.render_mode, self._shown, i, env_id)
            for i in range(self.num_envs)
        )

    def _query_info(self) -> dict[str, Any]:
        assert self._query is not None
        return {
            "query_index": self._query.copy(),
            "_query_index": np.ones(self.num_envs, dtype=bool),
            "query_id": self.tables.query_ids[self._query],
            "_query_id": np.ones(self.num_envs, dtype=bool),
        }


class DepthSelectionVectorEnv(MAWVectorEnv):
    """Native vector env of ``MAW/DepthSelection-v3`` (:class:`DepthSelectionEnv`)."""

    single_env_class = DepthSelectionEnv


class SoftDepthMixtureVectorEnv(MAWVectorEnv):
    """Native vector env of ``MAW/SoftDepthMixture-v3`` (:class:`SoftDepthMixtureEnv`)."""

    single_env_class = SoftDepthMixtureEnv


class PerHeadDepthVectorEnv(MAWVectorEnv):
    """Native vector env of ``MAW/PerHeadDepth-v3`` (:class:`PerHeadDepthEnv`)."""

    single_env_class = PerHeadDepthEnv


class LayerwiseDepthVectorEnv(MAWVectorEnv):
    """Native vector env of ``MAW/LayerwiseDepth-v3`` (:class:`LayerwiseDepthEnv`).

    Sub-envs are at different layers at a time; ``terminated[i]`` marks those that just made
    their layer-2 decision (and were reset to a new query's layer 1 in the same step).
    """

    single_env_class = LayerwiseDepthEnv
