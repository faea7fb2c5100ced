"""The main job end to end on the smoke preset: every policy ranked, the JSON honest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from maw_gym_leaderboard.cli import main
from maw_gym_leaderboard.policies import ALL_POLICIES, CEILINGS, NDCG_ORACLE, RERANKERS

REQUIRED = (
    "policy",
    "seeds",
    "kind",
    "return_mean",
    "return_mean_ci_low",
    "return_mean_ci_high",
    "return_iqm",
    "return_iqm_ci_low",
    "return_iqm_ci_high",
    "normalized_score",
    "closed_gap_return",
    "ndcg@10",
    "closed_gap_ndcg",
    "mrr@10",
    "hit@1",
    "train_seconds",
    "env_steps",
)


@pytest.fixture(scope="module")
def leaderboard(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("leaderboard")
    argv = ["leaderboard", "--preset", "smoke", "--seeds", "2", "--steps", "256", "--out", str(out)]
    assert main(argv) == 0
    return out, json.loads((out / "leaderboard.json").read_text())


@pytest.mark.slow
def test_every_policy_is_ranked_with_its_columns(leaderboard: tuple[Path, list[dict]]) -> None:
    out, rows = leaderboard
    assert sorted(r["policy"] for r in rows) == sorted(ALL_POLICIES)
    for row in rows:
        no_return = (*RERANKERS, NDCG_ORACLE)
        keys = (
            REQUIRED
            if row["policy"] not in no_return
            else ("policy", "ndcg@10", "closed_gap_ndcg", "mrr@10")
        )
        assert set(keys) <= set(row), row["policy"]
    for name in (
        "leaderboard.md",
        "leaderboard.csv",
        "raw_scores.json",
        "config.json",
        "scores.png",
        "depth_usage.png",
        "learning_curves.png",
        "probability_of_improvement.png",
    ):
        assert (out / name).stat().st_size > 0, name


@pytest.mark.slow
def test_bounds_and_normalisation_come_from_the_tables(
    leaderboard: tuple[Path, list[dict]],
) -> None:
    """The oracle, the random zero and best-fixed's normalised score, recomputed by hand from
    the test tables' rewards (DepthSelection, weights 0.3/0.3/0.4), not through the env."""
    from maw_gym.build import ensure_tables
    from maw_gym.presets import get_preset

    out, rows = leaderboard
    by_name = {r["policy"]: r for r in rows}
    raw = json.loads((out / "raw_scores.json").read_text())
    tables = ensure_tables("nave-kjv", "test", get_preset("smoke"))
    entropy, focus = (
        values.mean(axis=2, dtype=np.float64) for values in (tables.entropy, tables.focus)
    )
    reward = 0.3 * entropy + 0.3 * focus + 0.4 * tables.alignment.astype(np.float64)  # (N, D)
    oracle = raw["oracle"][0]
    np.testing.assert_allclose(oracle["returns"], reward.max(axis=1), rtol=1e-5)
    assert oracle["random_mean"] == pytest.approx(reward.mean(), rel=1e-5)
    assert oracle["oracle_mean"] == pytest.approx(reward.max(axis=1).mean(), rel=1e-5)
    depth = int(np.argmax(raw["best-fixed"][0]["depth_usage"]))
    span = reward.max(axis=1).mean() - reward.mean()
    expected = (reward[:, depth].mean() - reward.mean()) / span
    assert by_name["best-fixed"]["normalized_score"] == pytest.approx(expected, rel=1e-6)
    assert abs(by_name["random"]["normalized_score"]) < 0.35  # 2 seeds of 24 queries


@pytest.mark.slow
def test_intervals_contain_their_estimates(leaderboard: tuple[Path, list[dict]]) -> None:
    """The intervals are the bootstraps' own (stats.py does not clamp them to the point)."""
    _, rows = leaderboard
    for row in rows:
        if "return_mean" in row:
            # a single deterministic run's seed bootstrap is the point up to float summation
            tolerance = 1e-9 if row["seeds"] == 1 else 0.0
            assert row["return_iqm_ci_low"] - tolerance <= row["return_iqm"], row["policy"]
            assert row["return_iqm"] <= row["return_iqm_ci_high"] + tolerance, row["policy"]
            assert row["return_mean_ci_low"] <= row["return_mean"] <= row["return_mean_ci_high"]
            assert row["return_mean_ci_high"] - row["return_mean_ci_low"] > 1e-6  # over queries
        assert row["ndcg@10_ci_low"] <= row["ndcg@10"] <= row["ndcg@10_ci_high"], row["policy"]
    learned = [r for r in rows if r["seeds"] > 1 and "return_mean" in r]
    assert any(r["return_iqm_ci_high"] - r["return_iqm_ci_low"] > 1e-6 for r in learned)


