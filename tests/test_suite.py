"""Suites: rliable aggregates over tasks, by hand and end to end at smoke."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from maw_gym.cache import write_json
from maw_gym.stats import task_aggregates
from maw_gym_leaderboard.cli import main
from maw_gym_leaderboard.suite import SUITES, normalised_scores


def test_task_aggregates_hand_computed() -> None:
    # one run per task: nothing to resample, so every CI is the point itself
    scores = {"a": np.array([[0.0, 0.5, 1.0, 1.5]]), "b": np.array([[0.2, 0.2, 0.2, 0.2]])}
    result = task_aggregates(scores)
    assert result["a"]["mean"] == pytest.approx((0.75, 0.75, 0.75))
    assert result["a"]["iqm"][0] == pytest.approx(0.75)  # trims 0.0 and 1.5: mean of 0.5, 1.0
    # optimality gap: mean of max(1 - x, 0) = (1 + 0.5 + 0 + 0) / 4
    assert result["a"]["optimality_gap"] == pytest.approx((0.375, 0.375, 0.375))
    assert result["b"]["optimality_gap"][0] == pytest.approx(0.8)


def _raw(directory: Path, random_mean: float, oracle_mean: float, returns: dict) -> Path:
    write_json(
        directory / "raw_scores.json",
        {
            policy: [
                {"seed": s, "returns": r, "random_mean": random_mean, "oracle_mean": oracle_mean}
                for s, r in enumerate(runs)
            ]
            for policy, runs in returns.items()
        },
    )
    return directory


def test_normalised_scores_per_task_and_flat_tasks_left_out(tmp_path) -> None:
    tasks = {
        "t1": _raw(
            tmp_path / "t1",
            1.0,
            3.0,
            {"best-fixed": [[2.0, 2.0]], "grpo": [[3.0, 3.0], [1.0, 2.0]]},
        ),
        "t2": _raw(tmp_path / "t2", 0.0, 1.0, {"best-fixed": [[0.5]], "grpo": [[1.0], [0.0]]}),
        "flat": _raw(tmp_path / "t3", 0.4, 0.4, {"best-fixed": [[0.4]], "grpo": [[0.4], [0.4]]}),
    }
    scores, flat = normalised_scores(tasks, ["best-fixed", "grpo"])
    assert flat == ["flat"]
    np.testing.assert_allclose(scores["best-fixed"], [[0.5, 0.5]])
    # grpo seed 0: (3 - 1) / 2 = 1 and 1; seed 1: (1.5 - 1) / 2 = 0.25 and 0
    np.testing.assert_allclose(scores["grpo"], [[1.0, 1.0], [0.25, 0.0]])


def test_closed_gap_per_task_and_its_mean_over_tasks(tmp_path) -> None:
    """Return against best-fixed with each query's oracle; NDCG@10 against best-fixed-ndcg and
    oracle-ndcg; a task whose oracle equals best-fixed is left out of that metric."""
    from maw_gym_leaderboard.suite import gap_tasks, rank

    def task(name: str, oracle: float, grpo: list[float], ndcg_oracle: float) -> Path:
        def run(returns: list[float], ndcg: float) -> dict:
            return {
                "seed": 0,
                "returns": returns,
                "random_mean": 0.0,
                "oracle_mean": oracle,
                "oracle_returns": [oracle] * 2,
                "ndcg_per_query": [ndcg] * 2,
            }

        raw = {
            "best-fixed": [run([1.0, 1.0], 0.2)],
            "best-fixed-ndcg": [run([0.5, 0.5], 0.4)],
            "oracle-ndcg": [{"seed": 0, "ndcg_per_query": [ndcg_oracle] * 2}],
            "grpo": [run(grpo, 0.6)],
        }
        write_json(tmp_path / name / "raw_scores.json", raw)
        return tmp_path / name

    dirs = {"t1": task("t1", 2.0, [1.5, 1.5], 0.8), "t2": task("t2", 3.0, [3.0, 3.0], 0.4)}
    policies = ["best-fixed", "grpo"]
    gaps = {m: gap_tasks(dirs, policies, m) for m in ("return", "ndcg")}
    assert gaps["return"][1] == [] and gaps["ndcg"][1] == ["t2"]  # t2: oracle-ndcg = 0.4
    scores, _ = normalised_scores(dirs, policies)
    rows = {r["policy"]: r for r in rank(scores, {m: g[0] for m, g in gaps.items()})}
    # return: t1 (1.5 − 1) / (2 − 1) = 0.5, t2 (3 − 1) / (3 − 1) = 1; mean 0.75, every
    # query alike, so the CI is the point
    grpo = rows["grpo"]
    assert (
        grpo["closed_gap_return"],
        grpo["closed_gap_return_ci_low"],
        grpo["closed_gap_return_ci_high"],
    ) == pytest.approx((0.75, 0.75, 0.75))
    assert grpo["per_task_return"]["t2"] == pytest.approx((1.0, 1.0, 1.0))
    assert grpo["closed_gap_ndcg"] == pytest.approx(0.5)  # t1 only: (0.6 − 0.4) / (0.8 − 0.4)
    assert rows["best-fixed"]["closed_gap_return"] == 0.0
    assert [r["policy"] for r in rank(scores, {m: g[0] for m, g in gaps.items()})] == [
        "grpo",
        "best-fixed",
    ]


def test_smoke_suite_end_to_end(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["leaderboard", "--suite", "smoke-suite", "--seeds", "2", "--steps", "128"]
    argv += ["--policies", "random", "best-fixed", "--out", "suite"]
    assert main(argv) == 0
    out = tmp_path / "suite"
    summary = json.loads((out / "suite.json").read_text())
    assert len(summary["tasks"]) + len(summary["left_out"]) == len(SUITES["smoke-suite"].envs)
    rows = {r["policy"]: r for r in summary["rows"]}
    assert set(rows) == {"random", "best-fixed"}
    for policy, row in rows.items():
        scores = np.array(summary["scores"][policy])  # (seeds, tasks)
        assert scores.shape == (row["seeds"], len(summary["tasks"]))
        assert row["mean"] == pytest.approx(scores.mean())
        assert row["optimality_gap"] == pytest.approx(np.maximum(1.0 - scores, 0.0).mean())
        assert row["iqm_ci_low"] <= row["iqm"] <= row["iqm_ci_high"]
        assert row["closed_gap_return_ci_low"] <= row["closed_gap_return"]
    assert rows["best-fixed"]["closed_gap_return"] == 0.0
    assert rows["random"]["seeds"] == 2 and "p_improve" in rows["random"]
    assert (out / "performance_profile.png").stat().st_size > 0
    markdown = (out / "suite.md").read_text()
    assert "mean closed gap, return [95% CI]" in markdown
    assert "rliable: IQM [95% CI]" in markdown and "optimality gap [95% CI]" in markdown
    record = json.loads((out / "run.json").read_text())
    assert "--suite smoke-suite" in record["command"] and "--out suite" in record["command"]
    assert "--preset" not in record["command"]
    capsys.readouterr()
    task = next((out / "tasks").iterdir())
    assert main(["validate", str(task)]) == 0
    assert main([*argv, "--preset", "quick"]) == 2  # a suite names its own preset
    assert "drop --preset" in capsys.readouterr().err


def test_the_tier_suite_is_one_task_per_rho_of_ordinary_overrides(tmp_path: Path) -> None:
    """Issue 18's tier: ρ ∈ {0, 0.25, 0.5, 1} on kjv-tasks at quick, each ρ a task whose
    leaderboard is an ordinary one on ``--set`` overrides (the same encoder and tables as
    ``maw-gym tier``); another dataset replaces kjv-tasks unchanged."""
    from maw_gym_leaderboard.suite import SuiteJob, dial_value, suite_tasks

    tasks = suite_tasks(SuiteJob("tier", None, tmp_path))
    assert list(tasks) == [
        f"kjv-tasks--DepthSelection-v3--rho{rho}" for rho in ("0", "0.25", "0.5", "1")
    ]
    first = tasks["kjv-tasks--DepthSelection-v3--rho0"]
    assert (first.dataset, first.preset) == ("kjv-tasks", "quick")
    assert first.overrides == ("specialisation=groups", "groups=task", "group_mix=0")
    assert first.resolved().encoder.group_mix == 0.0
    assert [dial_value(t.overrides, "group_mix") for t in tasks.values()] == [0, 0.25, 0.5, 1]
    assert "--dataset kjv-tasks --suite tier" in SuiteJob("tier", None, tmp_path).command_line()
    other = suite_tasks(SuiteJob("tier", "/data/labelled", tmp_path))
    assert {t.dataset for t in other.values()} == {"/data/labelled"}
    assert {t.dataset for t in suite_tasks(SuiteJob("smoke-suite", None, tmp_path)).values()} == {
        "nave-kjv"
    }
    assert {"grpo", "ppo", "rllib-ppo", "supervised", "hash", "random"} <= set(first.policies)


def test_dose_response_figures_come_from_each_rho_tasks_rows(tmp_path: Path) -> None:
    from maw_gym_leaderboard.suite import SuiteJob, plot_dose_responses, suite_tasks

    job = SuiteJob("tier", None, tmp_path)
    tasks = suite_tasks(job)
    for index, task in enumerate(tasks.values()):
        if index == 3:
            continue  # a task not run yet is left out of the figure
        rows = [
            {
                "policy": name,
                "kind": kind,
                **{
                    f"closed_gap_{metric}{end}": 0.5 - 0.1 * index + shift
                    for metric in ("return", "ndcg")
                    for end, shift in (("", 0.0), ("_ci_low", -0.1), ("_ci_high", 0.1))
                },
            }
            for name, kind in (("grpo", "policy"), ("ceiling-ridge", "ceiling"))
        ]
        write_json(task.out / "leaderboard.json", rows)
    written = plot_dose_responses(job, tasks)
    assert [p.name for p in written] == ["dose-response-return.png", "dose-response-ndcg.png"]
    assert all(p.stat().st_size > 0 for p in written)
    assert plot_dose_responses(SuiteJob("smoke-suite", None, tmp_path), {}) == []


def test_the_tier_is_labelled_a_control_where_its_suite_is_shown(tmp_path: Path) -> None:
    from maw_gym_leaderboard.suite import SuiteJob, render_markdown

    rows = [{"policy": "best-fixed", "seeds": 1}]
    tier = render_markdown(SuiteJob("tier", None, tmp_path), ["t"], [], {}, rows)
    assert tier.startswith("**A control built to make routing matter")
    smoke = render_markdown(SuiteJob("smoke-suite", None, tmp_path), ["t"], [], {}, rows)
    assert smoke.startswith("Suite smoke-suite")
