"""Ceilings: full-information supervised learners, reference rows beside the oracle (issue 18).

A ceiling sees, for every router-train query, the value of *every* depth (the env return, or
NDCG@10 of the routed rerank): the "supervised" full-information reference of the
contextual-bandit bake-off (Bietti, Agarwal & Langford 2021). It regresses each depth's value
on the env's flat observation and acts by the argmax. It is no agent (an agent sees one
depth's reward per try), but it tells the leaderboard's two failures apart: if even this
learner ties best-fixed, the observation holds no routing signal *these learners* can find; if
it beats best-fixed and the agents do not, the agents fail.

| learner | model                                               | chosen on dev                  |
|---------|-----------------------------------------------------|--------------------------------|
| ridge   | closed-form ridge regression, one output per depth  | the penalty λ (a grid, and ∞)  |
| mlp     | one hidden layer (64, ReLU), squared error, Adam    | weight decay and epoch         |

Both start from the constant: λ = ∞ predicts each depth's router-train mean, and the MLP's
output layer starts at zero, so before its first update it predicts the same means; either
acts as the best fixed depth *of router-train* there. A choice is kept only if its dev mean
(of the value its argmax picks, the figure the leaderboard reports) is strictly higher than a
simpler one's. scikit-learn is not used: ridge for every λ is one SVD in numpy, and torch is
already a dependency.

Only one-decision envs (every ``MAW/`` env but ``LayerwiseDepth``) have ceilings: a later
decision's observation depends on the earlier action, which a per-depth regression of the
first observation does not model.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from maw_gym.cache import make_dirs
from maw_gym.tables import Tables
from maw_gym_agents.heuristics import depth_actions, fixed_depth_values
from maw_gym_agents.policy import ObsNormalisation, as_input, torch_threads
from maw_gym_agents.rollouts import env_layout, make_vector_env
from maw_gym_agents.saving import load_state, read_router_json, save_state, write_router_json
from maw_gym_agents.spaces import ActionSpec

#: Leaderboard name → (learner, target metric of :data:`~maw_gym_agents.heuristics.FIXED_METRICS`).
CEILINGS: dict[str, tuple[str, str]] = {
    "ceiling-ridge": ("ridge", "return"),
    "ceiling-mlp": ("mlp", "return"),
    "ceiling-ridge-ndcg": ("ridge", "ndcg"),
    "ceiling-mlp-ndcg": ("mlp", "ndcg"),
}
#: Ridge penalties tried, as multiples of the number of router-train queries; ∞ is the constant.
RIDGE_PENALTIES = (*(10.0**k for k in range(-2, 6)), np.inf)
MLP_WEIGHT_DECAYS = (1e-1, 1e-2, 1e-3, 1e-4)
"""Adam's (L2) weight decay, strongest first: on a dev tie the simpler model stays."""
MLP_HIDDEN = 64
MLP_EPOCHS = 200
MLP_EVAL_EVERY = 10
MLP_LEARNING_RATE = 1e-3


class RewardModel(nn.Module):
    """Flat observation → standardised, clipped → linear or MLP → (B, D) predicted values."""

    def __init__(self, obs_dim: int, depth: int, hidden: tuple[int, ...]):
        super().__init__()
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("target_mean", torch.zeros(depth))
        self.register_buffer("target_scale", torch.ones(()))
        layers: list[nn.Module] = []
        width = obs_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.net = nn.Sequential(*layers, nn.Linear(width, depth))
        nn.init.zeros_(self.net[-1].weight)  # predicts target_mean until it learns
        nn.init.zeros_(self.net[-1].bias)

    def features(self, observations: torch.Tensor) -> torch.Tensor:
        """(B, F) standardised, clipped observations: what the layers see."""
        flat = observations.reshape(observations.shape[0], -1)
        return torch.clamp((flat - self.obs_mean) / self.obs_std, -10.0, 10.0)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(observations)) * self.target_scale + self.target_mean


