"""Stable-Baselines3 baselines (PPO, A2C, DQN) on the MAW envs, configured from YAML.

Hyperparameters live in ``agents/hyperparams/{ppo,a2c,dqn}.yml`` in the rl-baselines3-zoo
layout: one entry per env id, ``default`` for ids without one. Besides the algorithm's own
constructor arguments an entry may hold the zoo's ``n_envs``, ``policy``, ``policy_kwargs`` (a
mapping here, not a Python string to ``eval``) and ``normalize`` (observation normalisation with
``VecNormalize``: attention maps are tiny probabilities whose informative differences are
smaller still, so an unnormalised MLP barely sees them).

Training writes TensorBoard logs under ``out_dir/tb`` and, given a
:class:`~maw_gym_agents.curve.DevCurve`, records its dev learning curve at the curve's step
budgets (every dev query, deterministic actions); the result is an :class:`SB3Router`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize

from maw_gym.cache import atomic_path, make_dirs
from maw_gym.device import resolve_device
from maw_gym.tables import Tables
from maw_gym_agents.curve import DevCurve
from maw_gym_agents.hyperparams import load_hyperparams
from maw_gym_agents.policy import ObsNormalisation
from maw_gym_agents.rollouts import make_vector_env
from maw_gym_agents.saving import read_router_json, write_router_json

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN}
MODEL_FILE = "model.zip"
NORMALISATION_FILE = "obs_normalisation.npz"
# Keys of a hyperparameter entry that configure the run rather than the algorithm's constructor.
RUN_KEYS = ("n_envs", "normalize")


class NativeVecEnv(VecEnv):
    """SB3's ``VecEnv`` interface over the env's native Gymnasium vector env.

    The native env autoresets in the same step (``AutoresetMode.SAME_STEP``), which is SB3's
    own contract: the returned observation of a finished sub-env is already the next
    episode's, and the finished one goes in ``infos[i]["terminal_observation"]``. Measured with
    PPO on the smoke env (8 envs, 1 torch thread): 1.15–1.5× the steps/s of a ``DummyVecEnv``
    of single envs (≈7,000 against ≈6,000 on an idle machine), the env alone 2.5× faster.
    """

    def __init__(self, venv: gym.vector.VectorEnv):
        mode = venv.metadata.get("autoreset_mode")
        if mode != gym.vector.AutoresetMode.SAME_STEP:
            raise ValueError(f"{venv}: autoreset_mode {mode}, expected SAME_STEP for SB3")
        self.venv = venv  # before super().__init__, which reads render_mode through get_attr
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        # One generator for all sub-envs: SB3's per-env seeds (seed + i) reduce to the first.
        observations, _ = self.venv.reset(seed=self._seeds[0], options=self._options[0] or None)
        self._reset_seeds()
        self._reset_options()
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        observations, rewards, terminated, truncated, info = self.venv.step(self._actions)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            infos[i]["terminal_observation"] = info["final_obs"][i]
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return observations, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.venv, attr_name, value)  # one vector env: every sub-env shares it

    def env_method(
        self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any
    ) -> list[Any]:
        raise NotImplementedError(
            f"env_method({method_name!r}): the native vector env has no per-sub-env methods"
        )

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def make_vec_env(env_id: str, tables: Tables, n_envs: int) -> VecEnv:
    """The env's native vector env with ``n_envs`` sub-envs over ``tables``, for SB3."""
    venv = make_vector_env(env_id, n_envs, tables)
    # VecMonitor: SB3's episode statistics (rollout/ep_rew_mean).
    return VecMonitor(NativeVecEnv(venv))