@pytest.mark.slow
def test_bounds_are_listed_apart_and_unranked(leaderboard: tuple[Path, list[dict]]) -> None:
    out, rows = leaderboard
    assert [r["policy"] for r in rows if r["kind"] == "bound"] == ["oracle", NDCG_ORACLE]
    assert all(r["kind"] == "bound" for r in rows[-2:])  # after every policy and ceiling
    assert {r["policy"] for r in rows if r["kind"] == "ceiling"} == set(CEILINGS)
    by_name = {r["policy"]: r for r in rows}
    # per query the best depth's NDCG@10 is at least the best fixed depth's
    assert by_name[NDCG_ORACLE]["ndcg@10"] >= by_name["best-fixed-ndcg"]["ndcg@10"] - 1e-9
    assert by_name["oracle"]["closed_gap_return"] == pytest.approx(1.0)
    assert by_name["best-fixed"]["closed_gap_return"] == 0.0
    markdown = (out / "leaderboard.md").read_text()
    ranked, rest = markdown.split("Ceilings, reference rows")
    ceilings, bounds = rest.split("Bounds, not policies")
    assert "| oracle |" in bounds and "| oracle |" not in ranked + ceilings
    assert "| ceiling-ridge |" in ceilings and "| ceiling-ridge |" not in ranked
    assert "What the ceiling says:" in bounds  # the verdicts close the page


