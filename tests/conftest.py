"""Shared test set-up: a cache of its own, so tests never touch a user's ~/.cache/maw-gym."""

from __future__ import annotations

import os
from pathlib import Path

# Set before any maw_gym import reads it. Persistent across local runs (fast re-runs), fresh in CI.
os.environ.setdefault("MAW_GYM_CACHE", str(Path(__file__).resolve().parent.parent / ".maw_cache"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Ray reads this on import: keep a test head and its driver on 127.0.0.1 (docs/cluster.md).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
