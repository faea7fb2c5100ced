"""``maw-gym leaderboard --suite NAME``: rank policies over many tasks, as rliable intends.

A task is one env id over one dataset's tables. Each task runs as an ordinary leaderboard in
``OUT/tasks/<dataset>--<env>/`` (resumable, validated by ``maw-gym validate`` like any other);
then every (policy, seed, task) becomes one normalised score, ``(mean test return − random) /
(oracle − random)`` on that task, and policies are ranked over the ``(seeds, tasks)`` matrix with
rliable's IQM, mean and optimality gap, stratified over seeds within tasks, with performance
profiles and the probability of improvement over best-fixed (Agarwal et al. 2021). The bounds
(``oracle``, ``oracle-ndcg``) and rerankers without env return are not part of a suite.

Suites: ``smoke-suite`` (tests), ``quick-suite`` (the quick tables with the 2-layer stack, so
``MAW/LayerwiseDepth`` has its tables: one encoder for all five tasks) and ``full-suite``; any
suite takes more datasets by path with ``--add-dataset``.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maw_gym.cache import atomic_path, read_json, slug, write_json
from maw_gym_leaderboard.run import (
    LeaderboardJob,
    check_dataset,
    prepare_out,
    run_leaderboard,
    write_run_record,
)

REFERENCE = "best-fixed"
#: The hard, retrieval-only, per-head, mixture and layerwise envs.
TASK_ENVS = (
    "MAW/DepthSelection-v3",
    "MAW/DepthSelectionRetrieval-v3",
    "MAW/PerHeadDepth-v3",
    "MAW/SoftDepthMixture-v3",
    "MAW/LayerwiseDepth-v3",
)


@dataclass(frozen=True)
class Suite:
    """A named list of tasks: ``envs`` over the tables of ``preset`` (with ``overrides``)."""

    preset: str
    overrides: tuple[str, ...]
    envs: tuple[str, ...]
    policies: tuple[str, ...]
    """Ranked on every task: each must accept every env's action space."""


SUITES: dict[str, Suite] = {
    "smoke-suite": Suite("smoke", (), TASK_ENVS, ("random", REFERENCE, "grpo")),
    "quick-suite": Suite(
        "quick",
        ("layers=2",),
        TASK_ENVS,
        ("random", REFERENCE, "entropy-min", "attention-norm", "joint-router", "grpo", "ppo"),
    ),
    "full-suite": Suite(
        "full",
        (),
        TASK_ENVS,
        ("random", REFERENCE, "entropy-min", "attention-norm", "joint-router", "grpo", "ppo"),
    ),
}


@dataclass(frozen=True)
class SuiteJob:
    """What ``maw-gym leaderboard --suite NAME`` is asked."""

    suite: str
    dataset: str
    out: Path
    add_datasets: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    seeds: int | None = None
    steps: int | None = None
    policies: tuple[str, ...] = ()
    fresh: bool = False

    def command_line(self) -> str:
        """The shell command that reproduces this suite (for ``run.json``)."""
        out = self.out.relative_to(Path.cwd()) if self.out.is_relative_to(Path.cwd()) else self.out
        parts = ["maw-gym", "leaderboard", "--dataset", str(self.dataset), "--suite", self.suite]
        for item in self.overrides:
            parts += ["--set", item]
        for flag, value in (("--seeds", self.seeds), ("--steps", self.steps)):
            if value is not None:
                parts += [flag, str(value)]
        for path in self.add_datasets:
            parts += ["--add-dataset", str(path)]
        if self.policies:
            parts += ["--policies", *self.policies]
        return shlex.join([*parts, "--out", str(out)])


def suite_tasks(job: SuiteJob) -> dict[str, LeaderboardJob]:
    """Task name → its own leaderboard."""
    suite = SUITES[job.suite]
    policies = tuple(dict.fromkeys([*(job.policies or suite.policies), REFERENCE]))
    tasks = {}
    for dataset in (job.dataset, *job.add_datasets):
        for env_id in suite.envs:
            name = f"{slug(str(dataset))}--{slug(env_id)}"
            tasks[name] = LeaderboardJob(
                dataset=dataset,
                preset=suite.preset,
                out=job.out / "tasks" / name,
                overrides=(*suite.overrides, *job.overrides),
                env=env_id,
                seeds=job.seeds,
                steps=job.steps,
                policies=policies,
            )
    return tasks


