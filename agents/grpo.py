"""Native GRPO (DeepSeekMath, Shao et al. 2024, §4.1): group-relative advantages, no critic.

Reads top to bottom like CleanRL's ppo.py. One iteration:

1. sample ``queries_per_batch`` training queries; pin each to ``group_size`` sub-envs of the
   native vector env through ``reset(options={"query_index": ...})``;
2. play one whole episode per sub-env with the behaviour (old) policy: a group is G complete
   trajectories sampled from π_old on the same query (1 step for the bandit variants, one
   decision per layer for ``MAW/LayerwiseDepth``), its outcome the episode's return;
3. optimise :func:`grpo_loss` for ``update_epochs`` epochs over the batch. As DeepSeekMath does
   per token, the ratio and the k3 KL are taken per step and averaged over the trajectory's
   steps (outcome supervision: every step of a trajectory shares its advantage; over heads of a
   ``MultiDiscrete`` action the log-probabilities add up, one step being one joint action);
4. every ``ref_refresh_every`` iterations the frozen reference policy is set to the current one.

``enumerate_actions`` (the ``grpo-enum`` agent) is a named variant, not DeepSeekMath: on a
``Discrete(D)`` space with ``group_size >= D`` the group's first actions are every depth once
instead of samples. Its objective weighs every action's advantage equally instead of by its
probability under π_old, and its k3 term averages over all actions rather than samples from π,
so it is no unbiased KL estimate; it is an exhaustive, lower-variance group on a bandit.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from maw_gym.device import resolve_device
from maw_gym.tables import Tables
from maw_gym_agents.curve import DevCurve
from maw_gym_agents.policy import MLPPolicy, PolicyRouter, as_input, torch_threads
from maw_gym_agents.rollouts import Episodes, env_layout, make_vector_env, run_episodes
from maw_gym_agents.spaces import ActionSpec

SCALE_REWARDS = ("group", "batch", "none")


def _check_loss_inputs(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    rewards: torch.Tensor,
    step_mask: torch.Tensor,
    scale_rewards: str,
) -> None:
    """Bad shapes or options fail here, naming the tensor, before any arithmetic broadcasts."""
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (B, G) with G >= 2, got shape {tuple(rewards.shape)}")
    for name, tensor in (("logp", logp), ("old_logp", old_logp), ("ref_logp", ref_logp)):
        if tensor.shape != step_mask.shape or tensor.shape[:2] != rewards.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}, rewards {tuple(rewards.shape)}, "
                f"step_mask {tuple(step_mask.shape)}"
            )
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards={scale_rewards!r}; expected one of {SCALE_REWARDS}")


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    rewards: torch.Tensor,
    clip_eps: float = 0.2,
    beta: float = 0.04,
    eps: float = 1e-4,
    scale_rewards: str = "group",
    step_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO objective to minimise; ``rewards`` is (B groups, G members).

    ``logp``, ``old_logp`` and ``ref_logp`` are (B, G) for one-step episodes, or (B, G, T) per
    step with ``step_mask`` (B, G, T) marking the steps each trajectory took (DeepSeekMath's
    per-token form: the per-step terms are averaged over a trajectory's steps, 1/|o_i|).

    Advantages are ``(r − mean_group) / (std + eps)`` with the unbiased (Bessel) std of the group
    (``"batch"``: of all rewards; ``"none"``: no division). Per element the loss is
    ``−min(ratio·A, clip(ratio, 1−ε, 1+ε)·A) + β·k3`` with ``ratio = exp(logp − old_logp)`` and
    the k3 estimator ``k3 = exp(ref_logp − logp) − (ref_logp − logp) − 1`` (Schulman 2020) of
    KL(π‖π_ref); the loss is the mean over all B·G elements. A group whose rewards are all equal
    has zero advantage, so it contributes no policy gradient (only the KL term).
    """
    if step_mask is None:
        logp, old_logp, ref_logp = logp[..., None], old_logp[..., None], ref_logp[..., None]
        step_mask = torch.ones_like(logp)
    _check_loss_inputs(logp, old_logp, ref_logp, rewards, step_mask, scale_rewards)
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_rewards == "group":
        advantages = centred / (rewards.std(dim=1, keepdim=True, unbiased=True) + eps)
    elif scale_rewards == "batch":
        advantages = centred / (rewards.std(unbiased=True) + eps)
    else:
        advantages = centred
    advantages = advantages.detach()[..., None]  # (B, G, 1): steps share their outcome's
    log_ratio = logp - old_logp.detach()
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    surrogate = torch.minimum(ratio * advantages, clipped * advantages)
    ref_log_ratio = ref_logp.detach() - logp
    k3 = torch.exp(ref_log_ratio) - ref_log_ratio - 1.0
    mask = step_mask.to(logp.dtype)
    steps = mask.sum(-1).clamp_min(1.0)

    def trajectory_mean(values: torch.Tensor) -> torch.Tensor:
        """Mean over each trajectory's steps, then over all B·G trajectories."""
        return ((values * mask).sum(-1) / steps).mean()

    loss = trajectory_mean(-surrogate + beta * k3)
    with torch.no_grad():
        zero_std = rewards.max(dim=1).values == rewards.min(dim=1).values
        stats = {
            "loss": float(loss.detach()),
            "policy_loss": float(trajectory_mean(-surrogate)),
            "kl": float(trajectory_mean(k3)),
            "clip_fraction": float(trajectory_mean(((ratio - 1.0).abs() > clip_eps).to(mask))),
            "approx_kl_old": float(trajectory_mean((ratio - 1.0) - log_ratio)),
            "zero_std_fraction": float(zero_std.float().mean()),
            "advantage_abs_mean": float(advantages.abs().mean()),
        }
    return loss, stats