class CeilingRouter:
    """Acts with the depth of the highest predicted value (every head; one-hot weights)."""

    def __init__(self, name: str, model: RewardModel, spec: ActionSpec, hidden: tuple[int, ...]):
        self.name, self.model, self.spec, self.hidden = name, model, spec, hidden

    @torch.no_grad()
    def predict(self, observations: np.ndarray) -> np.ndarray:
        """(B, D) predicted value of every depth."""
        return self.model(as_input(self.model, observations)).cpu().numpy()

    def act(self, observations: np.ndarray) -> np.ndarray:
        return depth_actions(self.spec, self.predict(observations).argmax(axis=1))

    def save(self, directory: Path) -> None:
        directory = make_dirs(Path(directory))
        save_state(directory, self.model)
        write_router_json(
            directory,
            type(self),
            {
                "name": self.name,
                "obs_dim": int(self.model.obs_mean.numel()),
                "depth": int(self.model.target_mean.numel()),
                "hidden": list(self.hidden),
                "action": asdict(self.spec),
            },
        )

    @classmethod
    def load(cls, directory: Path) -> CeilingRouter:
        config = read_router_json(directory)
        hidden = tuple(config["hidden"])
        model = RewardModel(config["obs_dim"], config["depth"], hidden)
        load_state(directory, model)
        return cls(config["name"], model, ActionSpec(**config["action"]), hidden)


@dataclass(frozen=True)
class SplitValues:
    """One split as a ceiling learns from it: observations and every depth's value."""

    observations: np.ndarray
    """(N, F) the env's first observation of each query, flat."""
    values: np.ndarray
    """(N, D) each depth's value (the target metric) per query."""

    def value_of(self, predictions: np.ndarray) -> float:
        """Mean value of the depths whose predicted value is highest (first on ties)."""
        chosen = np.asarray(predictions).argmax(axis=1)
        return float(self.values[np.arange(len(chosen)), chosen].mean())


def first_observations(env_id: str, tables: Tables) -> np.ndarray:
    """(N, F) the observation the env shows for each query of ``tables`` (pinned resets)."""
    envs = make_vector_env(env_id, tables.num_queries, tables)
    observations, _ = envs.reset(seed=0, options={"query_index": np.arange(tables.num_queries)})
    envs.close()
    return np.asarray(observations, dtype=np.float64).reshape(tables.num_queries, -1)


def split_of(env_id: str, tables: Tables, target: str) -> SplitValues:
    return SplitValues(
        first_observations(env_id, tables), fixed_depth_values(env_id, tables).of(target)
    )


def _empty_model(train: SplitValues, hidden: tuple[int, ...]) -> RewardModel:
    """A model standardising like ``train`` and predicting its per-depth means."""
    model = RewardModel(train.observations.shape[1], train.values.shape[1], hidden)
    stats = ObsNormalisation.of(train.observations)
    model.obs_mean.copy_(torch.as_tensor(stats.mean))
    model.obs_std.copy_(torch.as_tensor(stats.std))
    model.target_mean.copy_(torch.as_tensor(train.values.mean(axis=0), dtype=torch.float32))
    return model


@torch.no_grad()
def _features(model: RewardModel, observations: np.ndarray) -> np.ndarray:
    """(N, F) the model's features of ``observations``, in float64 for the ridge algebra."""
    return model.features(as_input(model, observations)).double().numpy()


def fit_ridge(train: SplitValues, dev: SplitValues) -> tuple[RewardModel, dict[str, Any]]:
    """Ridge of each depth's value on the features, λ chosen on dev (module docstring).

    With the SVD ``X = U S Vᵀ`` of the centred features, ``W(λ) = V diag(s / (s² + λ)) Uᵀ Y``
    for every λ from one decomposition (the intercept is the per-depth train mean).
    """
    model = _empty_model(train, ())
    x = _features(model, train.observations)
    x_mean = x.mean(axis=0)
    centred_y = train.values - train.values.mean(axis=0)
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    projected = u.T @ centred_y  # (rank, D)
    x_dev = _features(model, dev.observations) - x_mean
    best: tuple[float, float, np.ndarray] | None = None
    for multiple in sorted(RIDGE_PENALTIES, reverse=True):  # simplest first: ties keep it
        penalty = multiple * len(x)
        shrink = np.zeros_like(s) if np.isinf(penalty) else s / (s**2 + penalty)
        weights = vt.T @ (shrink[:, None] * projected)  # (F, D)
        value = dev.value_of(x_dev @ weights + train.values.mean(axis=0))
        if best is None or value > best[1]:
            best = (multiple, value, weights)
    assert best is not None  # the grid is not empty
    multiple, value, weights = best
    with torch.no_grad():
        model.net[-1].weight.copy_(torch.as_tensor(weights.T, dtype=torch.float32))
        model.net[-1].bias.copy_(torch.as_tensor(-(x_mean @ weights), dtype=torch.float32))
    return model, {"penalty_per_query": float(multiple), "dev_mean": value}


