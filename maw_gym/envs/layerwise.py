"""``MAW/LayerwiseDepth-v3``: one MAW depth per layer of a two-layer stack (a real MDP)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from maw_gym.envs.base import MAWEnv, Variant, attention_space, discrete_problem
from maw_gym.tables import Tables


def check_layer_tables(tables: Tables) -> None:
    """Fail early unless ``tables`` hold well-formed layer-2 arrays."""
    if not tables.has_layers:
        raise ValueError(
            "MAW/LayerwiseDepth needs tables with layer-2 arrays (Tables.has_layers is False): "
            "build them with a preset whose layers >= 2, or Tables.synthetic(layers=True)"
        )
    n, d, h, p, _ = tables.observation.shape
    c = tables.candidate_mask.shape[1]
    expected = {
        "layer2_observation": (n, d, d, h, p, p),
        "layer2_entropy": (n, d, d, h),
        "layer2_focus": (n, d, d, h),
        "layer2_scores": (n, d, d, c),
    }
    for name, shape in expected.items():
        value = getattr(tables, name)
        if value is None or value.shape != shape:
            actual = None if value is None else value.shape
            raise ValueError(f"Tables.{name} has shape {actual}, expected {shape}")
    for name in ("layer2_entropy", "layer2_focus"):
        value = getattr(tables, name)
        if not np.all((value >= 0) & (value <= 1)):
            raise ValueError(f"Tables.{name} must lie in [0, 1]")


class LayerwiseDepthVariant(Variant):
    """Two decisions: layer 1's depth changes what layer 2 sees; paid after layer 2."""

    horizon = 2

    def __init__(
        self, tables: Tables, weights: np.ndarray, obs_mode: str, alignment: str = "ndcg"
    ) -> None:
        super().__init__(tables, weights, obs_mode, alignment)
        check_layer_tables(tables)
        extra = 2 if obs_mode == "flat" else 0  # flat: a one-hot of the layer is appended
        attention, first = attention_space(tables.observation, obs_mode, "observation", extra)
        _, second = attention_space(
            tables.layer2_observation, obs_mode, "layer2_observation", extra
        )
        if obs_mode == "flat":
            first[..., -2] = 1.0  # (N, F + 2)
            second[..., -1] = 1.0  # (N, D, F + 2)
            self.observation_space: spaces.Space = attention
        else:
            self.observation_space = spaces.Dict(
                {"attention": attention, "layer": spaces.Discrete(2)}
            )
        # Every state a query can be in, (N·(1 + D), ...): row q·(1 + D) is layer 1, row
        # q·(1 + D) + 1 + d1 is layer 2 after d1; an observation is then one row gather.
        states = np.concatenate([first[:, None], second], axis=1)
        self.states = states.reshape(-1, *states.shape[2:])
        self.action_space = spaces.Discrete(tables.depth)
        self.entropy = tables.layer2_entropy.mean(axis=-1, dtype=np.float64)  # (N, D, D)
        self.focus = tables.layer2_focus.mean(axis=-1, dtype=np.float64)
        aligned = tables.alignment_of(tables.layer2_scores, alignment).astype(np.float64)
        reward_table = self.reward(self.entropy, self.focus, aligned)
        self.best_depth_reward = reward_table.reshape(tables.num_queries, -1).max(axis=1)

    def observe(self, query: np.ndarray, step: np.ndarray, previous: np.ndarray) -> Any:
        rows = query * (1 + self.tables.depth) + np.where(step == 0, 0, 1 + previous)
        attention = self.states.take(rows, axis=0)
        if self.obs_mode == "flat":
            return attention
        return {"attention": attention, "layer": step.copy()}

    def action_problem(self, actions: np.ndarray, batch: int) -> str | None:
        return discrete_problem(actions, (batch,), self.tables.depth)

    def candidate_scores(
        self, query: np.ndarray, previous: np.ndarray, actions: np.ndarray
    ) -> np.ndarray:
        return self.tables.layer2_scores[query, previous, actions]

    def describe(self, action: np.ndarray, earlier: list[int]) -> str:
        chosen = [*earlier, int(action)]
        return ", ".join(f"layer {i + 1} depth {d}" for i, d in enumerate(chosen))

    def components(
        self, query: np.ndarray, previous: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            self.entropy[query, previous, actions],
            self.focus[query, previous, actions],
            self.alignment(query, previous, actions),
        )


