"""RLlib baselines (PPO, APPO) on the MAW envs, on the new API stack, locally or on a Ray cluster.

The env is registered with ``tune.register_env`` under :data:`ENV_NAME`; its ``env_config``
says how a worker builds it, never with table arrays inline:

| key                  | meaning                                                              |
|----------------------|----------------------------------------------------------------------|
| ``env_id``           | the Gymnasium id, e.g. ``MAW/DepthSelection-v3``                     |
| ``env_kwargs``       | passed to ``gym.make``: ``dataset``/``split``/``preset`` build tables |
| ``tables_ref``       | optional ``ray.put(tables)`` ref: tables the driver already holds    |
| ``synthetic``        | optional kwargs of ``Tables.synthetic`` (tests, smoke runs)          |
| ``obs_normalisation``| :class:`ObsNormalisation` as a dict, measured once by the driver     |

Joining a cluster (``address``) ships ``maw_gym`` and ``maw_gym_agents`` to every worker through the
runtime environment (``py_modules``), so workers need no checkout. A worker that cannot import
them or build the env fails a preflight task before the algorithm is built: with
``restart_failed_env_runners`` (on, for fault tolerance during training) a broken env runner
would otherwise be restarted forever and surface as an unrelated ``IndexError`` (issue 5).

CLI: ``maw-gym rllib --env MAW/DepthSelection-v3 --synthetic --iterations 2
--out runs/rllib`` locally, the same with ``--address auto`` on a cluster (docs/cluster.md).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from maw_gym.cache import disk_errors, make_dirs, read_json, stable_hash, write_json
from maw_gym.device import resolve_device
from maw_gym.ray_connect import join
from maw_gym.signals import keeping_sigterm_handler
from maw_gym.tables import Tables
from maw_gym_agents.curve import DevCurve
from maw_gym_agents.hyperparams import load_hyperparams
from maw_gym_agents.policy import ObsNormalisation
from maw_gym_agents.saving import read_router_json, write_router_json

ENV_NAME = "maw_gym_env"
HYPERPARAMS = "rllib_ppo"
"""The hyperparameter file (``hyperparams/rllib_ppo.yml``) of PPO and APPO."""
MODULE_DIR = "rl_module"
NORMALISATION_FILE = "obs_normalisation.npz"
RESUME_FILE = "maw_gym_resume.json"
Algorithm = Literal["ppo", "appo"]
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
# Passed on to workers when joining a cluster. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps a
# one-machine cluster on 127.0.0.1; Ray reads it when *imported*, so it must be set in the shell
# (or before the first ``import ray``), for the head and the driver alike (docs/cluster.md).
FORWARDED_ENV_VARS = ("MAW_GYM_CACHE", "RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")


def make_env(env_config: dict[str, Any]) -> gym.Env:
    """The ``tune.register_env`` creator: builds the MAW env on whichever process runs it."""
    import maw_gym  # noqa: F401  (registers the MAW/ ids on this worker)

    if "env_id" not in env_config:
        raise KeyError(f"env_config needs 'env_id'; got keys {sorted(env_config)}")
    kwargs = dict(env_config.get("env_kwargs") or {})
    if env_config.get("tables_ref") is not None:
        import ray

        kwargs["tables"] = ray.get(env_config["tables_ref"])
    elif env_config.get("synthetic") is not None:
        kwargs["tables"] = Tables.synthetic(**env_config["synthetic"])
    env = gym.make(env_config["env_id"], **kwargs)
    stats = env_config.get("obs_normalisation")
    if stats is None:
        return env
    normalisation = ObsNormalisation.from_dict(stats)
    space = gym.spaces.Box(
        -normalisation.clip, normalisation.clip, env.observation_space.shape, np.float32
    )
    return gym.wrappers.TransformObservation(env, normalisation, space)


def measure_normalisation(
    env_config: dict[str, Any], episodes: int = 1024, seed: int = 0
) -> ObsNormalisation:
    """Statistics of every observation of ``episodes`` uniformly random episodes."""
    env = make_env({**env_config, "obs_normalisation": None})
    if not isinstance(env.observation_space, gym.spaces.Box):
        raise ValueError(
            f"{env_config['env_id']}: observation normalisation needs a Box "
            f"observation space, got {env.observation_space}"
        )
    env.action_space.seed(seed)
    seen = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        done = False
        while not done:
            seen.append(obs)
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
    env.close()
    return ObsNormalisation.of(np.asarray(seen))


@dataclass
class RLlibRun:
    """One RLlib training run; every field is a flag of ``maw-gym rllib``."""

    env_config: dict[str, Any]
    """See the module docstring; ``env_id`` is required."""
    out_dir: Path
    """Checkpoints (``checkpoints/``), the final router (``router/``) and metrics go here."""
    algo: Algorithm = "ppo"
    """``ppo`` or ``appo`` (asynchronous, for many env runners)."""
    iterations: int = 5
    """Training iterations (each ``train_batch_size_per_learner`` env steps)."""
    num_env_runners: int = 0
    """Remote env runner actors; 0 samples in the driver process."""
    address: str | None = None
    """Ray cluster to join (``auto``, ``host:port``); None starts a private local Ray."""
    num_cpus: int | None = None
    """CPUs of the private local Ray (ignored with ``address``)."""
    seed: int = 0
    """Seeds RLlib's env runners and learner."""
    checkpoint_every: int = 0
    """Also save a checkpoint every N iterations (0: only the final one)."""
    hyperparams: dict[str, Any] | None = None
    """Replaces the ``rllib_ppo.yml`` entry (tests pass tiny budgets this way)."""
    normalise_obs: bool = True
    """Standardise observations with statistics measured once on the env (ObsNormalisation)."""
    device: str = "cpu"
    """Where the (local) learner trains: ``auto``, ``cpu`` or ``cuda``; RLlib's own option
    ``num_gpus_per_learner`` (1 for CUDA). Env runners sample on CPU."""
    num_threads: int | None = 1
    """Torch intra-op threads of the driver (learner, local sampling); None: torch's default.
    With 2 threads on a busy 2-core machine a 512-step iteration took 8 s instead of 0.5 s."""
    metrics: list[dict[str, float]] = field(default_factory=list)
    """Filled by :func:`train_run`: per-iteration return, env steps and seconds."""
    env_runner_module_files: list[dict[str, str]] = field(default_factory=list)
    """Filled by :func:`train_run`: where each remote env runner imported ``maw_gym`` and
    ``maw_gym_agents`` from (module name → ``__file__``)."""


