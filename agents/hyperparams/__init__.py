"""rl-baselines3-zoo-style hyperparameter files, one per agent (``<agent>.yml``), one entry per
env id (else ``default``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HYPERPARAMS_DIR = Path(__file__).resolve().parent


def load_hyperparams(name: str, env_id: str) -> dict[str, Any]:
    """The ``env_id`` entry of ``hyperparams/{name}.yml`` (else its ``default`` entry), as a
    fresh dict; files follow rl-baselines3-zoo's layout, one entry per env id."""
    path = HYPERPARAMS_DIR / f"{name}.yml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no hyperparameter file for {name!r}")
    entries = yaml.safe_load(path.read_text()) or {}
    entry = entries.get(env_id, entries.get("default"))
    if entry is None:
        raise KeyError(f"{path}: no entry for env id {env_id!r} and no 'default' entry")
    return dict(entry)
