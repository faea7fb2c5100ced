"""The router protocol every policy implements, so the leaderboard treats all of them alike."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Router(Protocol):
    """Maps a batch of observations to actions for one env variant.

    ``act(observations)`` takes ``(B, *observation_shape)`` float32 and returns ``(B,)`` int
    depths for ``MAW/DepthSelection``, ``(B, H)`` for ``MAW/PerHeadDepth`` and ``(B, D)`` weights
    for ``MAW/SoftDepthMixture``; it is deterministic (argmax) at inference. ``save(directory)``
    writes everything ``load`` needs, including a ``router.json`` naming the class.
    """

    name: str

    def act(self, observations: np.ndarray) -> np.ndarray: ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path) -> Router: ...
