"""RLlib baselines: one local iteration in the driver, and one against a real local Ray head.

Each Ray instance costs ≈1 GB and several seconds to start, so each test trains exactly one tiny
iteration; the Ray test starts its own head with ``ray start --block`` as a child process and
stops it with SIGTERM (``ray stop`` would stop every Ray cluster on the machine).
"""

from __future__ import annotations

import os

# Loopback only; Ray reads this when imported (tests/conftest.py should set it for the session).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import end_process, spawn

import maw_gym
from maw_gym.tables import Tables
from maw_gym_agents import rllib
from maw_gym_agents.evaluate import evaluate_router
from maw_gym_agents.saving import load_router

ENV_ID = "MAW/DepthSelection-v3"
TINY = {
    "num_envs_per_env_runner": 4,
    "train_batch_size_per_learner": 64,
    "minibatch_size": 32,
    "num_epochs": 1,
    "lr": 1e-3,
    "gamma": 1.0,
    "fcnet_hiddens": [16],
}
REPO_ROOT = Path(maw_gym.__file__).resolve().parent.parent


def observations(tables: Tables) -> np.ndarray:
    """Every query's observation, through the env itself (pinned queries)."""
    envs = gym.make_vec(
        ENV_ID, num_envs=tables.num_queries, vectorization_mode="vector_entry_point", tables=tables
    )
    obs, _ = envs.reset(seed=0, options={"query_index": np.arange(tables.num_queries)})
    envs.close()
    return obs


@pytest.fixture
def private_ray():
    ray = pytest.importorskip("ray")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_local_training_learns_checkpoints_and_round_trips(private_ray, tmp_path):
    """The registry entry (tables through the object store), 0 env runners, 4 iterations."""
    tables = Tables.synthetic(num_queries=16, best_depth=1)
    params = {**TINY, "train_batch_size_per_learner": 256, "minibatch_size": 64, "num_epochs": 4}
    router = rllib.train(ENV_ID, tables, 0, 1024, tmp_path, hyperparams=params)
    held_out = Tables.synthetic(num_queries=32, best_depth=1, seed=7)  # never trained on
    result = evaluate_router(router, ENV_ID, held_out)
    # random 0, per-query oracle 1, best fixed depth (1) 0.70 here; measured (seeded) 0.72
    assert result.normalized_score > 0.65, result.normalized_score
    assert result.depth_usage.argmax() == 1
    assert (tmp_path / "checkpoints" / "final" / "rllib_checkpoint.json").is_file()
    import ray

    assert not ray.is_initialized()  # the private Ray it started is shut down (≈1 GB)
    obs = observations(tables)
    actions = router.act(obs)
    assert actions.shape == (16,) and actions.dtype == np.int64
    assert ((actions >= 0) & (actions < tables.depth)).all()
    router.save(tmp_path / "router")
    loaded = load_router(tmp_path / "router", allow_pickle=True)
    assert isinstance(loaded, rllib.RLlibRouter)
    np.testing.assert_array_equal(loaded.act(obs), actions)


@pytest.mark.slow
def test_checkpoint_selection_restores_the_best_dev_module(private_ray, tmp_path):
    """The dev curve saves the RLModule at each new best point; ``selected`` loads it back
    (after Ray is shut down), or keeps its constant where that is better on dev."""
    from maw_gym_agents.curve import DevCurve

    tables = Tables.synthetic(num_queries=16, best_depth=1)
    dev = Tables.synthetic(num_queries=16, best_depth=1, seed=5)
    curve = DevCurve(ENV_ID, dev, total_steps=512, points=4, keep_best=True)
    router = rllib.train(ENV_ID, tables, 0, 512, tmp_path, hyperparams=TINY, curve=curve)
    selected = curve.selected(router)
    [point] = [p for p in curve.points if p.get("selected")]
    assert point["dev_return"] == max(p["dev_return"] for p in curve.points)
    assert isinstance(selected, rllib.RLlibRouter) != point["constant_kept"]
    expected = max(point["dev_return"], point["constant_dev_return"])
    assert evaluate_router(selected, ENV_ID, dev).mean_return == pytest.approx(expected)


