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
best of two candidates on dev: that checkpoint, loaded back, or the constant it could
represent, its own most used depth at that point played on every query (the agent's policy
class holds it: input-independent logits). On a task whose best policy is a constant, an agent
that learned to prefer the constant but still strays on queries where router-train noise
misled it keeps the constant; on a task where routing pays, the routing checkpoint wins on dev.
The same code runs for every agent on every task; dev decides, and the curve records which.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
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
    """On the selected point: the agent's most used depth there, played on every query."""
    constant_dev_return: NotRequired[float]
    """... and its dev mean return; ``constant_kept`` says whether it beat the checkpoint."""
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
        self._best: _Kept | None = None

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
        result = evaluate_router(router, self.env_id, self.dev_tables)
        point: CurvePoint = {"env_steps": float(env_steps), "dev_return": result.mean_return}
        self.points.append(point)
        best = self._best
        if self.keep_best and (best is None or result.mean_return > best.point["dev_return"]):
            self._keep(router, point, int(np.argmax(result.depth_usage)))
        return result.mean_return

    def _keep(self, router: Router, point: CurvePoint, modal_depth: int) -> None:
        """Save ``router`` as the best so far, in a temporary folder of this curve's own (the
        previous best's is removed with its ``TemporaryDirectory``)."""
        folder = tempfile.TemporaryDirectory(prefix="maw-gym-dev-best-")
        router.save(Path(folder.name))
        if self._best is not None:
            self._best.folder.cleanup()
        self._best = _Kept(point, folder, modal_depth)

    def selected(self, final: Router) -> Router:
        """The better on dev of the best point's router, loaded back, and its constant (module
        docstring); the point is marked ``selected`` in :attr:`points` with the constant's
        figures. ``final`` when nothing was kept (no ``keep_best``, no dev tables or no point
        reached)."""
        from maw_gym_agents.common import env_layout, load_router
        from maw_gym_agents.evaluate import evaluate_router
        from maw_gym_agents.heuristics import FixedDepthRouter

        if self._best is None:
            return final
        kept, self._best = self._best, None
        try:
            router = load_router(Path(kept.folder.name))
        finally:
            kept.folder.cleanup()
        assert self.dev_tables is not None  # a point was kept, so there were dev tables
        spec = env_layout(self.env_id, self.dev_tables).spec
        constant = FixedDepthRouter(spec, kept.modal_depth, name=router.name)
        value = evaluate_router(constant, self.env_id, self.dev_tables).mean_return
        point = kept.point
        point.update(selected=True, constant_depth=kept.modal_depth, constant_dev_return=value)
        point["constant_kept"] = value > point["dev_return"]
        return constant if point["constant_kept"] else router


@dataclass
class _Kept:
    """The best dev point so far: its curve point, its saved router and its most used depth."""

    point: CurvePoint
    folder: tempfile.TemporaryDirectory[str]
    modal_depth: int
