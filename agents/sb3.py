"""Stable-Baselines3 baselines (PPO, A2C, DQN) on the MAW envs, configured from YAML.

Hyperparameters live in ``agents/hyperparams/{ppo,a2c,dqn}.yml`` in the rl-baselines3-zoo
layout: one entry per env id, ``default`` for ids without one. Besides the algorithm's own
constructor arguments an entry may hold the zoo's ``n_envs``, ``policy``, ``policy_kwargs`` (a
mapping here, not a Python string to ``eval``) and ``normalize`` (observation normalisation with
``VecNormalize``: attention maps are tiny probabilities whose informative differences are
smaller still, so an unnormalised MLP barely sees them).

Training writes TensorBoard logs under ``out_dir/tb`` and evaluates on the dev tables
periodically (``out_dir/eval/evaluations.npz``); the result is an :class:`SB3Router`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from agents.common import read_router_json, write_router_json
from maw_gym.cache import atomic_path
from maw_gym.tables import Tables

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN}
HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"
MODEL_FILE = "model.zip"
NORMALISATION_FILE = "obs_normalisation.npz"
# Keys of a hyperparameter entry that configure the run rather than the algorithm's constructor.
RUN_KEYS = ("n_envs", "normalize", "eval_every_steps")


def load_hyperparams(algo: str, env_id: str, path: Path | None = None) -> dict[str, Any]:
    """The ``env_id`` entry of ``{algo}.yml`` (or its ``default`` entry), as a fresh dict."""
    path = path or HYPERPARAMS_DIR / f"{algo}.yml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no hyperparameter file for algorithm {algo!r}")
    entries = yaml.safe_load(path.read_text()) or {}
    if env_id in entries:
        return dict(entries[env_id])
    if "default" in entries:
        return dict(entries["default"])
    raise KeyError(f"{path}: no entry for env id {env_id!r} and no 'default' entry")


def make_vec_env(
    env_id: str, tables: Tables, n_envs: int, env_kwargs: dict[str, Any] | None = None
) -> VecEnv:
    """``n_envs`` copies of the env over ``tables`` in a ``DummyVecEnv``, each in a Monitor.

    A ``DummyVecEnv`` of single envs, not the env's native vector env: measured on the smoke
    env, SB3's own per-step cost (policy forward, rollout buffer) dominates either way, and the
    single envs keep SB3's episode statistics and ``terminal_observation`` contract untouched.
    """
    import maw_gym  # noqa: F401  (registers the MAW/ ids)

    def make() -> gym.Env:
        return Monitor(gym.make(env_id, tables=tables, **(env_kwargs or {})))

    return DummyVecEnv([make] * n_envs)


def check_action_space(algo: str, env_id: str, space: gym.Space) -> None:
    """DQN needs a ``Discrete`` action space; say so before SB3 fails with a bare assertion."""
    if algo == "dqn" and not isinstance(space, gym.spaces.Discrete):
        raise ValueError(f"--agent dqn needs a Discrete action space; {env_id} has {space}")


class SB3Router:
    """A trained SB3 model as a router: deterministic ``predict`` on normalised observations."""

    def __init__(
        self,
        name: str,
        algo: str,
        model: BaseAlgorithm,
        obs_normalisation: dict[str, np.ndarray] | None = None,
    ):
        self.name = name
        self.algo = algo
        self.model = model
        self.obs_normalisation = obs_normalisation
        """``mean``, ``var``, ``epsilon``, ``clip``: VecNormalize's statistics frozen at the end."""

    @classmethod
    def from_vec_normalize(
        cls, name: str, algo: str, model: BaseAlgorithm, env: VecEnv
    ) -> SB3Router:
        if not isinstance(env, VecNormalize):
            return cls(name, algo, model)
        stats = {
            "mean": env.obs_rms.mean,
            "var": env.obs_rms.var,
            "epsilon": np.asarray(env.epsilon),
            "clip": np.asarray(env.clip_obs),
        }
        return cls(name, algo, model, {k: np.asarray(v, np.float64) for k, v in stats.items()})

    def normalise(self, observations: np.ndarray) -> np.ndarray:
        """VecNormalize's transform, ``clip((obs - mean) / sqrt(var + eps))``, without the env."""
        obs = np.asarray(observations, dtype=np.float32)
        if self.obs_normalisation is None:
            return obs
        s = self.obs_normalisation
        scaled = (obs - s["mean"]) / np.sqrt(s["var"] + s["epsilon"])
        return np.clip(scaled, -s["clip"], s["clip"]).astype(np.float32)

    def act(self, observations: np.ndarray) -> np.ndarray:
        actions, _ = self.model.predict(self.normalise(observations), deterministic=True)
        return np.asarray(actions)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / MODEL_FILE) as tmp:
            # SB3 appends ".zip" to a path without it; the temporary name must keep the suffix.
            self.model.save(tmp.with_suffix(".zip"))
            tmp.with_suffix(".zip").replace(tmp)
        if self.obs_normalisation is not None:
            with atomic_path(directory / NORMALISATION_FILE) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **self.obs_normalisation)
        write_router_json(
            directory,
            type(self),
            {
                "name": self.name,
                "algo": self.algo,
                "model": MODEL_FILE,
                "obs_normalisation": NORMALISATION_FILE if self.obs_normalisation else None,
            },
        )

    @classmethod
    def load(cls, directory: Path) -> SB3Router:
        directory = Path(directory)
        config = read_router_json(directory)
        algo = config["algo"]
        if algo not in ALGORITHMS:
            raise ValueError(f"{directory}/router.json: algo {algo!r}, expected {list(ALGORITHMS)}")
        model = ALGORITHMS[algo].load(directory / config["model"], device="cpu")
        stats = None
        if config.get("obs_normalisation"):
            with np.load(directory / config["obs_normalisation"]) as data:
                stats = {k: data[k] for k in data.files}
        return cls(config["name"], algo, model, stats)