def normalised_scores(
    task_dirs: dict[str, Path], policies: list[str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Policy → ``(seeds, tasks)`` normalised scores (random 0, oracle 1) from each task's
    ``raw_scores.json``, and the tasks left out because their oracle equals random (no
    headroom: every policy would score 0/0)."""
    columns: dict[str, list[list[float]]] = {p: [] for p in policies}
    flat = []
    for name, directory in task_dirs.items():
        raw = read_json(directory / "raw_scores.json")
        low, high = raw[REFERENCE][0]["random_mean"], raw[REFERENCE][0]["oracle_mean"]
        if high - low <= 1e-12:
            flat.append(name)
            continue
        for policy in policies:
            runs = sorted(raw[policy], key=lambda r: r["seed"])
            columns[policy].append([(np.mean(r["returns"]) - low) / (high - low) for r in runs])
    if not columns[REFERENCE]:
        raise ValueError(f"no task of the suite has headroom (oracle > random): {flat}")
    return {p: np.array(task_columns).T for p, task_columns in columns.items()}, flat


def rank(scores: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per policy: rliable aggregates and P(policy > best-fixed), best IQM first."""
    from maw_gym.stats import AGGREGATES, probability_of_improvement, task_aggregates

    aggregates = task_aggregates(scores)
    rows = []
    for policy, matrix in scores.items():
        row: dict[str, Any] = {"policy": policy, "seeds": matrix.shape[0]}
        for name in AGGREGATES:
            row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = aggregates[policy][name]
        if policy != REFERENCE:
            point, low, high = probability_of_improvement(matrix, scores[REFERENCE])
            row.update(p_improve=point, p_improve_ci_low=low, p_improve_ci_high=high)
        row["per_task"] = matrix.mean(axis=0).tolist()
        rows.append(row)
    return sorted(rows, key=lambda r: -r["iqm"])


def render_markdown(job: SuiteJob, tasks: list[str], flat: list[str], rows: list[dict]) -> str:
    suite = SUITES[job.suite]
    settings = " ".join(f"--set {item}" for item in (*suite.overrides, *job.overrides))

    def cell(row: dict[str, Any], key: str) -> str:
        if key not in row:
            return "–"
        return f"{row[key]:.3f} [{row[f'{key}_ci_low']:.3f}, {row[f'{key}_ci_high']:.3f}]"

    lines = [
        f"Suite {job.suite}: {len(tasks)} tasks (env × tables), preset {suite.preset} "
        f"{settings}".rstrip()
        + ". Normalised test score per task (random 0, oracle 1); rliable aggregates over "
        "(seeds × tasks), 95% CIs from a bootstrap stratified over seeds within tasks. "
        "Optimality gap: mean shortfall below the oracle (lower is better).",
        "",
        "| policy | seeds | IQM [95% CI] | mean [95% CI] | optimality gap [95% CI] "
        "| P(policy > best-fixed) [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["policy"], str(r["seeds"]), cell(r, "iqm"), cell(r, "mean")]
        lines.append(
            "| " + " | ".join([*cells, cell(r, "optimality_gap"), cell(r, "p_improve")]) + " |"
        )
    lines += ["", "| policy | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for r in rows:
        lines.append(f"| {r['policy']} | " + " | ".join(f"{v:.3f}" for v in r["per_task"]) + " |")
    if flat:
        lines += ["", f"Left out (oracle = random on test, nothing to route): {', '.join(flat)}."]
    return "\n".join(lines)


def run_suite(job: SuiteJob) -> str:
    """Every task's leaderboard, then the suite's ranking in ``suite.{md,json}`` and plots;
    returns the markdown."""
    from maw_gym_leaderboard.plots import plot_performance_profiles

    started = time.perf_counter()
    tasks = suite_tasks(job)
    for task in tasks.values():  # every input checked before --fresh deletes anything
        check_dataset(task.dataset, task.resolved())
    prepare_out(job.out, job.fresh)
    resumed = any(job.out.glob("tasks/*/runs/*/seed*/result.json"))
    for task in tasks.values():
        run_leaderboard(task)
    policies = list(next(iter(tasks.values())).policies)
    scores, flat = normalised_scores({name: t.out for name, t in tasks.items()}, policies)
    rows = rank(scores)
    markdown = render_markdown(job, [t for t in tasks if t not in flat], flat, rows)
    with atomic_path(job.out / "suite.md") as tmp:
        tmp.write_text(markdown + "\n")
    write_json(
        job.out / "suite.json",
        {
            "tasks": [t for t in tasks if t not in flat],
            "left_out": flat,
            "rows": rows,
            "scores": {p: s.tolist() for p, s in scores.items()},
        },
    )
    plot_performance_profiles(job.out, scores)
    write_run_record(job.out, job.command_line(), time.perf_counter() - started, resumed)
    return markdown
