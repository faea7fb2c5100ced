"""Dev learning curves: one protocol (budgets, every dev query, deterministic) for every agent."""

from __future__ import annotations

import json

import pytest

from maw_gym.tables import Tables
from maw_gym_agents.curve import DevCurve
from maw_gym_agents.evaluate import evaluate_router
from maw_gym_agents.heuristics import heuristic_routers
from maw_gym_agents.train import train_agent

ENV = "MAW/DepthSelection-v3"


@pytest.fixture(scope="module")
def dev() -> Tables:
    return Tables.synthetic(num_queries=16, best_depth=1, seed=5)


def test_one_point_per_budget_reached_at_the_first_call_past_it(dev) -> None:
    routers = heuristic_routers(ENV, dev, dev)
    curve = DevCurve(ENV, dev, total_steps=100, points=4)  # budgets 25, 50, 75, 100
    recorded = [curve(routers["fixed-1"], steps) for steps in (10, 30, 40, 90, 100, 120)]
    assert [p["env_steps"] for p in curve.points] == [30.0, 90.0, 100.0]  # 90 passes 50 and 75
    assert recorded[0] is None and recorded[2] is None and recorded[5] is None
    # each point is the router on every dev query once, deterministically
    expected = evaluate_router(routers["fixed-1"], ENV, dev).mean_return
    assert curve.points[0]["dev_return"] == pytest.approx(expected)


def test_no_dev_tables_no_points(dev) -> None:
    curve = DevCurve(ENV, None, total_steps=10)
    assert not curve.due(10**6)
    assert curve(heuristic_routers(ENV, dev, dev)["fixed-0"], 10**6) is None


@pytest.mark.parametrize(
    ("agent", "expected_steps"),
    [
        # an epoch is 32 labelled queries: one point exactly at each budget of 32 steps
        ("supervised", [32.0 * k for k in range(1, 11)]),
        # an iteration is 32 queries x 8 members = 256 steps: the first passes budgets 32..256,
        # the second 288 and 320, one point each
        ("grpo", [256.0, 512.0]),
    ],
)
def test_native_agents_record_at_the_shared_budgets(agent, expected_steps, dev, tmp_path) -> None:
    train = Tables.synthetic(num_queries=32, best_depth=1, seed=0)
    train_agent(agent, ENV, train, dev, 0, 320, tmp_path)
    curve = json.loads((tmp_path / "curve.json").read_text())
    assert [p["env_steps"] for p in curve] == expected_steps