@dataclass
class GRPOConfig:
    """Hyperparameters of :func:`train`; defaults suit the smoke and quick presets."""

    seed: int = 0
    """Seeds torch and the numpy generator that orders the training queries."""
    total_env_steps: int = 20_000
    """Budget in env steps (every sub-env step counts, masked ones included)."""
    queries_per_batch: int = 32
    """B: distinct queries (groups) per iteration."""
    group_size: int = 8
    """G: trajectories per query; at least 2 (the group std needs two samples)."""
    enumerate_actions: bool = False
    """With Discrete(D) and G >= D, the group's first actions are every depth once (G := D):
    the ``grpo-enum`` variant, not DeepSeekMath's sampled groups (see the module docstring)."""
    learning_rate: float = 5e-3
    """Adam learning rate."""
    update_epochs: int = 2
    """Optimisation epochs over each collected batch."""
    minibatches: int = 1
    """Minibatches (of whole groups) per epoch."""
    clip_eps: float = 0.2
    """PPO-style ratio clipping ε."""
    beta: float = 0.04
    """Weight of the k3 KL to the reference policy."""
    eps: float = 1e-4
    """Added to the std when scaling advantages."""
    scale_rewards: str = "group"
    """Advantage scaling: "group" std, "batch" std or "none"."""
    ref_refresh_every: int = 10
    """Iterations between refreshes of the frozen reference policy."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the MLP policy."""
    weight_decay: float = 0.0
    """AdamW weight decay (decoupled): restrains memorising per-query noise in observations."""
    max_grad_norm: float = 1.0
    """Gradient norm clipping."""
    log_dir: str | None = None
    """TensorBoard directory (None: no TensorBoard files)."""
    device: str = "cpu"
    """Where the policy trains and samples: ``auto``, ``cpu`` or ``cuda`` (envs step on CPU;
    the router returned is on CPU)."""


def _as_tensors(episodes: Episodes, spec: ActionSpec) -> tuple[torch.Tensor, ...]:
    steps, n = episodes.valid.shape
    observations = torch.as_tensor(np.stack(episodes.observations), dtype=torch.float32)
    observations = observations.reshape(steps, n, -1)  # (T, n, obs_dim)
    dtype = torch.float32 if spec.kind == "simplex" else torch.long
    actions = torch.as_tensor(np.stack(episodes.actions), dtype=dtype)  # (T, n[, H or D])
    valid = torch.as_tensor(episodes.valid, dtype=torch.float32)  # (T, n)
    return observations, actions, valid


