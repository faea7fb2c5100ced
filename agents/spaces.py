"""What a router reads and writes: attention maps from observations, and the action spaces of
the env variants reduced to three kinds (:class:`ActionSpec`):

| kind             | Gymnasium space         | policy distribution            | inference action |
|------------------|-------------------------|--------------------------------|------------------|
| ``discrete``     | ``Discrete(D)``         | Categorical over D             | argmax           |
| ``multi_discrete`` | ``MultiDiscrete([D]*H)`` | H Categoricals (logp summed) | argmax per head  |
| ``simplex``      | ``Box(0, 1, (D,))``     | Dirichlet over D               | Dirichlet mean   |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Dirichlet, Distribution, Independent

ActionKind = Literal["discrete", "multi_discrete", "simplex"]


@dataclass(frozen=True)
class ActionSpec:
    """What a router must output for one env variant (see the module docstring)."""

    kind: ActionKind
    choices: int
    slots: int = 1

    @classmethod
    def from_space(cls, space: gym.Space) -> ActionSpec:
        if isinstance(space, gym.spaces.Discrete):
            return cls("discrete", int(space.n))
        if isinstance(space, gym.spaces.MultiDiscrete):
            nvec = np.asarray(space.nvec).ravel()
            if not np.all(nvec == nvec[0]):
                raise ValueError(f"MultiDiscrete action space {space}: expected equal sizes [D]*H")
            return cls("multi_discrete", int(nvec[0]), int(nvec.size))
        if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            return cls("simplex", int(space.shape[0]))
        raise ValueError(
            f"unsupported action space {space}: expected Discrete, MultiDiscrete or Box(D,)"
        )

    @property
    def num_params(self) -> int:
        return self.choices * self.slots

    def distribution(self, params: torch.Tensor) -> Distribution:
        """The policy's distribution from ``params`` (B, slots * choices)."""
        if self.kind == "discrete":
            return Categorical(logits=params)
        if self.kind == "multi_discrete":
            return Independent(Categorical(logits=params.view(-1, self.slots, self.choices)), 1)
        # softplus keeps the concentration positive; the floor keeps log-probs finite.
        return Dirichlet(nn.functional.softplus(params) + 1e-2)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        """The deterministic action used at inference."""
        if self.kind == "discrete":
            return params.argmax(-1)
        if self.kind == "multi_discrete":
            return params.view(-1, self.slots, self.choices).argmax(-1)
        return self.distribution(params).mean

    def random_actions(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` uniform random actions: depths, per-head depths or Dirichlet(1) weights
        (the normalised score's zero)."""
        if self.kind == "discrete":
            return rng.integers(self.choices, size=count)
        if self.kind == "multi_discrete":
            return rng.integers(self.choices, size=(count, self.slots))
        return rng.dirichlet(np.ones(self.choices), size=count).astype(np.float32)

    def from_depth_scores(self, scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """Actions from per-head depth scores ``(B, H or 1, D)``: score-based routers' output.

        Hard kinds take the argmax (of the head mean, or per head); ``simplex`` takes a softmax
        of the head mean, as the seeds' training-free weighting strategies do.
        """
        if self.kind == "multi_discrete":
            # one score row for all heads (B, 1, D) gives every head the same depth
            return np.broadcast_to(scores.argmax(-1), (len(scores), self.slots)).copy()
        mean = scores.mean(axis=1)  # (B, D)
        if self.kind == "discrete":
            return mean.argmax(-1)
        logits = mean / temperature
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        return (weights / weights.sum(-1, keepdims=True)).astype(np.float32)


def attention_maps(observations: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(B, D, H, P·P) attention maps from flat or structured observations; flat extras after
    the D·H·P·P map values (e.g. a layerwise step indicator) are dropped."""
    depth, heads, pool = shape
    flat = np.asarray(observations).reshape(len(observations), -1)
    return flat[:, : depth * heads * pool * pool].reshape(-1, depth, heads, pool * pool)
