"""``maw-gym leaderboard --suite NAME``: rank policies over many tasks, as rliable intends.

A task is one env id over one dataset's tables. Each task runs as an ordinary leaderboard in
``OUT/tasks/<dataset>--<env>/`` (resumable, validated by ``maw-gym validate`` like any other).

Policies are ranked by the leaderboard's one statistic (issue 18): per task, the closed gap
``(π − best-fixed) / (oracle − best-fixed)`` of means over that task's test queries, on return
and on NDCG@10; the suite's figure is its mean over tasks, with a CI from resampling test
queries within every task (:func:`maw_gym.stats.mean_closed_gap`). A task whose oracle does no
better than its best-fixed on a metric has no gap to close and is left out of that metric's
mean (named in ``suite.md``). Beside it, labelled as rliable's, every (policy, seed, task)
becomes a normalised score ``(mean test return − random) / (oracle − random)`` and policies get
rliable's IQM, mean and optimality gap over the ``(seeds, tasks)`` matrix, stratified over
seeds within tasks, performance profiles and the probability of improvement over best-fixed
(Agarwal et al. 2021). The bounds and rerankers without env return are not ranked.

Suites: ``smoke-suite`` (tests), ``quick-suite`` (the quick tables with the 2-layer stack, so
``MAW/LayerwiseDepth`` has its tables: one encoder for all five tasks), ``full-suite`` and
``tier`` (issue 18's ground-truth tier: ``MAW/DepthSelection`` on kjv-tasks at quick, its depths
trained as experts on the query groups of ``metadata.task`` at ρ ∈ {0, 0.25, 0.5, 1}, one task
per ρ, all ordinary ``--set`` overrides; beside the ranking it draws the **dose-response**
figure, every policy's and ceiling's closed gap against ρ, ``dose-response-<metric>.png``); any
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
from maw_gym_leaderboard.study.tier import TIER_CONTROL, TIER_MIXES

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
    """A named list of tasks: ``envs`` over the tables of ``preset`` (with ``overrides``), once
    per variant."""

    preset: str
    overrides: tuple[str, ...]
    envs: tuple[str, ...]
    policies: tuple[str, ...]
    """Ranked on every task: each must accept every env's action space."""
    variants: tuple[tuple[str, tuple[str, ...]], ...] = (("", ()),)
    """(label, further overrides) of each variant of the tables; every env runs on each, as a
    task named with the label."""
    dataset: str | None = None
    """The dataset the suite runs on unless ``--dataset`` names another (default nave-kjv)."""
    dial: str | None = None
    """A preset field the variants set: the x axis of the dose-response figure."""
    control: str = ""
    """Where the suite's tables are built to make routing matter: what ``suite.md`` says first,
    so that no reader takes it for evidence about real data."""


#: Policies of the tier suite: the controls, the learned agents the acceptance names, and the
#: ceilings (reference rows).
TIER_POLICIES = (
    "random",
    "hash",
    REFERENCE,
    "joint-router",
    "grpo",
    "ppo",
    "rllib-ppo",
    "supervised",
    "ceiling-ridge",
    "ceiling-mlp",
    "ceiling-ridge-ndcg",
    "ceiling-mlp-ndcg",
)


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
    "tier": Suite(
        "quick",
        ("specialisation=groups", "groups=task"),
        ("MAW/DepthSelection-v3",),
        TIER_POLICIES,
        variants=tuple((f"rho{rho:g}", (f"group_mix={rho:g}",)) for rho in TIER_MIXES),
        dataset="kjv-tasks",
        dial="group_mix",
        control=TIER_CONTROL,
    ),
}
#: The dataset of a suite that names none, and of ``--dataset``'s default.
DEFAULT_DATASET = "nave-kjv"


@dataclass(frozen=True)
class SuiteJob:
    """What ``maw-gym leaderboard --suite NAME`` is asked."""

    suite: str
    dataset: str | None
    """None: the suite's own (:attr:`Suite.dataset`), else nave-kjv."""
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
        parts = ["maw-gym", "leaderboard", "--dataset", self.main_dataset(), "--suite", self.suite]
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

    def main_dataset(self) -> str:
        """``--dataset``, else the suite's own dataset, else :data:`DEFAULT_DATASET`."""
        return str(self.dataset or SUITES[self.suite].dataset or DEFAULT_DATASET)


def suite_tasks(job: SuiteJob) -> dict[str, LeaderboardJob]:
    """Task name → its own leaderboard."""
    suite = SUITES[job.suite]
    policies = tuple(dict.fromkeys([*(job.policies or suite.policies), REFERENCE]))
    tasks = {}
    for dataset in (job.main_dataset(), *job.add_datasets):
        for env_id in suite.envs:
            for label, variant in suite.variants:
                name = f"{slug(str(dataset))}--{slug(env_id)}" + (f"--{label}" if label else "")
                tasks[name] = LeaderboardJob(
                    dataset=dataset,
                    preset=suite.preset,
                    out=job.out / "tasks" / name,
                    overrides=(*suite.overrides, *variant, *job.overrides),
                    env=env_id,
                    seeds=job.seeds,
                    steps=job.steps,
                    policies=policies,
                )
    return tasks


