"""``MAW/PerHeadDepth-v3``: one MAW depth per attention head."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from maw_gym.envs.base import (
    MAWEnv,
    Variant,
    attention_space,
    discrete_problem,
    hard_depth_components,
)
from maw_gym.tables import Tables


class PerHeadDepthVariant(Variant):
    """Per-head selection: scores add one ``score_parts`` slice per (head, chosen depth)."""

    def __init__(
        self, tables: Tables, weights: np.ndarray, obs_mode: str, alignment: str = "ndcg"
    ) -> None:
        super().__init__(tables, weights, obs_mode, alignment)
        self.observation_space, self.observations = attention_space(
            tables.observation, obs_mode, "observation"
        )
        self.action_space = spaces.MultiDiscrete([tables.depth] * tables.heads)
        self.heads = np.arange(tables.heads)
        # Rows indexed by (query, depth, head) flattened, so a step is one row gather each.
        self.score_rows = tables.score_parts.reshape(-1, tables.score_parts.shape[-1])
        self.entropy = tables.entropy.astype(np.float64).ravel()  # (N·D·H,)
        self.focus = tables.focus.astype(np.float64).ravel()
        # The best depth shared by all heads: a reference, not a bound (D**H assignments).
        self.best_depth_reward = self.reward(*hard_depth_components(tables, alignment)).max(axis=1)

    def observe(self, query: np.ndarray, step: np.ndarray, previous: np.ndarray) -> np.ndarray:
        return self.observations[query]

    def action_problem(self, actions: np.ndarray, batch: int) -> str | None:
        return discrete_problem(actions, (batch, self.tables.heads), self.tables.depth)

    def _rows(self, query: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """(B, H) flat (query, depth, head) indices of each head's chosen depth."""
        return (query[:, None] * self.tables.depth + actions) * len(self.heads) + self.heads

    def candidate_scores(
        self, query: np.ndarray, previous: np.ndarray, actions: np.ndarray
    ) -> np.ndarray:
        parts = self.score_rows.take(self._rows(query, actions), axis=0)  # (B, H, C)
        return self.tables.score_base[query] + parts.sum(axis=1)  # (B, C)

    def action_weights(self, action: np.ndarray) -> np.ndarray:
        weights = np.zeros((self.tables.depth, self.tables.heads))
        weights[np.asarray(action), np.arange(self.tables.heads)] = 1.0
        return weights

    def describe(self, action: np.ndarray, earlier: list[int]) -> str:
        return "depths per head " + " ".join(str(int(d)) for d in action)

    def components(
        self, query: np.ndarray, previous: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self._rows(query, actions)
        return (
            self.entropy.take(rows).mean(axis=1),
            self.focus.take(rows).mean(axis=1),
            self.alignment(query, previous, actions),
        )


class PerHeadDepthEnv(MAWEnv):
    """Choose a MAW depth for each attention head of a query.

    ## Description

    Per-head routing: head `h` of the MAW layer uses depth `d_h`. The reranker's score is linear
    in the attention output, so a candidate's score is exact from the tables:
    `scores[c] = score_base[q, c] + Σ_h score_parts[q, d_h, h, c]`. One query per episode, one
    decision.

    ## Action Space

    | Space                  | Meaning                         |
    |------------------------|---------------------------------|
    | `MultiDiscrete([D]*H)` | `(d_1, ..., d_H)`, one per head |

    ## Observation Space

    As `MAW/DepthSelection-v3`: `Box(0, 1, (D·H·P·P,), float32)` (`obs_mode="flat"`) or
    `Box(0, 1, (D, H, P, P), float32)` (`obs_mode="structured"`).

    ## Rewards

    With weights `(w_e, w_f, w_a)` normalised to sum to 1:

    - `entropy = mean_h Tables.entropy[q, d_h, h]`, `focus = mean_h Tables.focus[q, d_h, h]`;
    - `alignment = NDCG@10` of the candidates ranked by `scores` above;
    - `reward = w_e·entropy + w_f·focus + w_a·alignment`, in [0, 1].

    With every `d_h = d` this is `MAW/DepthSelection-v3`'s reward for depth `d`.
    `info["best_depth_reward"]` is the best depth shared by all heads (DepthSelection's oracle;
    the D**H assignments are not searched), so `info["regret"] = best_depth_reward - reward`
    can be negative: a per-head assignment can beat every single depth.

    ## Starting State

    A query drawn uniformly with `self.np_random`; `reset(options={"query_index": i})` pins it.

    ## Episode End

    - Termination: after the single step (the returned observation repeats the last one).
    - Truncation: never.

    ## Arguments

    As `MAW/DepthSelection-v3`: `tables`, `dataset`, `split`, `preset`, `encoder`,
    `max_queries`, `depth`, `reward_weights` (`"default"`, `"retrieval"`, a triple or a dict,
    normalised to sum 1), `obs_mode`, `render_mode`.

    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import maw_gym
    >>> from maw_gym.tables import Tables
    >>> env = gym.make("MAW/PerHeadDepth-v3", tables=Tables.synthetic(depth=4, heads=2))
    >>> env.action_space
    MultiDiscrete([4 4])
    >>> _ = env.reset(seed=0)
    >>> _, reward, terminated, _, info = env.step(np.array([0, 3]))
    >>> terminated, info["action"].tolist()
    (True, [0, 3])

    ## Registered Configurations

    - `MAW/PerHeadDepth-v3`: `reward_weights="default"`.

    Native vector env: :class:`maw_gym.envs.vector.PerHeadDepthVectorEnv`.

    ## Version History

    - v0: initial version.
    - v1: the `train` split holds router-train queries only, held out from the encoder
      (`router_fraction`); encoder levers and defaults chosen by the depth study
      (README, "Depth study"); optional `alignment="relevant_mass"`.
    - v2: the `quick` and `full` encoders add the semantic first-stage feature (the base
      encoder's bi-encoder cosine beside BM25, `Preset.semantic`) and `quick` reranks 30 BM25
      candidates, the depth study's dev choice; with them the reranker beats BM25 on test.
    - v3: `info["oracle_reward"]` is `info["best_depth_reward"]` (in the per-head and mixture
      envs it is the best single depth's reward, not an oracle); `preset` defaults to `"quick"`,
      whose tables ship with the package (`maw_gym.official`): made with this default, the env
      loads them verified in seconds and trains nothing; the stage specs' cache keys.
    """

    variant_class = PerHeadDepthVariant