@torch_threads(1)
def fit_mlp(
    train: SplitValues, dev: SplitValues, seed: int = 0
) -> tuple[RewardModel, dict[str, Any]]:
    """The MLP, full-batch Adam on squared error; weight decay and epoch chosen on dev."""
    x = torch.as_tensor(train.observations, dtype=torch.float32)
    centred = train.values - train.values.mean(axis=0)
    scale = float(max(centred.std(), 1e-12))
    targets = torch.as_tensor(centred / scale, dtype=torch.float32)
    best: tuple[float, dict[str, Any], dict[str, torch.Tensor]] | None = None
    for decay in MLP_WEIGHT_DECAYS:
        torch.manual_seed(seed)
        model = _empty_model(train, (MLP_HIDDEN,))
        model.target_scale.fill_(scale)
        features = model.features(x)  # fixed: the statistics are buffers, not parameters
        optimizer = torch.optim.Adam(model.parameters(), lr=MLP_LEARNING_RATE, weight_decay=decay)
        for epoch in range(MLP_EPOCHS + 1):
            if epoch % MLP_EVAL_EVERY == 0:
                with torch.no_grad():
                    value = dev.value_of(model(as_input(model, dev.observations)).numpy())
                if best is None or value > best[0]:
                    choice = {"weight_decay": decay, "epochs": epoch, "dev_mean": value}
                    best = (value, choice, copy.deepcopy(model.state_dict()))
            if epoch == MLP_EPOCHS:
                break
            loss = nn.functional.mse_loss(model.net(features), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert best is not None  # epoch 0 is always evaluated
    model = _empty_model(train, (MLP_HIDDEN,))
    model.load_state_dict(best[2])
    return model, best[1]


def has_ceiling(env_id: str) -> bool:
    """Whether ``env_id`` takes one decision per episode, which ceilings need; read from its
    registered class, without building tables."""
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    import maw_gym  # noqa: F401  (registers the MAW/ ids)

    return load_env_creator(gym.spec(env_id).entry_point).variant_class.horizon == 1


def fit_ceiling(
    name: str, env_id: str, train_tables: Tables, dev_tables: Tables, seed: int = 0
) -> tuple[CeilingRouter, dict[str, Any]]:
    """The ceiling ``name`` (a key of :data:`CEILINGS`) fitted on router-train with every
    depth's value, chosen on dev; returns it and what dev chose."""
    if name not in CEILINGS:
        raise ValueError(f"unknown ceiling {name!r}; choose one of {sorted(CEILINGS)}")
    layout = env_layout(env_id, train_tables)
    if layout.horizon != 1:
        raise ValueError(
            f"{name}: {env_id} takes {layout.horizon} decisions per episode; ceilings are "
            "defined for one-decision envs only (leave them out with --policies)"
        )
    learner, target = CEILINGS[name]
    train, dev = split_of(env_id, train_tables, target), split_of(env_id, dev_tables, target)
    if learner == "ridge":
        model, choice = fit_ridge(train, dev)
    else:
        model, choice = fit_mlp(train, dev, seed)
    hidden = () if learner == "ridge" else (MLP_HIDDEN,)
    router = CeilingRouter(name, model, layout.spec, hidden)
    return router, {"learner": learner, "target": target, **choice}
