"""``maw-gym train``: one entry point for every routing agent, through a registry.

An agent is a function of a :class:`TrainJob` registered in :data:`AGENTS` under its
command-line name. It trains on ``train_tables`` (through the env ``env_id``), stops after
``steps`` env steps (agents that are not RL document what a step is), records its dev learning
curve with ``job.curve()`` (the same budgets and protocol for every agent, see
:mod:`maw_gym_agents.curve`), may write logs into ``out_dir`` (TensorBoard, ``metrics.json``)
and returns the router of its best dev point (``curve.selected``: checkpoint selection on dev,
the same for every agent) and the curve's points; this module saves the router in ``out_dir``
together with ``curve.json``, which the leaderboard plots, and ``training.json``, which
``maw-gym evaluate`` reads for defaults."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maw_gym.cache import make_dirs, read_json, write_json
from maw_gym.tables import Tables
from maw_gym_agents.base import Router
from maw_gym_agents.curve import CurvePoint, DevCurve
from maw_gym_agents.evaluate import TRAINING_FILE, evaluate_router, observation_source
from maw_gym_agents.supervised import LabelMode

CURVE_FILE = "curve.json"
"""Written by :func:`train_agent` beside every router: its dev learning curve."""


@dataclass(frozen=True)
class TrainJob:
    """What every agent is trained with (see the module docstring)."""

    env_id: str
    train_tables: Tables
    dev_tables: Tables | None
    """Tables for periodic dev evaluation; None skips it."""
    seed: int
    steps: int
    """Env steps (agents that are not RL say what a step is)."""
    out_dir: Path
    """Where the agent may write its logs."""
    device: str = "cpu"
    """Where torch trains the agent (``auto``, ``cpu``, ``cuda``); envs always step on CPU."""

    def curve(self) -> DevCurve:
        """A fresh dev curve at this job's step budgets that keeps its best point's router (it
        stays empty without dev tables, and ``selected`` returns the final router)."""
        return DevCurve(self.env_id, self.dev_tables, self.steps, keep_best=True)


Trained = tuple[Router, list[CurvePoint]]
TrainFn = Callable[[TrainJob], Trained]


def read_curve(run_dir: Path) -> list[CurvePoint]:
    """The dev learning curve :func:`train_agent` wrote in ``run_dir`` ([] if there is none)."""
    path = Path(run_dir) / CURVE_FILE
    return read_json(path) if path.exists() else []


def _write_metrics(out_dir: Path, metrics: list[dict[str, float]]) -> None:
    write_json(Path(out_dir) / "metrics.json", metrics)


def _train_native(job: TrainJob, train: Callable[..., Any], config: Any) -> Trained:
    """Run a native agent's ``train(env_id, tables, config, curve)``; keep its metrics log."""
    curve = job.curve()
    router, metrics = train(job.env_id, job.train_tables, config, curve)
    _write_metrics(job.out_dir, metrics)
    return curve.selected(router), curve.points


def _grpo(enumerate_actions: bool) -> TrainFn:
    def train_grpo(job: TrainJob) -> Trained:
        """Native GRPO (:class:`maw_gym_agents.grpo.GRPOConfig` defaults): sampled groups, or
        every depth once per group for ``grpo-enum``; TensorBoard in out_dir/tb."""
        from maw_gym_agents.grpo import GRPOConfig, train

        config = GRPOConfig(
            seed=job.seed,
            total_env_steps=job.steps,
            enumerate_actions=enumerate_actions,
            log_dir=str(job.out_dir / "tb"),
            device=job.device,
        )
        return _train_native(job, train, config)

    return train_grpo


def _supervised(labels: LabelMode, depth_aware: bool) -> TrainFn:
    def train_supervised(job: TrainJob) -> Trained:
        """The supervised router; a step is one labelled query, so epochs = steps / N."""
        from maw_gym_agents.supervised import SupervisedConfig, train

        queries = job.train_tables.num_queries
        epochs = max(1, job.steps // queries)
        config = SupervisedConfig(
            seed=job.seed,
            labels=labels,
            depth_aware=depth_aware,
            epochs=epochs,
            device=job.device,
        )
        return _train_native(job, train, config)

    return train_supervised


def train_best_fixed(job: TrainJob) -> Trained:
    """The best fixed depth on the train split (``steps`` unused: it plays N·D episodes; no
    dev curve)."""
    from maw_gym_agents.heuristics import best_fixed_depth

    router, means = best_fixed_depth(job.env_id, job.train_tables)
    _write_metrics(job.out_dir, [{"train/mean_return_of_depth": float(m)} for m in means])
    return router, []


def _sb3(algo: str) -> TrainFn:
    def train_sb3(job: TrainJob) -> Trained:
        """Stable-Baselines3 ``algo`` with its YAML hyperparameters (``maw_gym_agents.sb3``)."""
        from maw_gym_agents.sb3 import train

        curve = job.curve()
        router = train(
            algo,
            job.env_id,
            job.train_tables,
            curve,
            job.seed,
            job.steps,
            job.out_dir,
            device=job.device,
        )
        return curve.selected(router), curve.points

    return train_sb3


def train_rllib_ppo(job: TrainJob) -> Trained:
    """RLlib PPO in local mode (``maw_gym_agents.rllib``; ``maw-gym rllib`` joins a cluster)."""
    from maw_gym_agents.rllib import train

    curve = job.curve()
    router = train(
        job.env_id,
        job.train_tables,
        job.seed,
        job.steps,
        job.out_dir,
        curve=curve,
        device=job.device,
    )
    return curve.selected(router), curve.points


AGENTS: dict[str, TrainFn] = {
    "grpo": _grpo(enumerate_actions=False),
    "grpo-enum": _grpo(enumerate_actions=True),
    "supervised": _supervised("oracle", depth_aware=False),
    "supervised-rule": _supervised("rule", depth_aware=False),
    "supervised-depth": _supervised("oracle", depth_aware=True),
    "best-fixed": train_best_fixed,
    "ppo": _sb3("ppo"),
    "a2c": _sb3("a2c"),
    "dqn": _sb3("dqn"),
    "rllib-ppo": train_rllib_ppo,
}
"""Command-line name → train function. SB3 and RLlib agents add their entries here."""


def train_agent(
    agent: str,
    env_id: str,
    train_tables: Tables,
    dev_tables: Tables | None,
    seed: int,
    steps: int,
    out_dir: Path,
    extra: dict[str, Any] | None = None,
    device: str = "cpu",
) -> tuple[Router, dict[str, Any]]:
    """Train ``agent``, save its router and ``training.json`` in ``out_dir``; return both."""
    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r}; choose one of {sorted(AGENTS)}")
    out_dir = make_dirs(Path(out_dir))
    started = time.perf_counter()
    job = TrainJob(env_id, train_tables, dev_tables, seed, steps, out_dir, device)
    router, curve = AGENTS[agent](job)
    seconds = time.perf_counter() - started
    router.save(out_dir)
    write_json(out_dir / CURVE_FILE, curve)
    record: dict[str, Any] = {
        "agent": agent,
        "env_id": env_id,
        "seed": seed,
        "steps": steps,
        "train_seconds": seconds,
        "tables": observation_source(train_tables),
        **(extra or {}),
    }
    if dev_tables is not None:
        result = evaluate_router(router, env_id, dev_tables)
        record["dev_mean_return"] = result.mean_return
        record["dev_normalized_score"] = result.normalized_score
    write_json(out_dir / TRAINING_FILE, record)
    return router, record