@pytest.mark.slow
def test_readme_tables_prints_the_command_and_the_table(
    leaderboard: tuple[Path, list[dict]], capsys: pytest.CaptureFixture[str]
) -> None:
    import runpy

    script = Path(__file__).resolve().parent.parent / "scripts" / "readme_tables.py"
    readme_main = runpy.run_path(str(script))["main"]
    out, _ = leaderboard
    record = json.loads((out / "run.json").read_text())
    assert record["command"].startswith("maw-gym leaderboard --dataset nave-kjv --preset smoke")
    assert "--seeds 2 --steps 256" in record["command"]
    assert 0 < record["tables_seconds"] <= record["seconds"]
    capsys.readouterr()
    assert readme_main([str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"`{record['command']}`" in printed
    assert (out / "leaderboard.md").read_text().strip() in printed
    assert readme_main([str(out / "runs")]) == 2
    assert "needs run.json" in capsys.readouterr().err


@pytest.mark.slow
def test_a_second_run_resumes_from_finished_results(
    leaderboard: tuple[Path, list[dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, rows = leaderboard

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished (policy, seed) was trained again")

    monkeypatch.setattr("maw_gym_agents.train.train_agent", no_training)
    assert (
        main(
            [
                "leaderboard",
                "--preset",
                "smoke",
                "--seeds",
                "2",
                "--steps",
                "256",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    again = json.loads((out / "leaderboard.json").read_text())
    assert [r["policy"] for r in again] == [r["policy"] for r in rows]
    assert [r.get("return_mean") for r in again] == [r.get("return_mean") for r in rows]


@pytest.mark.slow
def test_validate_replays_every_submission_of_the_run(
    leaderboard: tuple[Path, list[dict]], capsys: pytest.CaptureFixture[str]
) -> None:
    out, rows = leaderboard
    scored = [r for r in rows if "return_mean" in r]
    submissions = sorted(out.glob("runs/*/seed*/submission.json"))
    assert len(submissions) == sum(r["seeds"] for r in scored)
    assert main(["validate", str(out)]) == 0, capsys.readouterr().out
    assert f"{len(submissions)} submissions replayed" in capsys.readouterr().out


def _tiny_folder(root: Path, splits: dict[str, int]) -> Path:
    from maw_gym.data.writer import write_beir_folder

    corpus = {
        f"d{i}": {"title": "", "text": f"verse number {i} about topic {i % 5}"} for i in range(40)
    }
    queries, qrels = {}, {}
    for split, count in splits.items():
        qrels[split] = {}
        for i in range(count):
            qid = f"{split}{i}"
            queries[qid] = f"topic {i % 5}"
            qrels[split][qid] = {f"d{i % 40}": 1}
    return write_beir_folder(root, corpus, queries, qrels)


@pytest.mark.parametrize(
    ("splits", "expected"),
    [
        # a test-only folder: the error names the missing split and the ones that exist
        ({"test": 12}, ("'train'", "test")),
        ({"train": 12, "dev": 3, "test": 12}, ("split 'dev' has 3 judged queries",)),
    ],
)
def test_unusable_datasets_are_refused_before_training(
    splits: dict[str, int],
    expected: tuple[str, ...],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = _tiny_folder(tmp_path / "beir", splits)
    out = tmp_path / "out"
    argv = ["leaderboard", "--dataset", str(folder), "--preset", "smoke", "--out", str(out)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert all(text in error for text in expected), error
    assert not (out / "leaderboard.json").exists()


def _result(policy: str, returns: list[float], ndcg: list[float] | None = None) -> dict:
    """A result.json as ``score_router`` writes it: per-query returns on four queries whose
    random expectation is 0 and oracle 2, and (optionally) per-query NDCG@10."""
    result = {
        "policy": policy,
        "seed": 0,
        "returns": returns,
        "random_mean": 0.0,
        "oracle_mean": 2.0,
        "random_returns": [0.0] * len(returns),
        "oracle_returns": [2.0] * len(returns),
        "depth_usage": [1.0, 0.0],
        "depth_usage_entropy": 0.0,
        "latency_ms_per_query": 0.0,
        "train_seconds": 0.0,
        "env_steps": 0,
    }
    if ndcg is not None:
        result.update({"ndcg_per_query": ndcg, "mrr@10": 0.0, "hit@1": 0.0})
    return result


def test_return_differences_to_best_fixed_are_paired_and_ties_marked() -> None:
    from maw_gym_leaderboard.report import summarise

    results = {
        "best-fixed": [_result("best-fixed", [0.0, 0.0, 0.0, 0.0])],
        "grpo": [_result("grpo", [1.0, 1.0, 1.0, 1.0])],  # better on every query
        "ppo": [_result("ppo", [1.0, -1.0, 1.0, -1.0])],  # mean 0: a tie
    }
    rows = {r["policy"]: r for r in summarise(results)}
    assert rows["grpo"]["return_vs_best_fixed"] == pytest.approx(1.0)
    assert rows["grpo"]["return_vs_best_fixed_ci_low"] == pytest.approx(1.0)
    assert not rows["grpo"]["return_vs_best_fixed_tie"]
    assert rows["ppo"]["return_vs_best_fixed"] == pytest.approx(0.0)
    assert rows["ppo"]["return_vs_best_fixed_tie"]
    assert "return_vs_best_fixed" not in rows["best-fixed"]
    # closed gap: (1 − 0) / (2 − 0) on every query, so its paired CI is the point
    assert (
        rows["grpo"]["closed_gap_return"],
        rows["grpo"]["closed_gap_return_ci_low"],
        rows["grpo"]["closed_gap_return_ci_high"],
    ) == pytest.approx((0.5, 0.5, 0.5))
    assert rows["grpo"]["normalized_score"] == pytest.approx(0.5)  # random 0, oracle 2
    # what dev selection kept, per seed
    kept = {"selected": True, "constant_depth": 3, "constant_kept": True}
    results["grpo"] += [{**_result("grpo", [0.0] * 4), "seed": 1, "dev_choice": kept}]
    results["grpo"][0]["dev_choice"] = {**kept, "constant_kept": False}
    rows = {r["policy"]: r for r in summarise(results)}
    assert rows["grpo"]["kept_on_dev"] == "checkpoint 1/2, depth 3 1/2"
    assert "kept_on_dev" not in rows["best-fixed"]


def test_each_metric_compares_with_its_own_best_fixed_and_the_ceiling_speaks() -> None:
    """Return columns against best-fixed, NDCG@10 columns against best-fixed-ndcg (another
    depth), each with its own oracle; the verdicts follow the ceilings chosen on dev."""
    from maw_gym_leaderboard.report import summarise, verdicts

    ndcg_oracle = [0.8, 0.8, 0.8, 0.8]
    reranker = {"mrr@10": 0.0, "hit@1": 0.0, "train_seconds": 0.0, "env_steps": 0}

    def ceiling(name: str, target: str, dev_mean: float, returns: list, ndcg: list) -> dict:
        choice = {"learner": "ridge", "target": target, "dev_mean": dev_mean}
        return {**_result(name, returns, ndcg), "ceiling": {**choice, "penalty_per_query": 1.0}}

    results = {
        "best-fixed": [_result("best-fixed", [1.0] * 4, [0.2] * 4)],
        "best-fixed-ndcg": [_result("best-fixed-ndcg", [0.5] * 4, [0.4] * 4)],
        # a reranker row (score_reranker): per-query NDCG@10, no env return
        NDCG_ORACLE: [{"policy": NDCG_ORACLE, "ndcg_per_query": ndcg_oracle, **reranker}],
        "grpo": [_result("grpo", [1.0] * 4, [0.6] * 4)],
        # return: the dev-chosen ceiling ties best-fixed (the other, worse on dev, is above)
        "ceiling-ridge": [ceiling("ceiling-ridge", "return", 0.9, [1.0, 1.0, 1.2, 0.8], [0.2] * 4)],
        "ceiling-mlp": [ceiling("ceiling-mlp", "return", 0.1, [1.5] * 4, [0.2] * 4)],
        # NDCG@10: the ceiling is above best-fixed-ndcg, and so is grpo
        "ceiling-ridge-ndcg": [ceiling("ceiling-ridge-ndcg", "ndcg", 0.5, [1.0] * 4, [0.7] * 4)],
    }
    rows = {r["policy"]: r for r in summarise(results)}
    assert rows["grpo"]["return_vs_best_fixed"] == pytest.approx(0.0)
    assert rows["grpo"]["ndcg_vs_best_fixed"] == pytest.approx(0.2)  # 0.6 − 0.4, not − 0.2
    assert rows["grpo"]["closed_gap_ndcg"] == pytest.approx(0.5)  # (0.6 − 0.4) / (0.8 − 0.4)
    assert rows["grpo"]["closed_gap_return"] == pytest.approx(0.0)  # (1 − 1) / (2 − 1)
    assert rows["best-fixed-ndcg"]["closed_gap_ndcg"] == 0.0
    assert rows["best-fixed"]["fixed_depth"] == 0
    assert [r["kind"] for r in summarise(results)][-1] == "bound"
    said = verdicts(list(rows.values()))
    assert len(said) == 2
    assert "On return" in said[0] and "`ceiling-ridge`" in said[0]
    assert "no learnable routing signal" in said[0]
    assert "On NDCG@10" in said[1] and "so are `grpo`" in said[1]
    results["grpo"] = [_result("grpo", [1.0] * 4, [0.4] * 4)]
    said = verdicts(summarise(results))
    assert "**the agents fail**" in said[1]
    reranker["ndcg_per_query"] = [0.4] * 4  # oracle-ndcg = best-fixed-ndcg: no gap
    results[NDCG_ORACLE] = [{"policy": NDCG_ORACLE, **reranker}]
    assert "**there is nothing to route**" in verdicts(summarise(results))[1]


def test_dose_response_plots_every_policy_and_ceiling_against_rho(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line per policy and ceiling over ρ; unbounded CIs and unknown points still draw."""
    from matplotlib import pyplot as plt

    from maw_gym_leaderboard.plots import plot_dose_response

    def row(policy: str, kind: str, gap: float, low: float, high: float) -> dict:
        return {
            "policy": policy,
            "kind": kind,
            "closed_gap_return": gap,
            "closed_gap_return_ci_low": low,
            "closed_gap_return_ci_high": high,
        }

    rows_by_rho = {
        0.0: [
            row("best-fixed", "policy", 0.0, 0.0, 0.0),
            row("grpo", "policy", 0.6, 0.4, 0.8),
            row("ceiling-ridge", "ceiling", 0.9, 0.8, 1.0),
            row("oracle", "bound", 1.0, 1.0, 1.0),
        ],
        1.0: [
            row("grpo", "policy", 0.0, -np.inf, np.inf),
            row("ceiling-ridge", "ceiling", float("nan"), -np.inf, np.inf),
        ],
    }
    drawn: list[list[str]] = []
    original = plt.Axes.legend

    def remember(ax: plt.Axes, *args: object, **kwargs: object) -> object:
        drawn.append(ax.get_legend_handles_labels()[1])
        return original(ax, *args, **kwargs)

    monkeypatch.setattr(plt.Axes, "legend", remember)
    plot_dose_response(tmp_path / "dose.png", rows_by_rho)
    assert drawn == [
        ["grpo", "ceiling-ridge"]
    ]  # neither the bound nor best-fixed (0 by definition)
    assert (tmp_path / "dose.png").stat().st_size > 0
