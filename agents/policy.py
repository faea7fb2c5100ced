"""The MLP policy every native agent trains, its observation normalisation, and the router
that acts with it (:class:`PolicyRouter`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from maw_gym.cache import atomic_path, make_dirs
from maw_gym_agents.saving import load_state, read_router_json, save_state, write_router_json
from maw_gym_agents.spaces import ActionSpec


@dataclass(frozen=True)
class ObsNormalisation:
    """Fixed ``clip((obs − mean) / std)``: the one observation normalisation of every router.

    Attention maps are tiny probabilities whose informative differences are smaller still, so
    every agent standardises them (SB3 through VecNormalize, whose final statistics become one
    of these). Fixed statistics, unlike RLlib's running ``MeanStdFilter``, live in
    ``env_config`` and beside the router, not in connector state.
    """

    mean: np.ndarray
    std: np.ndarray
    clip: float = 10.0

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        scaled = (np.asarray(observations, dtype=np.float32) - self.mean) / self.std
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "clip": self.clip}

    @classmethod
    def from_dict(cls, stats: dict[str, Any]) -> ObsNormalisation:
        mean = np.asarray(stats["mean"], dtype=np.float32)
        return cls(mean, np.asarray(stats["std"], dtype=np.float32), float(stats["clip"]))

    @classmethod
    def of(cls, samples: np.ndarray, clip: float = 10.0) -> ObsNormalisation:
        """Mean and std (floored at 1e-6) of ``samples`` (B, ...) per feature, in float64."""
        batch = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
        mean, std = batch.mean(0), np.maximum(batch.std(0), 1e-6)
        return cls(mean.astype(np.float32), std.astype(np.float32), clip)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, mean=self.mean, std=self.std, clip=np.asarray(self.clip))

    @classmethod
    def load(cls, path: Path) -> ObsNormalisation:
        with np.load(path) as data:
            return cls.from_dict({key: data[key] for key in data.files})


class MLPPolicy(nn.Module):
    """Flat observation → standardised → MLP (tanh) → distribution parameters.

    The standardisation statistics are buffers, so they are saved with the weights; attention
    maps are tiny probabilities (≈1/P²) whose informative differences are smaller still.
    """

    def __init__(self, obs_dim: int, spec: ActionSpec, hidden: tuple[int, ...] = (64, 64)):
        super().__init__()
        self.spec = spec
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        layers: list[nn.Module] = []
        width = obs_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.Tanh()]
            width = size
        head = nn.Linear(width, spec.num_params)
        # A near-uniform initial policy explores every depth (CleanRL's small actor-head init).
        nn.init.orthogonal_(head.weight, gain=0.01)
        nn.init.zeros_(head.bias)
        self.net = nn.Sequential(*layers, head)

    def set_normalisation(self, observations: np.ndarray) -> None:
        stats = ObsNormalisation.of(observations)
        self.obs_mean.copy_(torch.as_tensor(stats.mean))
        self.obs_std.copy_(torch.as_tensor(stats.std))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        flat = observations.reshape(observations.shape[0], -1)
        return self.net((flat - self.obs_mean) / self.obs_std)


@contextmanager
def torch_threads(count: int = 1) -> Iterator[None]:
    """Run a block with ``count`` torch threads. Tiny policies are fastest on one thread: with
    two on a busy 2-core machine the same GRPO run measured ~30x slower (thread contention)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def as_input(module: torch.nn.Module, observations: np.ndarray) -> torch.Tensor:
    """Observations as float32 on ``module``'s device (a router also acts mid-training, for
    its dev curve, on the device it trains on)."""
    device = next(module.parameters()).device
    return torch.as_tensor(np.asarray(observations), dtype=torch.float32, device=device)


class PolicyRouter:
    """A router backed by :class:`MLPPolicy` (GRPO trains these); acts with the policy's mode."""

    def __init__(self, name: str, policy: MLPPolicy, hidden: tuple[int, ...]):
        self.name = name
        self.policy = policy
        self.hidden = hidden

    @torch.no_grad()
    def act(self, observations: np.ndarray) -> np.ndarray:
        params = self.policy(as_input(self.policy, observations))
        return self.policy.spec.mode(params).cpu().numpy()

    def save(self, directory: Path) -> None:
        directory = make_dirs(Path(directory))
        save_state(directory, self.policy)
        obs_dim = int(self.policy.obs_mean.numel())
        write_router_json(
            directory,
            type(self),
            {
                "name": self.name,
                "obs_dim": obs_dim,
                "hidden": list(self.hidden),
                "action": asdict(self.policy.spec),
            },
        )

    @classmethod
    def load(cls, directory: Path) -> PolicyRouter:
        config = read_router_json(directory)
        hidden = tuple(config["hidden"])
        policy = MLPPolicy(config["obs_dim"], ActionSpec(**config["action"]), hidden)
        load_state(directory, policy)
        return cls(config["name"], policy, hidden)