def dial_value(overrides: tuple[str, ...], dial: str) -> float | None:
    """The last value ``overrides`` give the field ``dial`` (None if none sets it)."""
    values = [item.partition("=")[2] for item in overrides if item.partition("=")[0] == dial]
    return float(values[-1]) if values else None


def plot_dose_responses(job: SuiteJob, tasks: dict[str, LeaderboardJob]) -> list[Path]:
    """For a suite with a dial, per dataset and env and per metric, every policy's and
    ceiling's closed gap against the dial's value (``plot_dose_response``), from each task's
    ``leaderboard.json``; returns the files written."""
    from maw_gym_leaderboard.plots import plot_dose_response

    dial = SUITES[job.suite].dial
    if dial is None:
        return []
    series: dict[str, dict[float, list[dict[str, Any]]]] = {}
    for task in tasks.values():
        value = dial_value(task.overrides, dial)
        rows = task.out / "leaderboard.json"
        if value is None or not rows.exists():
            continue
        prefix = f"{slug(str(task.dataset))}--{slug(task.env)}"
        series.setdefault(prefix, {})[value] = read_json(rows)
    written = []
    single = len(series) == 1
    for prefix, rows_by_value in series.items():
        for metric in ("return", "ndcg"):
            name = (
                f"dose-response-{metric}.png" if single else f"dose-response-{prefix}-{metric}.png"
            )
            plot_dose_response(job.out / name, rows_by_value, metric)
            written.append(job.out / name)
    return written


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


GapTask = tuple[np.ndarray, np.ndarray, np.ndarray]
"""One task's (policy, best-fixed, oracle) per-query values, each ``(seeds, queries)``."""


def gap_tasks(
    task_dirs: dict[str, Path], policies: list[str], metric: str
) -> tuple[dict[str, dict[str, GapTask]], list[str]]:
    """Policy → task → the per-query values of its closed gap on ``metric`` (``return`` or
    ``ndcg``; :data:`~maw_gym_leaderboard.policies.GAP_REFERENCES`), from each task's
    ``raw_scores.json``, and the tasks left out because their oracle does no better than
    best-fixed there (no gap to close)."""
    from maw_gym.stats import GAP_FLOOR, query_means
    from maw_gym_leaderboard.policies import GAP_REFERENCES
    from maw_gym_leaderboard.report import METRIC_KEYS

    key = METRIC_KEYS[metric]
    baseline_name, bound_name = GAP_REFERENCES[metric]
    tasks: dict[str, dict[str, GapTask]] = {p: {} for p in policies}
    flat = []
    for name, directory in task_dirs.items():
        raw = read_json(directory / "raw_scores.json")
        baseline = np.array([r[key] for r in raw[baseline_name]])
        bound = raw[REFERENCE][0]["oracle_returns"] if metric == "return" else None
        oracle = np.array(bound if bound is not None else raw[bound_name][0][key])
        if (query_means(oracle) - query_means(baseline)).mean() <= GAP_FLOOR:
            flat.append(name)
            continue
        for policy in policies:
            tasks[policy][name] = (np.array([r[key] for r in raw[policy]]), baseline, oracle)
    return tasks, flat


def rank(scores: dict[str, np.ndarray], gaps: dict[str, dict[str, dict[str, GapTask]]]) -> list:
    """One row per policy: the mean closed gap over tasks on each metric of ``gaps`` (metric →
    :func:`gap_tasks`), and each task's, with CIs over test queries; rliable's aggregates of
    the normalised ``scores`` and P(policy > best-fixed). Best closed gap on return first."""
    from maw_gym.stats import (
        AGGREGATES,
        closed_gap,
        mean_closed_gap,
        probability_of_improvement,
        task_aggregates,
    )

    aggregates = task_aggregates(scores)
    rows = []
    for policy, matrix in scores.items():
        row: dict[str, Any] = {"policy": policy, "seeds": matrix.shape[0]}
        for metric, by_policy in gaps.items():
            per_task = by_policy[policy]
            if per_task:
                point, low, high = mean_closed_gap(list(per_task.values()))
                key = f"closed_gap_{metric}"
                row.update({key: point, f"{key}_ci_low": low, f"{key}_ci_high": high})
                row[f"per_task_{metric}"] = {t: closed_gap(*v) for t, v in per_task.items()}
        for name in AGGREGATES:
            row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = aggregates[policy][name]
        if policy != REFERENCE:
            point, low, high = probability_of_improvement(matrix, scores[REFERENCE])
            row.update(p_improve=point, p_improve_ci_low=low, p_improve_ci_high=high)
        rows.append(row)
    return sorted(
        rows, key=lambda r: -np.nan_to_num(r.get("closed_gap_return", np.nan), nan=-np.inf)
    )