def step_logp(
    policy: MLPPolicy, observations: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every step's action (n, T) and each trajectory's mean entropy (n,).

    ``observations`` (T, n, obs_dim), ``actions`` (T, n, ...), ``valid`` (T, n).
    """
    steps, n = valid.shape
    dist = policy.spec.distribution(policy(observations.reshape(steps * n, -1)))
    logp = dist.log_prob(actions.reshape(steps * n, *actions.shape[2:])).view(steps, n)
    entropy = dist.entropy().view(steps, n)
    count = valid.sum(0).clamp_min(1.0)
    return logp.T, (entropy * valid).sum(0) / count


def _sampler(policy: MLPPolicy, first_actions: np.ndarray | None):
    spec = policy.spec

    @torch.no_grad()
    def choose(observations: np.ndarray, step: int) -> np.ndarray:
        if step == 0 and first_actions is not None:
            return first_actions
        params = policy(as_input(policy, observations))
        action = spec.distribution(params).sample()
        if spec.kind == "simplex":
            # float32 Dirichlet samples can underflow to exactly 0, whose log-density is -inf.
            action = action.clamp_min(1e-6)
            action = action / action.sum(-1, keepdim=True)
        return action.cpu().numpy()

    return choose


def _observation_statistics(envs: Any, num_queries: int, seed: int) -> np.ndarray:
    """First observations of (up to 4096) training queries, from pinned resets (no env steps)."""
    n = envs.num_envs
    rows = []
    for start in range(0, min(num_queries, 4096), n):
        index = np.arange(start, start + n) % num_queries
        obs, _ = envs.reset(seed=seed if start == 0 else None, options={"query_index": index})
        rows.append(obs[: min(n, num_queries - start)])
    return np.concatenate(rows)


@dataclass
class GroupBatch:
    """One iteration's rollouts, grouped: B groups (queries) of G trajectories of T steps."""

    obs: torch.Tensor
    """(T, B·G, obs_dim) observations, sub-env = group · G + member."""
    actions: torch.Tensor
    """(T, B·G, ...) actions taken."""
    valid: torch.Tensor
    """(T, B·G) 1 where the step belongs to the trajectory."""
    rewards: torch.Tensor
    """(B, G) each trajectory's return."""
    mask: torch.Tensor
    """(B, G, T) ``valid`` laid out by group."""
    old_logp: torch.Tensor
    """(B, G, T) per-step log-probabilities under the behaviour policy π_old."""
    ref_logp: torch.Tensor
    """(B, G, T) per-step log-probabilities under the frozen reference policy."""

    def zero_std_fraction(self) -> float:
        """Share of groups whose members all scored the same: they teach nothing
        (DeepSeekMath §4.1)."""
        rewards = self.rewards
        return float((rewards.max(dim=1).values == rewards.min(dim=1).values).float().mean())


def collect(
    envs: Any,
    policy: MLPPolicy,
    reference: MLPPolicy,
    queries: np.ndarray,
    group_size: int,
    first_actions: np.ndarray | None,
    seed: int | None,
) -> tuple[GroupBatch, Episodes]:
    """Play G trajectories on each of ``queries`` with π_old (= ``policy`` now) and score them
    under π_old and the reference."""
    episodes = run_episodes(
        envs, np.repeat(queries, group_size), _sampler(policy, first_actions), seed=seed
    )
    device = next(policy.parameters()).device
    b_obs, b_actions, b_valid = (t.to(device) for t in _as_tensors(episodes, policy.spec))
    by_group = (len(queries), group_size, b_valid.shape[0])  # (B, G, T)
    with torch.no_grad():
        b_old_logp = step_logp(policy, b_obs, b_actions, b_valid)[0].reshape(by_group)
        b_ref_logp = step_logp(reference, b_obs, b_actions, b_valid)[0].reshape(by_group)
    batch = GroupBatch(
        obs=b_obs,
        actions=b_actions,
        valid=b_valid,
        rewards=torch.as_tensor(episodes.returns, dtype=torch.float32, device=device).view(
            by_group[:2]
        ),
        mask=b_valid.T.reshape(by_group),
        old_logp=b_old_logp,
        ref_logp=b_ref_logp,
    )
    return batch, episodes


def update(
    policy: MLPPolicy, optimizer: torch.optim.Optimizer, batch: GroupBatch, config: GRPOConfig
) -> dict[str, float]:
    """``update_epochs`` passes of :func:`grpo_loss` over minibatches of whole groups; the
    loss statistics averaged over minibatches, and the policy's mean entropy."""
    groups, group_size, steps = batch.mask.shape
    group_order = torch.randperm(groups)
    minibatch_size = max(1, groups // config.minibatches)
    epoch_stats: list[dict[str, float]] = []
    entropies: list[float] = []
    for _ in range(config.update_epochs):
        for first in range(0, groups, minibatch_size):
            mb_groups = group_order[first : first + minibatch_size]
            # members of the chosen groups, in sub-env order (sub-env = group * G + member)
            mb_envs = (mb_groups[:, None] * group_size + torch.arange(group_size)).reshape(-1)
            logp, entropy = step_logp(
                policy, batch.obs[:, mb_envs], batch.actions[:, mb_envs], batch.valid[:, mb_envs]
            )
            loss, stats = grpo_loss(
                logp.reshape(-1, group_size, steps),
                batch.old_logp[mb_groups],
                batch.ref_logp[mb_groups],
                batch.rewards[mb_groups],
                clip_eps=config.clip_eps,
                beta=config.beta,
                eps=config.eps,
                scale_rewards=config.scale_rewards,
                step_mask=batch.mask[mb_groups],
            )
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            epoch_stats.append(stats)
            entropies.append(float(entropy.detach().mean()))
    averaged = {
        f"losses/{key}": float(np.mean([s[key] for s in epoch_stats]))
        for key in ("loss", "policy_loss", "kl", "clip_fraction", "approx_kl_old")
    }
    return {"charts/entropy": float(np.mean(entropies)), **averaged}


@torch_threads(1)
def train(
    env_id: str,
    tables: Tables,
    config: GRPOConfig,
    curve: DevCurve | None = None,
    progress: bool = True,
) -> tuple[PolicyRouter, list[dict[str, float]]]:
    """Train a GRPO router on ``env_id`` over ``tables``; returns it and per-iteration metrics.

    ``curve`` (if given) is called after every iteration (its dev points also land in the
    metrics as ``eval/mean_return``)."""
    if config.group_size < 2:
        raise ValueError(f"GRPOConfig.group_size={config.group_size}: GRPO needs groups of >= 2")
    torch.manual_seed(config.seed)
    layout = env_layout(env_id, tables)
    spec, obs_dim = layout.spec, int(np.prod(layout.observation_space.shape))
    enumerate_first = (
        config.enumerate_actions and spec.kind == "discrete" and config.group_size >= spec.choices
    )
    group_size = spec.choices if enumerate_first else config.group_size
    batch_groups = config.queries_per_batch
    envs = make_vector_env(env_id, batch_groups * group_size, tables)
    first_actions = np.tile(np.arange(group_size), batch_groups) if enumerate_first else None

    device = resolve_device(config.device)
    policy = MLPPolicy(obs_dim, spec, config.hidden)
    policy.set_normalisation(_observation_statistics(envs, tables.num_queries, config.seed))
    policy.to(device)
    reference = copy.deepcopy(policy).requires_grad_(False)
    optimizer = torch.optim.AdamW(
        policy.parameters(), lr=config.learning_rate, eps=1e-5, weight_decay=config.weight_decay
    )
    router = PolicyRouter("grpo-enum" if enumerate_first else "grpo", policy, config.hidden)
    writer = _tensorboard(config)

    metrics: list[dict[str, float]] = []
    batches = _query_batches(np.random.default_rng(config.seed), tables.num_queries, batch_groups)
    env_steps, iteration, start_time = 0, 0, time.perf_counter()
    bar = tqdm(total=config.total_env_steps, desc="grpo", unit="step", disable=not progress)
    while env_steps < config.total_env_steps:
        queries, seed = next(batches), config.seed if iteration == 0 else None
        batch, episodes = collect(envs, policy, reference, queries, group_size, first_actions, seed)
        env_steps += episodes.valid.size
        bar.update(episodes.valid.size)
        losses = update(policy, optimizer, batch, config)
        iteration += 1
        if iteration % config.ref_refresh_every == 0:
            reference.load_state_dict(policy.state_dict())

        record = {
            "iteration": float(iteration),
            "env_steps": float(env_steps),
            "charts/mean_return": float(episodes.returns.mean()),
            "charts/steps_per_second": env_steps / (time.perf_counter() - start_time),
            "charts/zero_std_fraction": batch.zero_std_fraction(),
            **losses,
        }
        dev_return = curve(router, env_steps) if curve is not None else None
        if dev_return is not None:
            record["eval/mean_return"] = dev_return
            bar.set_postfix(dev_return=f"{dev_return:.4f}")
        metrics.append(record)
        if writer is not None:
            for key, value in record.items():
                if "/" in key:
                    writer.add_scalar(key, value, env_steps)
    bar.close()
    envs.close()
    if writer is not None:
        writer.close()
    policy.cpu()
    return router, metrics


def _query_batches(rng: np.random.Generator, num_queries: int, size: int) -> Iterator[np.ndarray]:
    """Batches of ``size`` queries from shuffled passes over the training split, so every
    query is seen equally often."""
    order = np.empty(0, dtype=np.int64)
    while True:
        while len(order) < size:
            order = np.concatenate([order, rng.permutation(num_queries)])
        batch, order = order[:size], order[size:]
        yield batch


def _tensorboard(config: GRPOConfig) -> Any:
    """A TensorBoard writer with the config as text, or None without ``log_dir``."""
    if config.log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(config.log_dir)
    writer.add_text("config", str(asdict(config)))
    return writer
