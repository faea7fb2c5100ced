"""The main job end to end on the smoke preset: every policy ranked, the JSON honest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from maw_gym_leaderboard.cli import main
from maw_gym_leaderboard.policies import ALL_POLICIES, NDCG_ORACLE, RERANKERS

REQUIRED = (
    "policy",
    "seeds",
    "return_mean",
    "return_iqm",
    "return_ci_low",
    "return_ci_high",
    "normalized_score",
    "ndcg@10",
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
        keys = REQUIRED if row["policy"] not in no_return else ("policy", "ndcg@10", "mrr@10")
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
            # a single deterministic run's bootstrap is the point up to float summation noise
            tolerance = 1e-9 if row["seeds"] == 1 else 0.0
            assert row["return_ci_low"] - tolerance <= row["return_iqm"], row["policy"]
            assert row["return_iqm"] <= row["return_ci_high"] + tolerance, row["policy"]
        assert row["ndcg_ci_low"] <= row["ndcg@10"] <= row["ndcg_ci_high"], row["policy"]
    learned = [r for r in rows if r["seeds"] > 1 and "return_mean" in r]
    assert any(r["return_ci_high"] - r["return_ci_low"] > 1e-6 for r in learned)


@pytest.mark.slow
def test_bounds_are_listed_apart_and_unranked(leaderboard: tuple[Path, list[dict]]) -> None:
    out, rows = leaderboard
    assert [r["policy"] for r in rows if r["bound"]] == ["oracle", NDCG_ORACLE]
    assert all(r["bound"] for r in rows[-2:])  # after every policy
    by_name = {r["policy"]: r for r in rows}
    # per query the best depth's NDCG@10 is at least the best fixed depth's
    assert by_name[NDCG_ORACLE]["ndcg@10"] >= by_name["best-fixed"]["ndcg@10"] - 1e-9
    ranked, bounds = (out / "leaderboard.md").read_text().split("Bounds, not policies")
    assert "| oracle |" in bounds and "| oracle |" not in ranked


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


def _result(policy: str, returns: list[float]) -> dict:
    return {
        "policy": policy,
        "seed": 0,
        "returns": returns,
        "random_mean": 0.0,
        "oracle_mean": 2.0,
        "depth_usage_entropy": 0.0,
        "latency_ms_per_query": 0.0,
        "train_seconds": 0.0,
        "env_steps": 0,
    }


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