def init_ray(address: str | None, num_cpus: int | None) -> bool:
    """Join ``address`` shipping this code to workers, or start a private local Ray.

    Returns whether this call connected (the caller then shuts Ray down when done); an already
    initialised Ray is kept as it is.
    """
    import ray

    import maw_gym

    # Token authentication needs a shared secret a private or test cluster does not have.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return False
    if address in (None, "local"):
        with keeping_sigterm_handler():
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
            )
        return True
    env_vars = {key: os.environ[key] for key in FORWARDED_ENV_VARS if key in os.environ}
    with staged_agents() as agents_package:  # a deadline, and signals, while connecting
        join(
            address,
            runtime_env={"py_modules": [maw_gym, str(agents_package)], "env_vars": env_vars},
        )
    return True


def preflight(env_config: dict[str, Any]) -> dict[str, Any]:
    """Build the env once in a Ray task (same runtime env as the env runners) and report.

    Raises the worker's own error (a missing module, bad tables) instead of letting RLlib
    restart broken env runners; returns ``maw_gym``'s path on the worker and the spaces.
    """
    import ray

    @ray.remote(num_cpus=0, max_retries=0)
    def probe(config: dict[str, Any]) -> dict[str, Any]:
        import maw_gym

        env = make_env(config)
        env.close()
        return {
            "maw_gym_file": maw_gym.__file__,
            "observation_space": env.observation_space,
            "action_space": env.action_space,
        }

    return ray.get(probe.remote(env_config), timeout=300)


def build_config(run: RLlibRun) -> Any:
    """The ``AlgorithmConfig`` of ``run`` (new API stack, fault-tolerant env runners)."""
    from ray.rllib.algorithms.appo import APPOConfig
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    if run.algo not in ALGORITHMS:
        raise ValueError(f"algo={run.algo!r}; expected one of {ALGORITHMS}")
    params = dict(
        run.hyperparams
        if run.hyperparams is not None
        else load_hyperparams(HYPERPARAMS, run.env_config["env_id"])
    )
    hidden = list(params.pop("fcnet_hiddens", [64, 64]))
    envs_per_runner = int(params.pop("num_envs_per_env_runner", 1))
    if run.algo == "appo":
        params.pop("minibatch_size", None)  # APPO learns on whole sample batches
        params.pop("lambda_", None)
    config = APPOConfig() if run.algo == "appo" else PPOConfig()
    return (
        config.environment(ENV_NAME, env_config=run.env_config)
        .framework("torch")
        .env_runners(num_env_runners=run.num_env_runners, num_envs_per_env_runner=envs_per_runner)
        .learners(
            num_learners=0,
            num_gpus_per_learner=1 if resolve_device(run.device).type == "cuda" else 0,
        )
        .training(**params)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=hidden, fcnet_activation="tanh"))
        .fault_tolerance(restart_failed_env_runners=True)
        .debugging(seed=run.seed, log_level="ERROR")
    )


