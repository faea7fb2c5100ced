"""Dev learning curves measured one way for every agent, so the leaderboard can compare them.

Each agent calls its :class:`DevCurve` after every update with its env-step count. At the first
call at or past each of ``points`` evenly spaced step budgets, the curve plays *every* dev query
once with the router's deterministic action (:func:`~maw_gym_agents.evaluate.evaluate_router`)
and records the mean return. Before issue 11, SB3's ``EvalCallback`` drew dev queries at random
(its curves swung ±0.015 on a flat line) while the native agents evaluated every N iterations
or epochs, so no two curves sat at the same budgets.

**Checkpoint selection on dev** (issue 18, "agents that do no harm"): with ``keep_best`` the
curve also saves the router (its own ``save``, so SB3 models, RLlib modules and torch policies
alike) whenever a point beats every earlier one, and :meth:`DevCurve.selected` loads that
router back: an agent ends with the policy of its best dev point, not whatever its last update
left. On a task whose best policy is a constant, an agent that found the constant on the way
and then drifted to fit router-train noise keeps the constant. The same code runs for every
agent on every task; dev decides.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import NotRequired, TypedDict

from maw_gym.tables import Tables
from maw_gym_agents.base import Router

CURVE_POINTS = 10
"""Budgets per curve: steps/10, 2·steps/10, …, steps."""


class CurvePoint(TypedDict):
    """One point of a dev learning curve; every agent's ``curve.json`` is a list of these."""

    env_steps: float
    dev_return: float
    selected: NotRequired[bool]
    """True on the point whose router the agent returns (checkpoint selection on dev)."""


class DevCurve:
    """The dev curve of one training run (see the module docstring)."""

    def __init__(
        self,
        env_id: str,
        dev_tables: Tables | None,
        total_steps: int,
        points: int = CURVE_POINTS,
        keep_best: bool = False,
    ) -> None:
        self.env_id = env_id
        self.dev_tables = dev_tables
        self.budgets = sorted({math.ceil(total_steps * k / points) for k in range(1, points + 1)})
        self.points: list[CurvePoint] = []
        self.keep_best = keep_best
        self._best: tuple[CurvePoint, tempfile.TemporaryDirectory[str]] | None = None

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
        point: CurvePoint = {"env_steps": float(env_steps), "dev_return": value}
        self.points.append(point)
        if self.keep_best and (self._best is None or value > self._best[0]["dev_return"]):
            self._keep(router, point)
        return value

    def _keep(self, router: Router, point: CurvePoint) -> None:
        """Save ``router`` as the best so far, in a temporary folder of this curve's own (the
        previous best's is removed with its ``TemporaryDirectory``)."""
        folder = tempfile.TemporaryDirectory(prefix="maw-gym-dev-best-")
        router.save(Path(folder.name))
        if self._best is not None:
            self._best[1].cleanup()
        self._best = (point, folder)

    def selected(self, final: Router) -> Router:
        """The router of the best dev point (the first of equal ones), loaded back and marked
        ``selected`` in :attr:`points`; ``final`` when nothing was kept (no ``keep_best``, no
        dev tables or no point reached)."""
        from maw_gym_agents.common import load_router

        if self._best is None:
            return final
        point, folder = self._best
        try:
            router = load_router(Path(folder.name))
        finally:
            folder.cleanup()
            self._best = None
        point["selected"] = True
        return router
