"""Dev learning curves: one protocol (budgets, every dev query, deterministic) for every agent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from maw_gym.tables import Tables
from maw_gym_agents.curve import DevCurve
from maw_gym_agents.evaluate import evaluate_router
from maw_gym_agents.heuristics import FixedDepthRouter, heuristic_routers
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


def test_checkpoint_selection_keeps_the_best_dev_point(dev) -> None:
    """The curve saves the router at every new best and hands that one back, not the last."""
    routers = heuristic_routers(ENV, dev, dev)
    curve = DevCurve(ENV, dev, total_steps=30, points=3, keep_best=True)  # budgets 10, 20, 30
    for steps, name in ((10, "fixed-0"), (20, "fixed-1"), (30, "fixed-2")):
        curve(routers[name], steps)
    returns = [p["dev_return"] for p in curve.points]
    assert returns.index(max(returns)) == 1  # synthetic best_depth=1
    selected = curve.selected(routers["fixed-2"])
    assert selected.act(dev.observation[:3].reshape(3, -1)).tolist() == [1, 1, 1]
    assert [p.get("selected", False) for p in curve.points] == [False, True, False]
    # fixed-1's own constant is fixed-1: a tie on dev keeps the checkpoint
    assert curve.points[1]["constant_depth"] == 1 and not curve.points[1]["constant_kept"]
    # without keep_best, or before any point, the final router is the answer
    plain = DevCurve(ENV, dev, total_steps=10, points=1)
    plain(routers["fixed-1"], 10)
    assert plain.selected(routers["fixed-2"]) is routers["fixed-2"]


def test_selection_keeps_the_constant_a_straying_router_could_represent(dev) -> None:
    """A router that plays depth 1 (the best on dev) on most queries and depth 3 on a few is
    beaten on dev by the best constant, depth 1 everywhere, which is then handed back."""
    from maw_gym_agents.heuristics import build_lookup

    plans = np.ones((dev.num_queries, 1), dtype=np.int64)
    plans[:4] = 3
    straying = build_lookup("stray", ENV, dev, plans)
    curve = DevCurve(ENV, dev, total_steps=10, points=1, keep_best=True)
    value = curve(straying, 10)
    selected = curve.selected(straying)
    assert isinstance(selected, FixedDepthRouter) and selected.depth == 1
    assert selected.name == "stray"
    point = curve.points[0]
    assert point["constant_kept"] and point["constant_depth"] == 1
    assert point["constant_dev_return"] == pytest.approx(
        evaluate_router(selected, ENV, dev).mean_return
    )
    assert point["constant_dev_return"] > value


@pytest.mark.parametrize("agent", ["grpo", "supervised", "ppo"])
def test_a_trained_agent_returns_its_best_dev_checkpoint(agent, dev, tmp_path) -> None:
    """A tiny run: the router train_agent saves scores the best dev point of its own curve."""
    train = Tables.synthetic(num_queries=32, best_depth=1, seed=0)
    _, record = train_agent(agent, ENV, train, dev, 0, 320, tmp_path)
    curve = json.loads((tmp_path / "curve.json").read_text())
    best = max(p["dev_return"] for p in curve)
    # measured: each of these runs peaks before its end on dev, so selection has work to do
    assert curve[-1]["dev_return"] < best
    [selected] = [p for p in curve if p.get("selected")]
    assert selected == next(p for p in curve if p["dev_return"] == best)
    expected = max(best, selected["constant_dev_return"])
    assert record["dev_mean_return"] == pytest.approx(expected)
