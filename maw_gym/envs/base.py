"""Shared machinery of the MAW environments: tables, reward weights, variants, the single env.

Each environment variant is a :class:`Variant`: pure, batched numpy functions of
``(query, previous action, action)`` read from :class:`~maw_gym.tables.Tables`. The single env
(:class:`MAWEnv`) runs its variant on a batch of one and the native vector env
(:class:`maw_gym.envs.vector.MAWVectorEnv`) on a batch of ``num_envs``, so the two agree step
for step by construction (and ``tests/test_envs.py`` checks it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from maw_gym.envs.render import (
    RENDER_FPS,
    RENDER_MODES,
    Renderer,
    RenderState,
    check_render_mode,
)
from maw_gym.presets import Preset
from maw_gym.specs import SplitName
from maw_gym.tables import ALIGNMENTS, Tables

#: Reward component names, in the order of a weight triple.
COMPONENTS = ("entropy", "focus", "alignment")
#: Named reward weightings: the seeds' default and an alignment-only "retrieval" objective.
REWARD_PRESETS: dict[str, tuple[float, float, float]] = {
    "default": (0.3, 0.3, 0.4),
    "retrieval": (0.0, 0.0, 1.0),
}
ObsMode = Literal["flat", "structured"]
OBS_MODES: tuple[str, ...] = get_args(ObsMode)

RewardWeights = str | Sequence[float] | Mapping[str, float]
#: What an env's ``tables=`` accepts: tables, a path (a tables artifact file, an installed
#: artifact directory or one split's saved tables; see :func:`maw_gym.artifacts.open_tables`),
#: or None for the cached tables of dataset/split/preset/encoder.
TablesSource = Tables | str | Path | None


def resolve_reward_weights(reward_weights: RewardWeights) -> np.ndarray:
    """The (entropy, focus, alignment) weights as float64, normalised to sum to 1.

    Normalising keeps every reward in [0, 1] (each component is) whatever scale the caller
    writes the weights in, so returns and regrets compare across weightings.
    """
    if isinstance(reward_weights, str):
        if reward_weights not in REWARD_PRESETS:
            raise ValueError(
                f"reward_weights={reward_weights!r}: unknown preset; choose one of "
                f"{sorted(REWARD_PRESETS)} or give (entropy, focus, alignment) weights"
            )
        values = REWARD_PRESETS[reward_weights]
    elif isinstance(reward_weights, Mapping):
        unknown = set(reward_weights) - set(COMPONENTS)
        if unknown:
            raise ValueError(
                f"reward_weights has unknown keys {sorted(unknown)}; expected {COMPONENTS}"
            )
        values = tuple(float(reward_weights.get(name, 0.0)) for name in COMPONENTS)
    elif isinstance(reward_weights, Sequence | np.ndarray):
        values = tuple(float(value) for value in reward_weights)
        if len(values) != len(COMPONENTS):
            raise ValueError(f"reward_weights={reward_weights!r}: expected 3 weights {COMPONENTS}")
    else:  # e.g. reward_weights=5: a bare number is not a weighting (issue 10)
        raise ValueError(
            f"reward_weights={reward_weights!r}: expected a preset name "
            f"({', '.join(sorted(REWARD_PRESETS))}), 3 weights {COMPONENTS} or a mapping of them"
        )
    weights = np.asarray(values, dtype=np.float64)
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(
            f"reward_weights={reward_weights!r}: weights must be finite, non-negative and "
            "not all zero"
        )
    return weights / weights.sum()


@dataclass(frozen=True)
class EnvConfig:
    """Everything a MAW env (single or vector) is built from: its ``gym.make`` keywords.

    One object instead of nine arguments repeated by every constructor; the env docstrings
    document each field (``DepthSelectionEnv``'s Arguments table).
    """

    tables: TablesSource = None
    """Tables to play, or a path opened for ``split`` (a tables artifact file or its installed
    directory); None loads (building on first use) those of dataset/split/preset."""
    dataset: str | Path = "nave-kjv"
    """BEIR dataset name or folder (only without ``tables``)."""
    split: SplitName = "train"
    """Which split's tables to load (only without ``tables``)."""
    preset: str | Preset = "quick"
    """Pipeline preset, or its name (only without ``tables``): the default names the official
    benchmark, whose tables ship with the package (``maw_gym.official``)."""
    encoder: str | Path | None = None
    """MAW encoder checkpoint directory; None: the preset's (only without ``tables``)."""
    max_queries: int | None = None
    """Keep only the first ``max_queries`` queries."""
    depth: int | None = None
    """If given, checked against the tables' D (the tables fix D)."""
    reward_weights: RewardWeights = "default"
    """A name of :data:`REWARD_PRESETS`, an (entropy, focus, alignment) triple or a dict."""
    obs_mode: ObsMode = "flat"
    """``"flat"`` vector or ``"structured"`` (D, H, P, P) observations."""
    alignment: str = "ndcg"
    """The alignment reward: ``"ndcg"`` (NDCG@10) or ``"relevant_mass"`` (continuous,
    :func:`maw_gym.tables.relevant_mass`)."""

    def __post_init__(self) -> None:
        if not isinstance(self.tables, Tables | str | Path | None):  # tables=5 was AttributeError
            raise TypeError(
                f"tables={self.tables!r}: expected Tables, a path (a tables artifact file, its "
                "installed directory or one split's saved tables) or None"
            )

    @classmethod
    def from_keywords(cls, owner: str, tables: TablesSource, keywords: dict[str, Any]) -> EnvConfig:
        """The config of an env constructor's keywords; a typo names the valid keywords."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(keywords) - known)
        if unknown:
            raise TypeError(
                f"{owner}: unknown keyword(s) {unknown}; expected among {sorted(known)}"
            )
        return cls(tables=tables, **keywords)

    def load_tables(self) -> Tables:
        """``tables`` if given (a path is opened for ``split``), else the cached tables of
        (dataset, split, preset, encoder); cut to the first ``max_queries`` queries."""
        tables = self.tables
        if isinstance(tables, (str, Path)):
            from maw_gym.artifacts import open_tables

            tables = open_tables(tables, self.split)
        elif tables is None:
            # Imported here: building tables pulls torch, and ``import maw_gym`` must stay light.
            from maw_gym.build import ensure_tables

            tables = ensure_tables(self.dataset, self.split, self.preset, self.encoder)
        limit = self.max_queries
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"max_queries={limit!r}: expected a positive integer or None")
            if limit < tables.num_queries:
                tables = tables.subset(np.arange(limit))
        return tables

    def build(self, variant_class: type[Variant]) -> Variant:
        """The variant the single and vector envs share."""
        weights = resolve_reward_weights(self.reward_weights)
        tables = self.load_tables()
        if self.depth is not None and self.depth != tables.depth:
            raise ValueError(
                f"depth={self.depth}, but the tables have D={tables.depth} depths; depth is set "
                "by the preset/encoder that built them (leave depth=None to take it from the "
                "tables)"
            )
        return variant_class(tables, weights, self.obs_mode, self.alignment)


def attention_space(
    table: np.ndarray, obs_mode: str, name: str, extra: int = 0
) -> tuple[spaces.Box, np.ndarray]:
    """A [0, 1] float32 Box for the attention maps in ``table`` and the table to gather from.

    ``table`` is ``(N, ..., D, H, P, P)``; in "flat" mode its last four axes are flattened
    (plus ``extra`` zero columns a variant fills in, e.g. a step one-hot). Pooled attention
    maps are averages of probabilities, so a value outside [0, 1] (beyond float rounding,
    which is clipped) means broken tables.
    """
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode={obs_mode!r}: expected one of {OBS_MODES}")
    low, high = float(table.min()), float(table.max())
    if low < -1e-5 or high > 1 + 1e-5:
        raise ValueError(
            f"Tables.{name} lies in [{low}, {high}], expected [0, 1] "
            "(pooled attention probabilities)"
        )
    table = np.clip(table, 0.0, 1.0, dtype=np.float32)
    if obs_mode == "flat":
        table = table.reshape(*table.shape[:-4], -1)
        if extra:
            table = np.concatenate([table, np.zeros((*table.shape[:-1], extra), np.float32)], -1)
    shape = table.shape[-1:] if obs_mode == "flat" else table.shape[-4:]
    return spaces.Box(0.0, 1.0, shape, np.float32), table


def discrete_problem(actions: np.ndarray, shape: tuple[int, ...], high: int) -> str | None:
    """Why integer ``actions`` of ``shape`` with values in [0, high) are invalid, or None."""
    if actions.shape != shape:
        return f"has shape {actions.shape}, expected {shape}"
    if actions.dtype.kind not in "iu":
        return f"has dtype {actions.dtype}, expected integers"
    if actions.size and (actions.min() < 0 or actions.max() >= high):
        return f"has values outside [0, {high - 1}]"
    return None


def hard_depth_components(
    tables: Tables, alignment: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head-averaged entropy and focus, and ``alignment``, of every hard depth: (N, D) float64."""
    entropy = tables.entropy.mean(axis=2, dtype=np.float64)
    focus = tables.focus.mean(axis=2, dtype=np.float64)
    if alignment == "ndcg":
        return entropy, focus, tables.alignment.astype(np.float64)
    return entropy, focus, tables.alignment_of(tables.depth_scores(), alignment).astype(np.float64)


class Variant(ABC):
    """One environment's dynamics as batched numpy functions of (query, previous, action).

    ``horizon`` decisions make an episode; the reward is paid on the last one. Subclasses set
    ``observation_space``, ``action_space`` and ``best_depth_reward`` (N,) in ``__init__``.
    """

    horizon: ClassVar[int] = 1
    observation_space: spaces.Space
    action_space: spaces.Space
    best_depth_reward: np.ndarray

    def __init__(
        self, tables: Tables, weights: np.ndarray, obs_mode: str, alignment: str = "ndcg"
    ) -> None:
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment={alignment!r}: choose one of {ALIGNMENTS}")
        self.tables = tables
        self.weights = weights
        self.obs_mode = obs_mode
        self.alignment_kind = alignment

    def reward(self, entropy: np.ndarray, focus: np.ndarray, alignment: np.ndarray) -> np.ndarray:
        """w_e·entropy + w_f·focus + w_a·alignment, float64 (one formula for every variant)."""
        w = self.weights
        return w[0] * entropy + w[1] * focus + w[2] * alignment

    @abstractmethod
    def observe(self, query: np.ndarray, step: np.ndarray, previous: np.ndarray) -> Any:
        """Observations of a batch at decision ``step`` after ``previous`` actions (B,)."""

    @abstractmethod
    def action_problem(self, actions: np.ndarray, batch: int) -> str | None:
        """Why ``actions`` are not a valid batch ``(batch, *action_shape)``, or None."""

    @abstractmethod
    def candidate_scores(
        self, query: np.ndarray, previous: np.ndarray, actions: np.ndarray
    ) -> np.ndarray:
        """(B, C) scores of each query's candidates under a final decision ``actions``.

        The one place a variant turns an action into a ranking: the env's alignment and
        ``maw_gym_agents.evaluate``'s retrieval metrics both read it, so they cannot disagree.
        """

    def alignment(self, query: np.ndarray, previous: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """(B,) float64 alignment (NDCG@10 or relevant mass) of :meth:`candidate_scores`."""
        scores = self.candidate_scores(query, previous, actions)
        return self.tables.alignment_of(scores, self.alignment_kind, query).astype(np.float64)

    @abstractmethod
    def components(
        self, query: np.ndarray, previous: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Entropy, focus and alignment (each (B,) float64) of a final decision ``actions``."""

    def action_weights(self, action: np.ndarray) -> np.ndarray:
        """Each (depth, head) attention map's share of one decision ``action``: (D, H) float64
        (the renderer outlines them). A depth fills its row; variants with other actions
        override this."""
        weights = np.zeros((self.tables.depth, self.tables.heads))
        weights[int(action)] = 1.0
        return weights

    def describe(self, action: np.ndarray, earlier: list[int]) -> str:
        """One decision ``action`` in words, after the episode's ``earlier`` decisions."""
        return f"depth {int(action)}"


def choose_queries(
    options: dict[str, Any] | None,
    rng: np.random.Generator,
    num_queries: int,
    batch: int,
) -> np.ndarray:
    """Query indices (batch,) from ``options["query_index"]`` (int or (batch,)) or ``rng``."""
    options = options or {}
    unknown = set(options) - {"query_index"}
    if unknown:
        raise ValueError(f"reset options {sorted(unknown)} unknown; the only one is 'query_index'")
    pinned = options.get("query_index")
    if pinned is None:
        return rng.integers(num_queries, size=batch)
    query = np.asarray(pinned)
    if query.ndim == 0:  # one query for every sub-env
        query = np.broadcast_to(query, (batch,))
    problem = discrete_problem(query, (batch,), num_queries)
    if problem is not None:
        raise ValueError(
            f"options['query_index']={pinned!r} {problem}; expected query indices in "
            f"[0, {num_queries - 1}] (one per sub-env)"
        )
    return query.astype(np.int64)


class MAWEnv(gym.Env):
    """Base of the single MAW environments; a subclass names its :class:`Variant`.

    See the subclasses' docstrings for the spaces, rewards and arguments.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": list(RENDER_MODES),
        "render_fps": RENDER_FPS,
    }
    variant_class: ClassVar[type[Variant]]

    def __init__(
        self, tables: TablesSource = None, *, render_mode: str | None = None, **config: Any
    ) -> None:
        """``config``: the other :class:`EnvConfig` fields, as keywords (``gym.make``'s);
        ``render_mode``: see :mod:`maw_gym.envs.render` (drawing never changes an episode)."""
        self.config = EnvConfig.from_keywords(type(self).__name__, tables, config)
        self.variant = self.config.build(self.variant_class)
        self.tables = self.variant.tables
        self.observation_space = self.variant.observation_space
        self.action_space = self.variant.action_space
        self._query: np.ndarray | None = None  # (1,) int64; None when an episode must reset
        self._step = np.zeros(1, dtype=np.int64)
        self._previous = np.zeros(1, dtype=np.int64)
        self.render_mode = check_render_mode(render_mode)
        self._renderer = Renderer(self.variant)
        self._shown: RenderState | None = None  # kept only when render_mode is set

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Draw a query (or take ``options["query_index"]``); return its first observation."""
        super().reset(seed=seed)
        self._query = choose_queries(options, self.np_random, self.tables.num_queries, 1)
        self._step[:] = 0
        self._previous[:] = 0
        if self.render_mode is not None:
            self._shown = RenderState(self._query.copy(), self._step.copy(), self._previous.copy())
        return self._observation(), self._query_info()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Apply one decision; the last decision of an episode is paid and terminates it."""
        if self._query is None:
            raise ResetNeeded(f"{type(self).__name__}.step: call reset() before step()")
        actions = np.asarray(action)[None]
        problem = (
            f"has shape {np.shape(action)}, expected {self.action_space.shape}"
            if actions.shape[1:] != self.action_space.shape
            else self.variant.action_problem(actions, 1)
        )
        if problem is not None:
            raise ValueError(
                f"{type(self).__name__}.step: action {action!r} {problem}; "
                f"expected an element of {self.action_space}"
            )
        if self._step[0] < self.variant.horizon - 1:
            self._remember(actions, None)
            self._previous[:] = actions.reshape(1)
            self._step += 1
            return self._observation(), 0.0, False, False, self._query_info()
        query = self._query
        entropy, focus, alignment = self.variant.components(query, self._previous, actions)
        rewards = self.variant.reward(entropy, focus, alignment)
        reward, oracle = float(rewards[0]), float(self.variant.best_depth_reward[query[0]])
        self._remember(
            actions,
            {"entropy": entropy, "focus": focus, "alignment": alignment, "reward": rewards},
        )
        info = {
            **self._query_info(),
            "entropy": float(entropy[0]),
            "focus": float(focus[0]),
            "alignment": float(alignment[0]),
            "best_depth_reward": oracle,
            "regret": oracle - reward,
            "action": actions[0].copy() if actions.ndim > 1 else int(actions[0]),
        }
        observation = self._observation()  # the terminal observation repeats the last one
        self._query = None
        return observation, reward, True, False, info

    def render(self) -> str | np.ndarray | None:
        """The last decision's frame (or the reset state's) in ``render_mode``.

        ``"ansi"``: text; ``"rgb_array"``: ``uint8 (H, W, 3)``; see :mod:`maw_gym.envs.render`.
        """
        if self.render_mode is None:
            gym.logger.warn(
                f"{type(self).__name__}.render: no render_mode; make the env with "
                f"render_mode in {RENDER_MODES}"
            )
            return None
        return self.draw(self.render_mode)

    def draw(self, mode: str) -> str | np.ndarray:
        """The current frame in ``mode``, whichever of ``RENDER_MODES`` the env renders
        (``maw-gym show`` prints the text and saves the image of one episode)."""
        if mode not in RENDER_MODES:
            raise ValueError(f"draw(mode={mode!r}): expected one of {RENDER_MODES}")
        if self._shown is None:
            raise ResetNeeded(
                f"{type(self).__name__}.render: nothing to draw; make the env with a "
                "render_mode and call reset() first"
            )
        env_id = self.spec.id if self.spec is not None else type(self).__name__
        return self._renderer.render(mode, self._shown, 0, env_id)

    def _remember(self, actions: np.ndarray, parts: dict[str, np.ndarray] | None) -> None:
        """Keep a decision for render(): its state, action and, if paid, reward parts."""
        if self.render_mode is None:
            return
        assert self._query is not None
        if parts is not None:
            parts = {**parts, "best_depth_reward": self.variant.best_depth_reward[self._query]}
        self._shown = RenderState(
            self._query.copy(),
            self._step.copy(),
            self._previous.copy(),
            actions.copy(),
            np.array([parts is not None]),
            parts,
        )

    def _observation(self) -> Any:
        assert self._query is not None
        batch = self.variant.observe(self._query, self._step, self._previous)
        if isinstance(batch, dict):
            return {key: value[0] for key, value in batch.items()}
        return batch[0]

    def _query_info(self) -> dict[str, Any]:
        assert self._query is not None
        index = int(self._query[0])
        return {"query_index": index, "query_id": str(self.tables.query_ids[index])}