def train_run(run: RLlibRun, curve: DevCurve | None = None) -> RLlibRouter:
    """Train ``run.iterations`` iterations, checkpoint, and return the final policy as a router;
    ``curve`` (if given) is called after every iteration."""
    import ray
    from ray import tune

    if run.num_threads is not None:
        torch.set_num_threads(run.num_threads)
    started = init_ray(run.address, run.num_cpus)
    try:
        tune.register_env(ENV_NAME, make_env)
        if run.normalise_obs and run.env_config.get("obs_normalisation") is None:
            stats = measure_normalisation(run.env_config, seed=run.seed)
            run.env_config = {**run.env_config, "obs_normalisation": stats.to_dict()}
        if run.num_env_runners > 0:
            preflight(run.env_config)
        algo = build_config(run).build_algo()
        try:
            return _train_algo(algo, run, curve)
        finally:
            algo.stop()
    finally:
        if started:
            ray.shutdown()


def _train_algo(algo: Any, run: RLlibRun, curve: DevCurve | None) -> RLlibRouter:
    out_dir = Path(run.out_dir)
    stats = run.env_config.get("obs_normalisation")
    normalisation = None if stats is None else ObsNormalisation.from_dict(stats)
    name = f"rllib-{run.algo}"
    run.env_runner_module_files = algo.env_runner_group.foreach_env_runner(
        _module_files, local_env_runner=False
    )
    key = _resume_key(run)
    done = _resume(algo, out_dir / "checkpoints", key)
    bar = tqdm(range(done + 1, run.iterations + 1), desc=f"rllib-{run.algo}", unit="iter")
    for iteration in bar:
        start = time.perf_counter()
        try:
            result = algo.train()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: keep what is done for the rerun
            if iteration > done + 1:
                _save(algo, out_dir / "checkpoints" / f"iteration_{iteration - 1:05d}", key)
            raise
        runners = result.get("env_runners", {})
        row = {
            "iteration": iteration,
            "seconds": time.perf_counter() - start,
            "env_steps": float(runners.get("num_env_steps_sampled_lifetime", math.nan)),
            "episode_return_mean": float(runners.get("episode_return_mean", math.nan)),
        }
        run.metrics.append(row)
        bar.set_postfix(ret=f"{row['episode_return_mean']:.3f}")
        steps = int(runners.get("num_env_steps_sampled_lifetime", 0))
        if curve is not None and curve.due(steps):
            curve(RLlibRouter(name, algo.get_module(), normalisation), steps)
        if run.checkpoint_every and iteration % run.checkpoint_every == 0:
            _save(algo, out_dir / "checkpoints" / f"iteration_{iteration:05d}", key)
    with disk_errors(out_dir / "checkpoints"):  # RLlib writes its own folders
        algo.save(out_dir / "checkpoints" / "final")
    return RLlibRouter(name, algo.get_module(), normalisation)


def _resume_key(run: RLlibRun) -> str:
    """What a checkpoint must have been trained with to be resumed: algorithm, seed,
    hyperparameters and env config (its observation statistics stand for the tables, whose
    object-store reference differs between processes)."""
    params = run.hyperparams or load_hyperparams(HYPERPARAMS, run.env_config["env_id"])
    env_config = {k: v for k, v in run.env_config.items() if k != "tables_ref"}
    return stable_hash(run.algo, run.seed, params, env_config)


def _save(algo: Any, path: Path, key: str) -> None:
    """An iteration checkpoint, stamped with its run's :func:`_resume_key`."""
    with disk_errors(path):  # RLlib writes its own folders
        algo.save(path)
    write_json(path / RESUME_FILE, {"key": key})


def _resume(algo: Any, checkpoints: Path, key: str) -> int:
    """Restore the latest ``iteration_<n>`` checkpoint of this same run (``key``), if any
    (written every ``checkpoint_every`` iterations and on an interruption); return n (0: none).
    A checkpoint of another configuration in the same folder is never resumed."""
    for saved in sorted(checkpoints.glob("iteration_*"), reverse=True):
        stamp = saved / RESUME_FILE
        if stamp.is_file() and read_json(stamp).get("key") == key:
            algo.restore_from_path(saved)
            return int(saved.name.removeprefix("iteration_"))
    return 0


def _module_files(env_runner: Any) -> dict[str, str]:
    """Where this env runner imported our packages from (the runtime env's copies on a
    cluster)."""
    import maw_gym
    import maw_gym_agents

    return {"maw_gym": str(maw_gym.__file__), "maw_gym_agents": str(maw_gym_agents.__file__)}