def _cell(value: tuple[float, float, float] | None) -> str:
    """``point [low, high]``, or ``–`` for no value (no task with a gap)."""
    if value is None or np.isnan(value[0]):
        return "–"
    point, low, high = value
    return f"{point:+.3f} [{low:+.3f}, {high:+.3f}]"


def _triple(row: dict[str, Any], key: str) -> tuple[float, float, float] | None:
    return (row[key], row[f"{key}_ci_low"], row[f"{key}_ci_high"]) if key in row else None


def render_markdown(
    job: SuiteJob,
    tasks: list[str],
    left_out: list[str],
    no_gap: dict[str, list[str]],
    rows: list[dict],
) -> str:
    """The ranking (closed gaps, then rliable's columns), each task's closed gap on return,
    the tasks left out (oracle = random) and those left out of one metric's closed gap
    (``no_gap``: metric → tasks whose oracle equals best-fixed)."""
    suite = SUITES[job.suite]
    settings = " ".join(f"--set {item}" for item in (*suite.overrides, *job.overrides))
    lines = [f"**{suite.control}**", ""] if suite.control else []
    lines += [
        f"Suite {job.suite}: {len(tasks)} tasks (env × tables), preset {suite.preset} "
        f"{settings}".rstrip()
        + ". Closed gap = (π − best-fixed) / (oracle − best-fixed) of means over a task's test "
        "queries (0 best-fixed, 1 the oracle), averaged over tasks; 95% CIs resample test "
        "queries within each task. rliable columns: normalised test score per task (random 0, "
        "oracle 1) aggregated over (seeds × tasks), CIs from a bootstrap stratified over seeds "
        "within tasks; optimality gap is the mean shortfall below the oracle (lower is better).",
        "",
        "| policy | seeds | mean closed gap, return [95% CI] | mean closed gap, NDCG@10 [95% CI] "
        "| rliable: IQM [95% CI] | rliable: mean [95% CI] | rliable: optimality gap [95% CI] "
        "| rliable: P(policy > best-fixed) [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        keys = ("closed_gap_return", "closed_gap_ndcg", "iqm", "mean", "optimality_gap")
        cells = [r["policy"], str(r["seeds"]), *(_cell(_triple(r, k)) for k in keys)]
        lines.append("| " + " | ".join([*cells, _cell(_triple(r, "p_improve"))]) + " |")
    gap_tasks_return = [t for t in tasks if t not in no_gap.get("return", [])]
    lines += [
        "",
        "Closed gap on return per task [95% CI over its test queries]:",
        "",
        "| policy | " + " | ".join(gap_tasks_return) + " |",
        "|---|" + "---|" * len(gap_tasks_return),
    ]
    for r in rows:
        per_task = r.get("per_task_return", {})
        cells = (_cell(per_task.get(t)) for t in gap_tasks_return)
        lines.append(f"| {r['policy']} | " + " | ".join(cells) + " |")
    if left_out:
        lines += [
            "",
            f"Left out (oracle = random on test, nothing to route): {', '.join(left_out)}.",
        ]
    for metric, names in no_gap.items():
        if names:
            label = "NDCG@10" if metric == "ndcg" else metric
            lines += [
                "",
                f"Left out of the {label} closed gap (oracle = best-fixed on test, "
                f"nothing to route): {', '.join(names)}.",
            ]
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
    task_dirs = {name: t.out for name, t in tasks.items()}
    scores, flat = normalised_scores(task_dirs, policies)
    task_dirs = {name: d for name, d in task_dirs.items() if name not in flat}
    gaps, no_gap = {}, {}
    for metric in ("return", "ndcg"):
        gaps[metric], no_gap[metric] = gap_tasks(task_dirs, policies, metric)
    rows = rank(scores, gaps)
    markdown = render_markdown(job, list(task_dirs), flat, no_gap, rows)
    with atomic_path(job.out / "suite.md") as tmp:
        tmp.write_text(markdown + "\n")
    write_json(
        job.out / "suite.json",
        {
            "tasks": list(task_dirs),
            "left_out": flat,
            "no_gap": no_gap,
            "rows": rows,
            "scores": {p: s.tolist() for p, s in scores.items()},
        },
    )
    plot_performance_profiles(job.out, scores)
    plot_dose_responses(job, tasks)
    write_run_record(job.out, job.command_line(), time.perf_counter() - started, resumed)
    return markdown