class LayerwiseDepthEnv(MAWEnv):
    """Choose a MAW depth for each layer of a two-layer MAW stack, one layer at a time.

    ## Description

    A stack of two MAW layers reranks a query's BM25 candidates. The router first picks layer
    1's depth `d1` from layer 1's attention; layer 2's attention (its observation) depends on
    `d1`; it then picks layer 2's depth `d2`. So the second decision's state depends on the
    first action: a genuine two-step MDP, not a bandit. Everything comes from the tables'
    `layer2_*` arrays (built for presets with `layers >= 2`), so steps are lookups.

    ## Action Space

    | Space         | Meaning                                        |
    |---------------|------------------------------------------------|
    | `Discrete(D)` | the depth of the current layer (1, then 2)     |

    ## Observation Space

    | obs_mode       | Space                                                              |
    |----------------|--------------------------------------------------------------------|
    | `"flat"`       | `Box(0, 1, (D·H·P·P + 2,), float32)`: attention, then a one-hot of |
    |                | the layer being decided (`[1, 0]` layer 1, `[0, 1]` layer 2)       |
    | `"structured"` | `Dict(attention=Box(0, 1, (D, H, P, P)), layer=Discrete(2))`        |

    Layer 1: `Tables.observation[q]`; layer 2: `Tables.layer2_observation[q, d1]`.

    ## Rewards

    No shaping: the first step pays 0. The second pays, with weights `(w_e, w_f, w_a)`
    normalised to sum to 1,

    - `entropy = mean_h Tables.layer2_entropy[q, d1, d2, h]`, `focus` likewise from
      `layer2_focus`;
    - `alignment = NDCG@10` of the candidates ranked by `Tables.layer2_scores[q, d1, d2]`;
    - `reward = w_e·entropy + w_f·focus + w_a·alignment`, in [0, 1].

    `info` on the last step has `entropy`, `focus`, `alignment`, `action` (= `d2`),
    `best_depth_reward = max_{d1, d2} reward` (the per-query oracle) and
    `regret = best_depth_reward - reward` (>= 0); every step has `query_index` and `query_id`.

    ## Starting State

    A query drawn uniformly with `self.np_random`, at layer 1;
    `reset(options={"query_index": i})` pins it.

    ## Episode End

    - Termination: after the second step (the returned observation repeats the last one).
    - Truncation: never.

    ## Arguments

    As `MAW/DepthSelection-v3`: `tables` (must have layer-2 arrays), `dataset`, `split`,
    `preset`, `encoder`, `max_queries`, `depth`, `reward_weights` (`"default"`,
    `"retrieval"`, a triple or a dict, normalised to sum 1), `obs_mode`, `render_mode`.

    >>> import gymnasium as gym
    >>> import maw_gym
    >>> from maw_gym.tables import Tables
    >>> tables = Tables.synthetic(depth=4, heads=2, pool=2, layers=True)
    >>> env = gym.make("MAW/LayerwiseDepth-v3", tables=tables)
    >>> obs, _ = env.reset(seed=0)
    >>> obs.shape, obs[-2:].tolist()
    ((34,), [1.0, 0.0])
    >>> obs, reward, terminated, _, _ = env.step(1)
    >>> obs[-2:].tolist(), reward, terminated
    ([0.0, 1.0], 0.0, False)
    >>> _, reward, terminated, _, info = env.step(2)
    >>> terminated, reward <= info["best_depth_reward"]
    (True, True)

    ## Registered Configurations

    - `MAW/LayerwiseDepth-v3`: `reward_weights="default"`.

    Native vector env: :class:`maw_gym.envs.vector.LayerwiseDepthVectorEnv`.

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

    variant_class = LayerwiseDepthVariant