@contextmanager
def staged_agents() -> Iterator[Path]:
    """A copy of this package in a folder named by its import name, for Ray's ``py_modules``.

    Ray names an uploaded package after its folder, and the source folder is ``agents/``
    (installed as ``maw_gym_agents``): shipped as is, workers would get a module ``agents`` and
    could not unpickle ``maw_gym_agents.rllib.make_env``. Ray uploads during ``ray.init``, so
    the copy lives only for that call.
    """
    import maw_gym_agents

    [source] = maw_gym_agents.__path__
    with tempfile.TemporaryDirectory(prefix="maw_gym_ray_") as root:
        staged = Path(root) / "maw_gym_agents"
        with disk_errors(staged):
            shutil.copytree(source, staged, ignore=shutil.ignore_patterns("__pycache__"))
        yield staged


class RLlibRouter:
    """An RLlib RLModule as a router: ``forward_inference``, then the deterministic action.

    Discrete: argmax; MultiDiscrete: argmax per head; Box: the Gaussian mean, unsquashed from
    RLlib's normalised action space to the env's bounds as RLlib's env runners do. Raw env
    observations are first normalised as the training env did.
    """

    def __init__(self, name: str, module: Any, obs_normalisation: ObsNormalisation | None = None):
        self.name = name
        self.module = module
        self.obs_normalisation = obs_normalisation

    @torch.no_grad()
    def act(self, observations: np.ndarray) -> np.ndarray:
        from ray.rllib.core.columns import Columns
        from ray.rllib.utils.spaces.space_utils import unsquash_action

        obs = np.asarray(observations, dtype=np.float32)
        if self.obs_normalisation is not None:
            obs = self.obs_normalisation(obs)
        obs = torch.as_tensor(obs)
        logits = self.module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        dist = self.module.get_inference_action_dist_cls().from_logits(logits)
        actions = dist.to_deterministic().sample().cpu().numpy()
        space = self.module.action_space
        if isinstance(space, gym.spaces.Box):
            return unsquash_action(actions, space).astype(np.float32)
        return actions.astype(np.int64)

    def save(self, directory: Path) -> None:
        directory = make_dirs(Path(directory))
        with disk_errors(directory / MODULE_DIR):  # RLlib writes its own folder
            self.module.save_to_path(str((directory / MODULE_DIR).resolve()))
        normalisation = None
        if self.obs_normalisation is not None:
            normalisation = NORMALISATION_FILE
            self.obs_normalisation.save(directory / NORMALISATION_FILE)
        write_router_json(
            directory,
            type(self),
            {
                "name": self.name,
                "module": MODULE_DIR,
                "obs_normalisation": normalisation,
            },
        )

    @classmethod
    def load(cls, directory: Path) -> RLlibRouter:
        from ray.rllib.core.rl_module.rl_module import RLModule

        directory = Path(directory)
        config = read_router_json(directory)
        module = RLModule.from_checkpoint(str((directory / config["module"]).resolve()))
        normalisation = None
        if config.get("obs_normalisation"):
            normalisation = ObsNormalisation.load(directory / config["obs_normalisation"])
        return cls(config["name"], module, normalisation)


def train(
    env_id: str,
    train_tables: Tables,
    seed: int,
    steps: int,
    out_dir: Path,
    *,
    algo: Algorithm = "ppo",
    num_env_runners: int = 0,
    address: str | None = None,
    hyperparams: dict[str, Any] | None = None,
    curve: DevCurve | None = None,
    device: str = "cpu",
) -> RLlibRouter:
    """The ``maw-gym train --agent rllib-ppo`` entry: ``steps`` env steps on ``train_tables``.

    The tables travel to workers through Ray's object store (``ray.put``); ``curve`` records
    the dev learning curve in the driver. ``hyperparams`` replaces the ``rllib_ppo.yml`` entry.
    """
    import ray

    started = init_ray(address, None)
    params = dict(hyperparams) if hyperparams is not None else load_hyperparams(HYPERPARAMS, env_id)
    batch = int(params.get("train_batch_size_per_learner", 4000))
    env_config = {"env_id": env_id, "tables_ref": ray.put(train_tables)}
    run = RLlibRun(
        env_config,
        Path(out_dir),
        algo=algo,
        iterations=max(1, math.ceil(steps / batch)),
        num_env_runners=num_env_runners,
        address=address,
        seed=seed,
        hyperparams=params,
        device=device,
    )
    try:
        return train_run(run, curve)
    finally:
        if started:
            ray.shutdown()
