"""``MAW/SoftDepthMixture-v3``: weight the MAW depths instead of picking one."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from maw_gym.envs.base import MAWEnv, Variant, attention_space, hard_depth_components
from maw_gym.tables import Tables


def mixture_weights(actions: np.ndarray) -> np.ndarray:
    """Depth weights (B, D) float64: each row of ``actions`` divided by its sum (zeros: uniform)."""
    actions = actions.astype(np.float64)
    totals = actions.sum(axis=1, keepdims=True)
    uniform = np.full_like(actions, 1.0 / actions.shape[1])
    return np.where(totals > 0, actions / np.where(totals > 0, totals, 1.0), uniform)


class SoftDepthMixtureVariant(Variant):
    """Soft selection: the reranker is linear in the attention, so mixed scores are exact."""

    def __init__(
        self, tables: Tables, weights: np.ndarray, obs_mode: str, alignment: str = "ndcg"
    ) -> None:
        super().__init__(tables, weights, obs_mode, alignment)
        self.observation_space, self.observations = attention_space(
            tables.observation, obs_mode, "observation"
        )
        self.action_space = spaces.Box(0.0, 1.0, (tables.depth,), np.float32)
        self.entropy, self.focus, aligned = hard_depth_components(tables, alignment)  # (N, D)
        self.depth_scores = tables.depth_scores().astype(np.float64)  # (N, D, C)
        # The best one-hot mixture: a reference, not a bound (a blend can rank better).
        self.best_depth_reward = self.reward(self.entropy, self.focus, aligned).max(axis=1)

    def observe(self, query: np.ndarray, step: np.ndarray, previous: np.ndarray) -> np.ndarray:
        return self.observations[query]

    def action_problem(self, actions: np.ndarray, batch: int) -> str | None:
        shape = (batch, self.tables.depth)
        if actions.shape != shape:
            return f"has shape {actions.shape}, expected {shape}"
        if actions.dtype.kind not in "iuf":
            return f"has dtype {actions.dtype}, expected real numbers"
        if not np.isfinite(actions).all():
            return "holds NaN or inf"
        if actions.size and (actions.min() < 0 or actions.max() > 1):
            return "has values outside [0, 1]"
        return None

    def candidate_scores(
        self, query: np.ndarray, previous: np.ndarray, actions: np.ndarray
    ) -> np.ndarray:
        # Weights sum to 1, so Σ_d w_d·(base + parts_d) = base + Σ_d w_d·parts_d.
        weights = mixture_weights(actions)  # (B, D)
        return np.einsum("bd,bdc->bc", weights, self.depth_scores[query])  # (B, C)

    def action_weights(self, action: np.ndarray) -> np.ndarray:
        mixture = mixture_weights(np.asarray(action)[None])[0]  # (D,), the env's normalisation
        return np.repeat(mixture[:, None], self.tables.heads, axis=1)

    def describe(self, action: np.ndarray, earlier: list[int]) -> str:
        weights = mixture_weights(np.asarray(action)[None])[0]
        return "mixture weights " + " ".join(f"{w:.2f}" for w in weights)

    def components(
        self, query: np.ndarray, previous: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        weights = mixture_weights(actions)  # (B, D)
        return (
            np.einsum("bd,bd->b", weights, self.entropy[query]),
            np.einsum("bd,bd->b", weights, self.focus[query]),
            self.alignment(query, previous, actions),
        )


class SoftDepthMixtureEnv(MAWEnv):
    """Blend the MAW depths with weights that rerank a query's BM25 candidates.

    ## Description

    The soft-selection variant of the MAW write-ups (`attn_4d = Σ_d w_d · attn_5d[..., d]`): the
    action weights the D depths of a query's attention. The MAW reranker's score is linear in
    the attention output, so the candidates' scores under a mixture are exactly the mixture of
    the per-depth scores (see :mod:`maw_gym.tables`). One query per episode, one decision.

    ## Action Space

    | Space                          | Meaning                                             |
    |--------------------------------|-----------------------------------------------------|
    | `Box(0, 1, (D,), float32)`     | unnormalised depth weights `a`                      |

    The env normalises: `w = a / Σ_d a_d`; an all-zero action means uniform weights `1/D`.
    An action with NaN/inf, a value outside [0, 1] or the wrong shape raises `ValueError`.
    A bounded Box (rather than logits) is what SB3's PPO clips its Gaussian actions to.

    ## Observation Space

    As `MAW/DepthSelection-v3`: `Box(0, 1, (D·H·P·P,), float32)` (`obs_mode="flat"`) or
    `Box(0, 1, (D, H, P, P), float32)` (`obs_mode="structured"`).

    ## Rewards

    With weights `(w_e, w_f, w_a)` normalised to sum to 1, for query `q` and mixture `w`:

    - `scores[c] = Σ_d w_d · depth_scores[q, d, c]` (exact mixed-attention scores);
    - `alignment = NDCG@10` of the candidates ranked by `scores`;
    - `entropy = Σ_d w_d · mean_h Tables.entropy[q, d, h]`, `focus` likewise: the
      weight-average of the per-depth components (the exact entropy of the mixed attention
      would need the full per-candidate 5D tensor, which the tables do not keep);
    - `reward = w_e·entropy + w_f·focus + w_a·alignment`, in [0, 1].

    At a one-hot `w` every quantity equals `MAW/DepthSelection-v3`'s for that depth.
    `info["best_depth_reward"]` is the best *one-hot* mixture (DepthSelection's oracle): a blend
    can beat it, so `info["regret"] = best_depth_reward - reward` can be negative.
    `info["action"]` is the raw action.

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
    >>> env = gym.make("MAW/SoftDepthMixture-v3", tables=Tables.synthetic(depth=4))
    >>> env.action_space
    Box(0.0, 1.0, (4,), float32)
    >>> _ = env.reset(seed=0, options={"query_index": 3})
    >>> _, reward, terminated, _, info = env.step(np.array([0.5, 0.5, 0, 0], np.float32))
    >>> terminated, 0.0 <= reward <= 1.0
    (True, True)

    ## Registered Configurations

    - `MAW/SoftDepthMixture-v3`: `reward_weights="default"`.

    Native vector env: :class:`maw_gym.envs.vector.SoftDepthMixtureVectorEnv`.

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

    variant_class = SoftDepthMixtureVariant
