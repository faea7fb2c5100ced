"""``maw-gym train`` and ``maw-gym evaluate`` end to end on synthetic tables files."""

from __future__ import annotations

import json

import pytest

from maw_gym.tables import Tables
from maw_gym_agents.train import AGENTS
from maw_gym_leaderboard.cli import main

ENV = "MAW/DepthSelectionRetrieval-v3"  # alignment only: depth 1 is best on synthetic tables


@pytest.fixture(scope="module")
def tables_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tables")
    paths = []
    for split, seed in (("train", 0), ("dev", 1)):
        path = directory / f"{split}.tables"
        Tables.synthetic(num_queries=32, best_depth=1, seed=seed).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize(
    "agent", ["grpo", "grpo-enum", "supervised", "supervised-rule", "best-fixed"]
)
def test_train_then_evaluate(agent, tables_files, tmp_path, capsys) -> None:
    train_path, dev_path = tables_files
    out = tmp_path / agent
    code = main(
        [
            "train",
            "--agent",
            agent,
            "--env",
            ENV,
            "--seed",
            "0",
            "--steps",
            "1024",
            "--out",
            str(out),
            "--train-tables",
            str(train_path),
            "--dev-tables",
            str(dev_path),
        ]
    )
    assert code == 0
    record = json.loads((out / "training.json").read_text())
    assert record["agent"] == agent and record["env_id"] == ENV
    assert (out / "router.json").exists() and (out / "metrics.json").exists()
    capsys.readouterr()
    assert main(["evaluate", "--router", str(out), "--tables", str(dev_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["normalized_score"] == pytest.approx(record["dev_normalized_score"])
    assert summary["normalized_score"] > 0.5
    # The retrieval env's return is the env's own NDCG@10 of the rerank; beir's NDCG@10 of the
    # same rerank (every relevant document is a candidate here) must agree with it.
    assert summary["NDCG@10"] == pytest.approx(summary["mean_return"], abs=1e-4)


def test_unknown_agent_is_named(tables_files, tmp_path, capsys) -> None:
    argv = [
        "train",
        "--agent",
        "ppo2",
        "--out",
        str(tmp_path),
        "--train-tables",
        str(tables_files[0]),
    ]
    assert main(argv) == 2
    assert "unknown agent 'ppo2'" in capsys.readouterr().err
    assert {"grpo", "grpo-enum", "supervised", "supervised-rule", "supervised-depth"} <= set(AGENTS)