def train(
    algo: str,
    env_id: str,
    train_tables: Tables,
    dev_tables: Tables | None,
    seed: int,
    steps: int,
    out_dir: Path,
    *,
    env_kwargs: dict[str, Any] | None = None,
    hyperparams: dict[str, Any] | None = None,
    progress: bool = True,
) -> SB3Router:
    """Train ``algo`` ("ppo", "a2c" or "dqn") for ``steps`` env steps; same seed, same result.

    ``hyperparams`` replaces the YAML entry for ``env_id`` (tests pass tiny budgets this way).
    TensorBoard logs go to ``out_dir/tb``; with ``dev_tables`` the deterministic policy is
    evaluated on dev every ``eval_every_steps`` env steps (``out_dir/eval``).
    """
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown SB3 algorithm {algo!r}; expected one of {list(ALGORITHMS)}")
    params = dict(hyperparams if hyperparams is not None else load_hyperparams(algo, env_id))
    n_envs = int(params.pop("n_envs", 1))
    normalize = bool(params.pop("normalize", False))
    eval_every = int(params.pop("eval_every_steps", max(steps // 10, 1)))
    policy = params.pop("policy", "MlpPolicy")
    out_dir = Path(out_dir)

    env = make_vec_env(env_id, train_tables, n_envs, env_kwargs)
    check_action_space(algo, env_id, env.action_space)
    if normalize:
        env = VecNormalize(env, norm_obs=True, norm_reward=False)
    model = ALGORITHMS[algo](
        policy, env, seed=seed, device="cpu", tensorboard_log=str(out_dir / "tb"), **params
    )
    callback = None
    if dev_tables is not None:
        dev_env = make_vec_env(env_id, dev_tables, 1, env_kwargs)
        if normalize:
            # Shares nothing with training but its statistics, synced by EvalCallback each time.
            dev_env = VecNormalize(dev_env, norm_obs=True, norm_reward=False, training=False)
        dev_env.seed(seed + 1)
        callback = EvalCallback(
            dev_env,
            n_eval_episodes=dev_tables.num_queries,
            eval_freq=max(eval_every // n_envs, 1),
            log_path=str(out_dir / "eval"),
            deterministic=True,
            verbose=0,
        )
    model.learn(total_timesteps=steps, callback=callback, tb_log_name=algo, progress_bar=progress)
    return SB3Router.from_vec_normalize(f"sb3-{algo}", algo, model, env)


TRAINERS = {name: functools.partial(train, name) for name in ALGORITHMS}
"""Agent name -> ``(env_id, train_tables, dev_tables, seed, steps, out_dir, **opts) -> Router``."""