@pytest.mark.slow
def test_appo_trains_one_iteration_and_acts(private_ray, tmp_path):
    """The APPO path end to end (its config drops PPO's minibatch_size and lambda_). One
    iteration only: measured 8 iterations at ≈14 s each reach just 0.25 on held-out queries."""
    tables = Tables.synthetic(num_queries=16, best_depth=1)
    params = {**TINY, "train_batch_size_per_learner": 256}
    router = rllib.train(ENV_ID, tables, 0, 256, tmp_path, algo="appo", hyperparams=params)
    assert router.name == "rllib-appo"
    final = tmp_path / "checkpoints" / "final"
    assert b"APPO" in (final / "class_and_ctor_args.pkl").read_bytes()  # not PPO under a name
    actions = router.act(observations(tables))
    assert actions.shape == (16,) and ((actions >= 0) & (actions < tables.depth)).all()


def test_observation_normalisation_standardises_the_env(tmp_path):
    config = {"env_id": ENV_ID, "synthetic": {"num_queries": 16, "best_depth": 1}}
    normalisation = rllib.measure_normalisation(config, episodes=512)
    scaled = normalisation(observations(Tables.synthetic(num_queries=16, best_depth=1)))
    assert np.abs(scaled.mean(0)).max() < 0.3 and np.abs(scaled.std(0) - 1).max() < 0.3
    again = rllib.ObsNormalisation.from_dict(normalisation.to_dict())
    np.testing.assert_array_equal(again(scaled), normalisation(scaled))
    env = rllib.make_env({**config, "obs_normalisation": normalisation.to_dict()})
    obs, _ = env.reset(seed=0, options={"query_index": 3})
    np.testing.assert_allclose(obs, scaled[3], rtol=1e-6)
    assert env.observation_space.contains(obs)


def test_unknown_algorithm_is_refused_before_ray_starts(tmp_path):
    run = rllib.RLlibRun({"env_id": ENV_ID}, tmp_path, algo="sac")
    with pytest.raises(ValueError, match="algo='sac'"):
        rllib.build_config(run)


def test_env_config_without_env_id_names_the_missing_key():
    with pytest.raises(KeyError, match="env_id"):
        rllib.make_env({"synthetic": {"best_depth": 1}})


@pytest.mark.slow
@pytest.mark.ray
def test_joins_a_real_head_by_address_and_ships_maw_gym(ray_head, tmp_path, monkeypatch):
    """One iteration with one remote env runner that imports maw_gym from the runtime env."""
    monkeypatch.chdir(tmp_path)  # the driver's cwd leaks onto workers' sys.path: not the repo
    run = rllib.RLlibRun(
        {"env_id": ENV_ID, "synthetic": {"num_queries": 16, "best_depth": 1}},
        tmp_path / "out",
        iterations=1,
        num_env_runners=1,
        address=ray_head,
        hyperparams=TINY,
    )
    started = time.perf_counter()
    assert rllib.init_ray(ray_head, None)
    # Fail fast: a worker that cannot build the env raises its own error, not a later IndexError.
    with pytest.raises(Exception, match="Nope"):
        rllib.preflight({"env_id": "MAW/Nope-v2"})
    router = rllib.train_run(run)
    print(f"by address: {time.perf_counter() - started:.1f} s, metrics {run.metrics}")
    assert run.metrics[0]["env_steps"] >= 64
    assert len(run.env_runner_module_files) == 1
    for files in run.env_runner_module_files:  # both packages come from the runtime env
        assert sorted(files) == ["maw_gym", "maw_gym_agents"], files
        for path in files.values():
            assert not Path(path).resolve().is_relative_to(REPO_ROOT), path
            assert "runtime_resources" in path, path
    obs = observations(Tables.synthetic(num_queries=16, best_depth=1))
    assert router.act(obs).shape == (16,)


@pytest.mark.slow
def test_command_line_trains_and_saves_a_loadable_router(tmp_path):
    """``maw-gym rllib``: the saved router names ``maw_gym_agents.rllib``'s class."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "maw_gym_leaderboard.cli", "rllib", "--env", ENV_ID]
    command += ["--synthetic"]
    command += ["--iterations", "1", "--num-cpus", "1", "--out", str(out)]
    child = spawn(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        stdout, stderr = child.communicate(timeout=600)  # generous: a loaded machine is slow
    finally:
        end_process(child)  # a timeout leaves no driver and no private Ray behind
    assert child.returncode == 0, stderr[-2000:]
    assert "iteration    1" in stdout
    router = load_router(out / "router", allow_pickle=True)
    assert isinstance(router, rllib.RLlibRouter) and router.name == "rllib-ppo"
