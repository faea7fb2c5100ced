"""The seeds' supervised router: pooled attention maps → MLP → depth logits, trained on labels.

Architecture (the MAW write-up's router, DESIGN.md "Supervised router"): the observation
``(D, H, P, P)`` is averaged over depth, adaptive-average-pooled to ``min(8, P)²`` per head,
flattened (``H·min(8, P)²``) and fed to an MLP that outputs D depth logits; argmax at inference.
The ``depth_aware`` variant skips the mean over depth (input ``D·H·min(8, P)²``), since the
depth-averaged map cannot tell depths apart by construction.

Loss: cross-entropy against a label depth plus ``ranking_weight`` × a listwise (ListNet,
Cao et al. 2007) term: cross-entropy between ``softmax(logits)`` and ``softmax(alignment / τ)``
over depths, so depths that rank this query's candidates better get more mass.

Labels (both use qrels, so they exist only on the training split; the router never sees qrels):

- ``rule``: the seeds' query-complexity rule on the number of relevant documents R of the
  query (counted from its ideal gains, which hold its 10 best grades): R < 3 → depth 5,
  R < 10 → depth 15, otherwise depth 25, on the write-up's 32-depth scale, mapped to D depths
  as ``min(D − 1, round(d · D / 32))``.
- ``oracle``: the depth with the highest env reward for that query (exhaustively evaluated in
  ``MAW/DepthSelection-v3`` with the same env kwargs).

It learns from the tables (not RL), but acts on env observations like every router; on
``PerHeadDepth`` every head gets the chosen depth, on ``SoftDepthMixture`` the weights are
``softmax(logits)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from maw_gym.cache import make_dirs
from maw_gym.device import resolve_device
from maw_gym.tables import Tables
from maw_gym_agents.curve import DevCurve
from maw_gym_agents.policy import ObsNormalisation, as_input, torch_threads
from maw_gym_agents.rollouts import enumerate_returns, env_layout
from maw_gym_agents.saving import load_state, read_router_json, save_state, write_router_json
from maw_gym_agents.spaces import ActionSpec

LabelMode = Literal["rule", "oracle"]
LABEL_MODES: tuple[str, ...] = get_args(LabelMode)
RULE_DEPTHS_OF_32 = (5, 15, 25)
"""Focused, medium and broad depths of the seeds' rule, on their 32-depth scale."""


def rule_labels(tables: Tables) -> np.ndarray:
    """(N,) the seeds' complexity-rule depth of each query (see the module docstring)."""
    relevant = (tables.ideal_gains > 0).sum(axis=1)
    bucket = np.where(relevant < 3, 0, np.where(relevant < 10, 1, 2))
    scaled = np.rint(np.array(RULE_DEPTHS_OF_32) * tables.depth / 32).astype(np.int64)
    return np.minimum(scaled, tables.depth - 1)[bucket]


def oracle_labels(tables: Tables) -> np.ndarray:
    """(N,) the depth with the highest DepthSelection reward per query (first on ties)."""
    joint = enumerate_returns("MAW/DepthSelection-v3", tables)
    return joint.actions[joint.returns.argmax(axis=1), 0]


class PooledRouterNet(nn.Module):
    """(B, D·H·P·P) or (B, D, H, P, P) observations → (B, D) depth logits."""

    def __init__(
        self, depth: int, heads: int, pool: int, depth_aware: bool, hidden: tuple[int, ...]
    ):
        super().__init__()
        self.shape = (depth, heads, pool, pool)
        self.depth_aware = depth_aware
        self.pooled = min(8, pool)
        width = (depth if depth_aware else 1) * heads * self.pooled**2
        self.register_buffer("feature_mean", torch.zeros(width))
        self.register_buffer("feature_std", torch.ones(width))
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.mlp = nn.Sequential(*layers, nn.Linear(width, depth))

    def features(self, observations: torch.Tensor) -> torch.Tensor:
        d, h, p, _ = self.shape
        flat = observations.reshape(len(observations), -1)[:, : d * h * p * p]
        x = flat.reshape(-1, *self.shape)  # (B, D, H, P, P); extra flat features dropped
        x = x.reshape(-1, d * h, p, p) if self.depth_aware else x.mean(dim=1)
        x = nn.functional.adaptive_avg_pool2d(x, (self.pooled, self.pooled))
        return x.flatten(1)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        features = self.features(observations)
        return self.mlp((features - self.feature_mean) / self.feature_std)


