"""Dev learning curves measured one way for every agent, so the leaderboard can compare them.

Each agent calls its :class:`DevCurve` after every update with its env-step count. At the first
call at or past each of ``points`` evenly spaced step budgets, the curve plays *every* dev query
once with the router's deterministic action (:func:`~maw_gym_agents.evaluate.evaluate_router`)
and records the mean return. Before issue 11, SB3's ``EvalCallback`` drew dev queries at random
(its curves swung ±0.015 on a flat line) while the native agents evaluated every N iterations
or epochs, so no two curves sat at the same budgets.
"""

from __future__ import annotations

import math
from typing import TypedDict

from maw_gym.tables import Tables
from maw_gym_agents.base import Router

CURVE_POINTS = 10
"""Budgets per curve: steps/10, 2·steps/10, …, steps."""


class CurvePoint(TypedDict):
    """One point of a dev learning curve; every agent's ``curve.json`` is a list of these."""

    env_steps: float
    dev_return: float


class DevCurve:
    """The dev curve of one training run (see the module docstring)."""

    def __init__(
        self, env_id: str, dev_tables: Tables | None, total_steps: int, points: int = CURVE_POINTS
    ) -> None:
        self.env_id = env_id
        self.dev_tables = dev_tables
        self.budgets = sorted({math.ceil(total_steps * k / points) for k in range(1, points + 1)})
        self.points: list[CurvePoint] = []

    def due(self, env_steps: int) -> bool:
        """True if ``env_steps`` reached the next budget (check before building a router);
        never without dev tables."""
        return self.dev_tables is not None and bool(self.budgets) and env_steps >= self.budgets[0]

    def __call__(self, router: Router, env_steps: int) -> float | None:
        """Record the dev mean return if a budget is due; returns it, else None."""
        from maw_gym_agents.evaluate import evaluate_router

        if not self.due(env_steps):
            return None
        while self.due(env_steps):  # one point even if an update jumped several budgets
            self.budgets.pop(0)
        assert self.dev_tables is not None  # due() is False without them
        value = evaluate_router(router, self.env_id, self.dev_tables).mean_return
        self.points.append({"env_steps": float(env_steps), "dev_return": value})
        return value
