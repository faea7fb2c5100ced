"""Shared pieces of every router: action-space specs, the MLP policy, pinned rollouts, save/load.

Every router only ever sees observations (the Gymnasium contract); the env variants differ in
their action space, which :class:`ActionSpec` reduces to three kinds:

| kind             | Gymnasium space         | policy distribution            | inference action |
|------------------|-------------------------|--------------------------------|------------------|
| ``discrete``     | ``Discrete(D)``         | Categorical over D             | argmax           |
| ``multi_discrete`` | ``MultiDiscrete([D]*H)`` | H Categoricals (logp summed) | argmax per head  |
| ``simplex``      | ``Box(0, 1, (D,))``     | Dirichlet over D               | Dirichlet mean   |
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import yaml
from torch import nn
from torch.distributions import Categorical, Dirichlet, Distribution, Independent

from maw_gym.cache import CORRUPT_ERRORS, atomic_path, make_dirs, read_json, write_json
from maw_gym.envs.vector import MAWVectorEnv
from maw_gym.tables import Tables
from maw_gym_agents.base import Router

ActionKind = Literal["discrete", "multi_discrete", "simplex"]
ROUTER_FILE = "router.json"
MAX_JOINT_ACTIONS = 4096
"""Joint actions per query up to which :func:`enumerate_returns` plays them all."""
WEIGHTS_FILE = "policy.pt"
HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"


def load_hyperparams(name: str, env_id: str) -> dict[str, Any]:
    """The ``env_id`` entry of ``hyperparams/{name}.yml`` (else its ``default`` entry), as a
    fresh dict; files follow rl-baselines3-zoo's layout, one entry per env id."""
    path = HYPERPARAMS_DIR / f"{name}.yml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no hyperparameter file for {name!r}")
    entries = yaml.safe_load(path.read_text()) or {}
    entry = entries.get(env_id, entries.get("default"))
    if entry is None:
        raise KeyError(f"{path}: no entry for env id {env_id!r} and no 'default' entry")
    return dict(entry)


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