class CurveCallback(BaseCallback):
    """Calls a :class:`~maw_gym_agents.curve.DevCurve` with the policy as trained so far (its
    observation normalisation included) whenever a budget is due."""

    def __init__(self, curve: DevCurve, name: str, algo: str) -> None:
        super().__init__()
        self.curve, self.name, self.algo = curve, name, algo

    def _on_step(self) -> bool:
        if self.curve.due(self.num_timesteps):
            router = SB3Router.from_vec_normalize(
                self.name, self.algo, self.model, self.training_env
            )
            self.curve(router, self.num_timesteps)
        return True


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
        obs_normalisation: ObsNormalisation | None = None,
    ):
        self.name = name
        self.algo = algo
        self.model = model
        self.obs_normalisation = obs_normalisation
        """VecNormalize's statistics frozen at the end of training."""

    @classmethod
    def from_vec_normalize(
        cls, name: str, algo: str, model: BaseAlgorithm, env: VecEnv
    ) -> SB3Router:
        if not isinstance(env, VecNormalize):
            return cls(name, algo, model)
        # VecNormalize's transform is clip((obs - mean) / sqrt(var + eps)).
        std = np.sqrt(env.obs_rms.var + env.epsilon).astype(np.float32)
        stats = ObsNormalisation(env.obs_rms.mean.astype(np.float32), std, float(env.clip_obs))
        return cls(name, algo, model, stats)

    def normalise(self, observations: np.ndarray) -> np.ndarray:
        """VecNormalize's transform, ``clip((obs - mean) / sqrt(var + eps))``, without the env."""
        obs = np.asarray(observations, dtype=np.float32)
        return obs if self.obs_normalisation is None else self.obs_normalisation(obs)

    def act(self, observations: np.ndarray) -> np.ndarray:
        actions, _ = self.model.predict(self.normalise(observations), deterministic=True)
        return np.asarray(actions)

    def save(self, directory: Path) -> None:
        directory = make_dirs(Path(directory))
        # A handle: SB3 appends ".zip" to a path without it (a file beside the temporary one).
        with atomic_path(directory / MODEL_FILE) as tmp, open(tmp, "wb") as handle:
            self.model.save(handle)
        if self.obs_normalisation is not None:
            self.obs_normalisation.save(directory / NORMALISATION_FILE)
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
            stats = ObsNormalisation.load(directory / config["obs_normalisation"])
        return cls(config["name"], algo, model, stats)


def train(
    algo: str,
    env_id: str,
    train_tables: Tables,
    curve: DevCurve | None,
    seed: int,
    steps: int,
    out_dir: Path,
    *,
    hyperparams: dict[str, Any] | None = None,
    progress: bool = True,
    num_threads: int | None = 1,
    device: str = "cpu",
) -> SB3Router:
    """Train ``algo`` ("ppo", "a2c" or "dqn") for ``steps`` env steps; same seed, same result.

    ``hyperparams`` replaces the YAML entry for ``env_id`` (tests pass tiny budgets this way).
    TensorBoard logs go to ``out_dir/tb``; ``curve`` (if given) records the dev learning curve
    (:class:`CurveCallback`). ``num_threads``
    sets torch's (process-wide) intra-op threads: these MLPs are tiny, and on a busy 2-core
    machine 2 threads made PPO 4× and DQN 20× slower than 1 (None: leave torch's setting).
    ``device`` (``auto``, ``cpu``, ``cuda``) is SB3's own ``device`` option, resolved by
    :func:`maw_gym.device.resolve_device`; SB3 itself warns that MLP policies run faster on CPU.
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown SB3 algorithm {algo!r}; expected one of {list(ALGORITHMS)}")
    params = dict(hyperparams if hyperparams is not None else load_hyperparams(algo, env_id))
    n_envs = int(params.pop("n_envs", 1))
    normalize = bool(params.pop("normalize", False))
    policy = params.pop("policy", "MlpPolicy")
    out_dir = Path(out_dir)

    env = make_vec_env(env_id, train_tables, n_envs)
    check_action_space(algo, env_id, env.action_space)
    if normalize:
        env = VecNormalize(env, norm_obs=True, norm_reward=False)
    model = ALGORITHMS[algo](
        policy,
        env,
        seed=seed,
        device=resolve_device(device),
        tensorboard_log=str(out_dir / "tb"),
        **params,
    )
    name = f"sb3-{algo}"
    callback = CurveCallback(curve, name, algo) if curve is not None else None
    model.learn(total_timesteps=steps, callback=callback, tb_log_name=algo, progress_bar=progress)
    return SB3Router.from_vec_normalize(name, algo, model, env)
