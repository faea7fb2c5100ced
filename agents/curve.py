"""Dev learning curves measured one way for every agent, so the leaderboard can compare them.

Each agent calls its :class:`DevCurve` after every update with its env-step count. At the first
call at or past each of ``points`` evenly spaced step budgets, the curve plays *every* dev query
once with the router's deterministic action (:func:`~maw_gym_agents.evaluate.evaluate_router`)
and records the mean return. Before issue 11, SB3's ``EvalCallback`` drew dev queries at random
(its curves swung ±0.015 on a flat line) while the native agents evaluated every N iterations
or epochs, so no two curves sat at the same budgets.

**Checkpoint selection on dev** (issue 18, "agents that do no harm"): with ``keep_best`` the
curve also saves the router (its own ``save``, so SB3 models, RLlib modules and torch policies
alike) whenever a point beats every earlier one, and :meth:`DevCurve.selected` hands back the
best on dev of that checkpoint, loaded back, and the constants every agent's policy class
holds (input-independent logits: one depth on every query). On a task whose best policy is a
constant, an agent whose checkpoints all stray on queries where router-train noise misled it
ends as the constant dev prefers; where routing pays, the routing checkpoint wins on dev. The
same code runs for every agent on every task; dev decides, and the curve records what it chose
(measured at quick, issue 18: checkpoints alone left grpo, ppo and rllib-ppo below best-fixed
on test; every seed's best checkpoint was below the best constant on dev).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import NotRequired, TypedDict

import numpy as np

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
    constant_depth: NotRequired[int]
    """On the selected point: the depth whose constant policy is best on dev, ..."""
    constant_dev_return: NotRequired[float]
    """... its dev mean return, and whether it beat the checkpoint (then it is returned)."""
    constant_kept: NotRequired[bool]


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
        """The better on dev of the best point's router, loaded back, and the best constant
        (module docstring; a tie keeps the checkpoint); the point is marked ``selected`` in
        :attr:`points` with the constant's figures. ``final`` when nothing was kept (no
        ``keep_best``, no dev tables or no point reached)."""
        from maw_gym.stats import FLOAT_ROUNDING
        from maw_gym_agents.heuristics import FixedDepthRouter, fixed_depth_values
        from maw_gym_agents.rollouts import env_layout
        from maw_gym_agents.saving import load_router

        if self._best is None:
            return final
        (point, folder), self._best = self._best, None
        try:
            # this run's own checkpoint, written a moment ago: unpickling it (SB3, RLlib) is safe
            router = load_router(Path(folder.name), allow_pickle=True)
        finally:
            folder.cleanup()
        assert self.dev_tables is not None  # a point was kept, so there were dev tables
        means = fixed_depth_values(self.env_id, self.dev_tables).returns.mean(axis=0)
        depth = int(np.argmax(means))
        point.update(selected=True, constant_depth=depth, constant_dev_return=float(means[depth]))
        # a tie (up to float summation order) keeps the checkpoint
        point["constant_kept"] = point["constant_dev_return"] > point["dev_return"] + FLOAT_ROUNDING
        if not point["constant_kept"]:
            return router
        spec = env_layout(self.env_id, self.dev_tables).spec
        return FixedDepthRouter(spec, depth, name=router.name)