def attention_maps(observations: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(B, D, H, P·P) attention maps from flat or structured observations; flat extras after
    the D·H·P·P map values (e.g. a layerwise step indicator) are dropped."""
    depth, heads, pool = shape
    flat = np.asarray(observations).reshape(len(observations), -1)
    return flat[:, : depth * heads * pool * pool].reshape(-1, depth, heads, pool * pool)


def write_router_json(directory: Path, router_class: type, config: dict[str, Any]) -> None:
    """``router.json``: the class :func:`load_router` dispatches to, and its constructor config."""
    payload = {"class": f"{router_class.__module__}:{router_class.__qualname__}", **config}
    write_json(Path(directory) / ROUTER_FILE, payload)


def read_router_json(directory: Path) -> dict[str, Any]:
    path = Path(directory) / ROUTER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no router.json; expected a directory written by save()")
    config = read_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def save_state(directory: Path, module: nn.Module) -> None:
    with atomic_path(Path(directory) / WEIGHTS_FILE) as tmp:
        torch.save(module.state_dict(), tmp)


def load_state(directory: Path, module: nn.Module) -> None:
    """Load ``policy.pt`` into ``module``; a corrupt file, or weights of another shape than
    ``router.json`` describes, is a ``ValueError`` naming the file."""
    path = Path(directory) / WEIGHTS_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; the router directory is incomplete") from None
    except CORRUPT_ERRORS as error:
        reason = str(error).splitlines()[0]
        raise ValueError(f"{path}: not the weights router.json describes ({reason})") from None


TRUST_WARNING = (
    "warning: --trust-routers loads the saved routers, which unpickles code from their files "
    "(SB3 zips, RLlib checkpoints, torch.load(weights_only=False)); do this only for "
    "directories you trust"
)
#: The classes ``router.json`` may name, and whether loading one unpickles code from the
#: router's folder (SB3 zips and RLlib checkpoints do; the others read JSON and weights-only
#: tensors). Checked before anything is imported: a folder from someone else named a module
#: that was imported before the class was refused (issue 22).
ROUTER_CLASSES: dict[str, bool] = {
    "maw_gym_agents.common:PolicyRouter": False,
    "maw_gym_agents.heuristics:RandomRouter": False,
    "maw_gym_agents.heuristics:FixedDepthRouter": False,
    "maw_gym_agents.heuristics:ScoreRouter": False,
    "maw_gym_agents.heuristics:LookupRouter": False,
    "maw_gym_agents.supervised:SupervisedRouter": False,
    "maw_gym_agents.sb3:SB3Router": True,
    "maw_gym_agents.rllib:RLlibRouter": True,
}


def load_router(directory: Path | str, allow_pickle: bool = False) -> Router:
    """Load any saved router: ``router.json`` names its class, one of :data:`ROUTER_CLASSES`.

    ``allow_pickle``: also load the routers whose files are unpickled (SB3, RLlib), which runs
    whatever code those files hold; only for folders you trust (``--trust-routers``).
    """
    path = Path(directory) / ROUTER_FILE
    name = read_router_json(directory).get("class")
    if not isinstance(name, str) or name not in ROUTER_CLASSES:
        raise ValueError(
            f"{path}: class {name!r} is not one of maw-gym's routers {sorted(ROUTER_CLASSES)}"
        )
    if ROUTER_CLASSES[name] and not allow_pickle:
        raise ValueError(
            f"{path}: a {name.rpartition(':')[2]} is loaded by unpickling its files, which runs "
            "any code they hold; pass --trust-routers if you trust this folder"
        )
    module_name, _, class_name = name.partition(":")
    router_class = getattr(importlib.import_module(module_name), class_name)
    return router_class.load(Path(directory))


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


@dataclass
class Episodes:
    """One episode per sub-env, from pinned queries (steps after an episode's end are masked)."""

    observations: list[np.ndarray]
    """Per step t: (n, *obs_shape) observations the actions were chosen on."""
    actions: list[np.ndarray]
    """Per step t: (n, ...) actions taken."""
    valid: np.ndarray
    """(T, n) True where step t belongs to sub-env i's first episode."""
    returns: np.ndarray
    """(n,) undiscounted sum of rewards of each sub-env's episode."""
    final_info: dict[str, np.ndarray]
    """Info of each episode's last step, keyed like the env's info: (n,) arrays."""


def make_vector_env(env_id: str, num_envs: int, tables: Tables) -> MAWVectorEnv:
    """The env's native vector env over ``tables`` (SAME_STEP autoreset, pinnable queries)."""
    from maw_gym import registered_env_id  # (importing maw_gym registers the MAW/ ids)

    registered_env_id(env_id, "env_id")  # a "module:" prefix would make gymnasium import it
    envs = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", tables=tables
    )
    if not isinstance(envs, MAWVectorEnv):
        raise ValueError(f"{env_id!r} is not a MAW env id (its vector env is {type(envs)})")
    return envs


@dataclass(frozen=True)
class EnvLayout:
    """What a router must fit for one env variant on one set of tables."""

    spec: ActionSpec
    horizon: int
    """Decisions per episode."""
    observation_space: gym.Space


def env_layout(env_id: str, tables: Tables) -> EnvLayout:
    """The action spec, episode length and observation space of ``env_id`` over ``tables``."""
    envs = make_vector_env(env_id, 1, tables)
    variant = envs.variant
    envs.close()
    return EnvLayout(
        ActionSpec.from_space(variant.action_space), variant.horizon, variant.observation_space
    )


def _final_info_row(infos: dict[str, Any], index: int) -> dict[str, Any]:
    # SAME_STEP autoreset: a finished sub-env's own info sits under "final_info"; the top level
    # already holds the next episode's reset info.
    source = infos.get("final_info", infos)
    return {
        key: np.asarray(value)[index]
        for key, value in source.items()
        if not key.startswith("_") and np.ndim(value) >= 1
    }


def run_episodes(
    envs: gym.vector.VectorEnv,
    query_index: np.ndarray,
    choose: Callable[[np.ndarray, int], np.ndarray],
    seed: int | None = None,
    max_steps: int = 64,
) -> Episodes:
    """Play exactly one episode per sub-env, sub-env i pinned to query ``query_index[i]``.

    ``choose(observations, t)`` returns the actions for step t. Steps after a sub-env's episode
    ended (it autoresets into a new one) are stepped but masked out of everything returned.
    """
    n = envs.num_envs
    if len(query_index) != n:
        raise ValueError(f"query_index has {len(query_index)} entries, the vector env {n}")
    obs, _ = envs.reset(seed=seed, options={"query_index": np.asarray(query_index)})
    done = np.zeros(n, dtype=bool)
    returns = np.zeros(n, dtype=np.float64)
    observations, actions, valid = [], [], []
    final: dict[int, dict[str, Any]] = {}
    for t in range(max_steps):
        action = choose(obs, t)
        observations.append(obs)
        actions.append(action)
        valid.append(~done)
        obs, reward, terminated, truncated, infos = envs.step(action)
        returns += np.where(done, 0.0, reward)
        ended = (terminated | truncated) & ~done
        for i in np.flatnonzero(ended):
            final[int(i)] = _final_info_row(infos, int(i))
        done |= ended
        if done.all():
            break
    else:
        raise RuntimeError(f"episodes did not end within {max_steps} steps")
    keys = set.intersection(*(set(row) for row in final.values())) if final else set()
    final_info = {k: np.array([final[i][k] for i in range(n)]) for k in sorted(keys)}
    return Episodes(observations, actions, np.array(valid), returns, final_info)


@dataclass
class JointReturns:
    """Every query's return under every joint action (exhaustive, so exact)."""

    actions: np.ndarray
    """(J, T, *action_shape): the joint actions, one per step T of an episode."""
    returns: np.ndarray
    """(N, J): return of query i under joint action j."""


def enumerate_returns(
    env_id: str,
    tables: Tables,
    max_joint_actions: int = MAX_JOINT_ACTIONS,
    chunk: int = 8192,
) -> JointReturns:
    """Return of every (query, joint action) pair, played through the native vector env.

    Works for ``Discrete`` (one decision per step, any fixed episode length T: D**T sequences)
    and single-step ``MultiDiscrete`` (D**H head assignments). Used for the per-query oracle,
    the exact expectation of the uniform random policy and the fixed-depth baselines.
    """
    layout = env_layout(env_id, tables)
    spec, steps = layout.spec, layout.horizon
    if spec.kind == "simplex" or (spec.kind == "multi_discrete" and steps > 1):
        raise ValueError(f"{env_id}: joint actions of a {spec.kind} space cannot be enumerated")
    width = steps * spec.slots
    if spec.choices**width > max_joint_actions:
        raise ValueError(
            f"{env_id}: {spec.choices}**{width} joint actions exceed max_joint_actions="
            f"{max_joint_actions}; enumeration is only for small action spaces"
        )
    grid = np.array(list(itertools.product(range(spec.choices), repeat=width)), dtype=np.int64)
    joint = grid.reshape(len(grid), steps, *((spec.slots,) if spec.slots > 1 else ()))
    n, j = tables.num_queries, len(joint)
    pairs_query = np.repeat(np.arange(n), j)
    pairs_joint = np.tile(np.arange(j), n)
    size = min(chunk, n * j)
    envs = make_vector_env(env_id, size, tables)
    returns = np.empty(n * j)
    for start in range(0, n * j, size):
        rows = np.arange(start, start + size) % (n * j)  # the last chunk wraps round (padding)
        choice = joint[pairs_joint[rows]]
        episodes = run_episodes(envs, pairs_query[rows], lambda obs, t, c=choice: c[:, t])
        keep = min(size, n * j - start)
        returns[start : start + keep] = episodes.returns[:keep]
    envs.close()
    return JointReturns(joint, returns.reshape(n, j))
