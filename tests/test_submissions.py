"""Replayable submissions: `maw-gym validate` re-scores recorded actions and catches changes."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import maw_gym  # noqa: F401  (registers the envs)
from maw_gym.artifacts import export_artifact
from maw_gym.cache import write_json
from maw_gym.tables import Tables
from maw_gym_leaderboard.cli import main
from maw_gym_leaderboard.submissions import SUBMISSION_FILE, validate_run, write_submission

ENV = "MAW/DepthSelection-v3"
LAYERWISE = "MAW/LayerwiseDepth-v3"


@pytest.fixture(scope="module")
def tables() -> Tables:
    return Tables.synthetic(num_queries=16, best_depth=2, layers=True, seed=3)


def _single_env_returns(env_id: str, tables: Tables, actions: np.ndarray) -> np.ndarray:
    """Returns computed through the single env, a code path apart from validate's vector env."""
    env = gym.make(env_id, tables=tables)
    returns = []
    for query, steps in enumerate(actions):
        env.reset(options={"query_index": query})
        returns.append(sum(float(env.step(int(a))[1]) for a in steps))
    return np.array(returns)


def _write_run(out: Path, tables: Tables, env_id: str = ENV) -> dict[str, np.ndarray]:
    """A two-policy leaderboard directory on ``env_id`` over ``tables`` (test split), as the
    leaderboard writes it: its config, per (policy, seed) submissions and leaderboard.json
    means."""
    rng = np.random.default_rng(0)
    steps = 2 if env_id == LAYERWISE else 1
    policies = {
        "fixed-2": np.full((tables.num_queries, steps), 2),
        "random": rng.integers(0, tables.depth, size=(tables.num_queries, steps)),
    }
    rows = []
    for policy, actions in policies.items():
        returns = _single_env_returns(env_id, tables, actions)
        write_submission(
            out / "runs" / policy / "seed0", policy, 0, env_id, tables, actions, returns
        )
        rows.append({"policy": policy, "return_mean": float(returns.mean())})
    write_json(out / "leaderboard.json", rows)
    write_json(out / "config.json", {"env": env_id})
    return policies


@pytest.mark.parametrize("env_id", [ENV, LAYERWISE])
def test_recorded_actions_replay_to_the_recorded_returns(tables, tmp_path, env_id) -> None:
    _write_run(tmp_path, tables, env_id)
    count, issues = validate_run(tmp_path, tables)
    assert count == 2 and issues == []


def test_a_changed_action_is_reported_by_query(tables, tmp_path) -> None:
    _write_run(tmp_path, tables)
    path = tmp_path / "runs" / "fixed-2" / "seed0" / SUBMISSION_FILE
    record = json.loads(path.read_text())
    record["actions"][5] = [0]  # depth 0 instead of the best depth 2: a different return
    path.write_text(json.dumps(record))
    _, issues = validate_run(tmp_path, tables)
    assert [(i.policy, i.what) for i in issues] == [
        ("fixed-2", f"return of query {tables.query_ids[5]}"),
        ("fixed-2", "leaderboard.json return_mean"),
    ]


def test_a_result_without_its_submission_is_reported(tables, tmp_path) -> None:
    _write_run(tmp_path, tables)
    write_json(
        tmp_path / "runs" / "ppo" / "seed1" / "result.json",
        {"policy": "ppo", "seed": 1, "returns": [0.1]},
    )
    _, issues = validate_run(tmp_path, tables)
    assert [(i.policy, i.seed, i.what) for i in issues] == [("ppo", 1, "submission")]


def test_other_tables_are_refused_by_fingerprint(tables, tmp_path) -> None:
    _write_run(tmp_path, tables)
    other = Tables.synthetic(num_queries=16, best_depth=2, layers=True, seed=4)
    _, issues = validate_run(tmp_path, other)
    assert {i.what for i in issues} == {"tables fingerprint"}


def test_cli_exit_codes_with_an_artifact(tables, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    _write_run(run, tables)
    artifact = tmp_path / "bench.tar"
    export_artifact({"test": tables}, {"preset": {"name": "synthetic"}}, artifact)
    assert main(["validate", str(run), "--tables", str(artifact)]) == 0
    assert "2 submissions replayed" in capsys.readouterr().out
    leaderboard = json.loads((run / "leaderboard.json").read_text())
    leaderboard[0]["return_mean"] += 1e-3  # a reported score the actions do not give
    (run / "leaderboard.json").write_text(json.dumps(leaderboard))
    assert main(["validate", str(run), "--tables", str(artifact)]) == 1
    assert "leaderboard.json return_mean" in capsys.readouterr().out
    (run / "runs" / "random" / "seed0" / SUBMISSION_FILE).write_text('{"policy": "random"}')
    assert main(["validate", str(run), "--tables", str(artifact)]) == 2
    assert "not a submission" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "nothing"), "--tables", str(artifact)]) == 2


def test_trust_routers_reruns_saved_routers_and_warns(tables, tmp_path, capsys) -> None:
    from maw_gym_agents.evaluate import evaluate_router
    from maw_gym_agents.grpo import GRPOConfig, train

    router, _ = train(ENV, tables, GRPOConfig(total_env_steps=256), progress=False)
    run_dir = tmp_path / "runs" / "grpo" / "seed0"
    router.save(run_dir)
    result = evaluate_router(router, ENV, tables)
    write_submission(run_dir, "grpo", 0, ENV, tables, result.actions, result.returns)
    write_json(tmp_path / "leaderboard.json", [])
    write_json(tmp_path / "config.json", {"env": ENV})
    assert validate_run(tmp_path, tables, trust_routers=True)[1] == []

    path = run_dir / SUBMISSION_FILE
    record = json.loads(path.read_text())
    record["actions"][0] = [(record["actions"][0][0] + 1) % tables.depth]
    record["returns"][0] = float(_single_env_returns(ENV, tables, [record["actions"][0]])[0])
    path.write_text(json.dumps(record))  # consistent actions and returns, not the router's
    assert validate_run(tmp_path, tables)[1] == []  # replay alone cannot tell
    issues = validate_run(tmp_path, tables, trust_routers=True)[1]
    assert [i.what for i in issues] == [f"router's action on query {tables.query_ids[0]}"]
    artifact = tmp_path / "bench.tar"
    export_artifact({"test": tables}, {}, artifact)
    assert main(["validate", str(tmp_path), "--tables", str(artifact), "--trust-routers"]) == 1
    assert "unpickles code" in capsys.readouterr().err