class SupervisedRouter:
    """Acts with the argmax of :class:`PooledRouterNet`'s depth logits."""

    def __init__(self, name: str, net: PooledRouterNet, spec: ActionSpec, hidden: tuple[int, ...]):
        self.name = name
        self.net = net
        self.spec = spec
        self.hidden = hidden

    @torch.no_grad()
    def depth_logits(self, observations: np.ndarray) -> np.ndarray:
        return self.net(as_input(self.net, observations)).cpu().numpy()

    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.spec.from_depth_scores(self.depth_logits(observations)[:, None, :])

    def save(self, directory: Path) -> None:
        directory = make_dirs(Path(directory))
        save_state(directory, self.net)
        depth, heads, pool, _ = self.net.shape
        write_router_json(
            directory,
            type(self),
            {
                "name": self.name,
                "depth": depth,
                "heads": heads,
                "pool": pool,
                "depth_aware": self.net.depth_aware,
                "hidden": list(self.hidden),
                "action": asdict(self.spec),
            },
        )

    @classmethod
    def load(cls, directory: Path) -> SupervisedRouter:
        config = read_router_json(directory)
        hidden = tuple(config["hidden"])
        net = PooledRouterNet(
            config["depth"], config["heads"], config["pool"], config["depth_aware"], hidden
        )
        load_state(directory, net)
        return cls(config["name"], net, ActionSpec(**config["action"]), hidden)


@dataclass
class SupervisedConfig:
    """Hyperparameters of :func:`train`."""

    seed: int = 0
    """Seeds torch (initialisation, minibatch order)."""
    labels: LabelMode = "oracle"
    """Label mode: "rule" or "oracle" (see the module docstring)."""
    depth_aware: bool = False
    """Keep the depth axis in the input instead of averaging it away."""
    epochs: int = 100
    """Passes over the training queries."""
    batch_size: int = 64
    """Queries per minibatch."""
    learning_rate: float = 3e-3
    """Adam learning rate."""
    weight_decay: float = 1e-4
    """Adam weight decay."""
    hidden: tuple[int, ...] = (64,)
    """Hidden widths of the MLP."""
    ranking_weight: float = 1.0
    """Weight of the listwise ranking term."""
    ranking_temperature: float = 0.1
    """τ of the target distribution softmax(alignment / τ)."""
    device: str = "cpu"
    """Where the network trains: ``auto``, ``cpu`` or ``cuda`` (the router returned is on CPU)."""


@torch_threads(1)
def train(
    env_id: str,
    tables: Tables,
    config: SupervisedConfig,
    curve: DevCurve | None = None,
    progress: bool = True,
) -> tuple[SupervisedRouter, list[dict[str, float]]]:
    """Fit the router on the training tables; returns it and per-epoch metrics.

    A step is one labelled query, so ``curve`` (if given) is called after every epoch with
    ``epoch · N`` steps."""
    if config.labels not in LABEL_MODES:
        raise ValueError(
            f"SupervisedConfig.labels={config.labels!r}; expected one of {LABEL_MODES}"
        )
    torch.manual_seed(config.seed)
    spec = env_layout(env_id, tables).spec
    labels = rule_labels(tables) if config.labels == "rule" else oracle_labels(tables)

    depth, heads, pool = tables.depth, tables.heads, tables.observation.shape[-1]
    device = resolve_device(config.device)
    net = PooledRouterNet(depth, heads, pool, config.depth_aware, config.hidden).to(device)
    # A copy: loaded tables are read-only memory maps.
    observations = torch.tensor(tables.observation, dtype=torch.float32, device=device)
    with torch.no_grad():
        features = net.features(observations)
        stats = ObsNormalisation.of(features.cpu().numpy())
        net.feature_mean.copy_(torch.as_tensor(stats.mean))
        net.feature_std.copy_(torch.as_tensor(stats.std))
    targets = torch.as_tensor(labels, dtype=torch.long, device=device)
    alignment = torch.as_tensor(tables.alignment, dtype=torch.float32, device=device)
    ranking_target = torch.softmax(alignment / config.ranking_temperature, dim=1)
    optimizer = torch.optim.Adam(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    router = SupervisedRouter(
        f"supervised-{config.labels}" + ("-depth" if config.depth_aware else ""),
        net,
        spec,
        config.hidden,
    )
    metrics: list[dict[str, float]] = []
    for epoch in tqdm(range(1, config.epochs + 1), desc=router.name, disable=not progress):
        losses = []
        for mb_index in torch.randperm(tables.num_queries).split(config.batch_size):
            logits = net(observations[mb_index])
            log_probs = torch.log_softmax(logits, dim=1)
            ce = nn.functional.nll_loss(log_probs, targets[mb_index])
            listwise = -(ranking_target[mb_index] * log_probs).sum(1).mean()
            loss = ce + config.ranking_weight * listwise
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        record = {"epoch": float(epoch), "losses/loss": float(np.mean(losses))}
        dev_return = curve(router, epoch * tables.num_queries) if curve is not None else None
        if dev_return is not None:
            record["eval/mean_return"] = dev_return
        metrics.append(record)
    with torch.no_grad():
        accuracy = (net(observations).argmax(1) == targets).float().mean()
    metrics[-1]["charts/train_label_accuracy"] = float(accuracy)
    net.cpu()
    return router, metrics
