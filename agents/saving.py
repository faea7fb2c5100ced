"""Saving and loading routers: ``router.json`` names a router's class and its config, weights
sit beside it; :func:`load_router` loads any router, from an allow-list of classes."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maw_gym.cache import CORRUPT_ERRORS, atomic_path, read_json, write_json
from maw_gym_agents.base import Router

ROUTER_FILE = "router.json"
WEIGHTS_FILE = "policy.pt"


def write_router_json(directory: Path, router_class: type, config: dict[str, Any]) -> None:
    """``router.json``: the class :func:`load_router` dispatches to, and its constructor config."""
    payload = {"class": f"{router_class.__module__}:{router_class.__qualname__}", **config}
    write_json(Path(directory) / ROUTER_FILE, payload)


def read_router_json(directory: Path) -> dict[str, Any]:
    path = Path(directory) / ROUTER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no router.json; expected a directory written by save()")
    config = read_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def save_state(directory: Path, module: nn.Module) -> None:
    with atomic_path(Path(directory) / WEIGHTS_FILE) as tmp:
        torch.save(module.state_dict(), tmp)


def load_state(directory: Path, module: nn.Module) -> None:
    """Load ``policy.pt`` into ``module``; a corrupt file, or weights of another shape than
    ``router.json`` describes, is a ``ValueError`` naming the file."""
    path = Path(directory) / WEIGHTS_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; the router directory is incomplete") from None
    except CORRUPT_ERRORS as error:
        reason = str(error).splitlines()[0]
        raise ValueError(f"{path}: not the weights router.json describes ({reason})") from None


TRUST_WARNING = (
    "warning: --trust-routers loads the saved routers, which unpickles code from their files "
    "(SB3 zips, RLlib checkpoints, torch.load(weights_only=False)); do this only for "
    "directories you trust"
)
#: The classes ``router.json`` may name, and whether loading one unpickles code from the
#: router's folder (SB3 zips and RLlib checkpoints do; the others read JSON and weights-only
#: tensors). Checked before anything is imported: a folder from someone else named a module
#: that was imported before the class was refused (issue 22).
ROUTER_CLASSES: dict[str, bool] = {
    "maw_gym_agents.policy:PolicyRouter": False,
    "maw_gym_agents.heuristics:RandomRouter": False,
    "maw_gym_agents.heuristics:FixedDepthRouter": False,
    "maw_gym_agents.heuristics:ScoreRouter": False,
    "maw_gym_agents.heuristics:LookupRouter": False,
    "maw_gym_agents.supervised:SupervisedRouter": False,
    "maw_gym_agents.ceiling:CeilingRouter": False,
    "maw_gym_agents.sb3:SB3Router": True,
    "maw_gym_agents.rllib:RLlibRouter": True,
}


#: Where a class of :data:`ROUTER_CLASSES` was saved from before it moved (routers saved then).
FORMER_NAMES = {"maw_gym_agents.common:PolicyRouter": "maw_gym_agents.policy:PolicyRouter"}


def load_router(directory: Path | str, allow_pickle: bool = False) -> Router:
    """Load any saved router: ``router.json`` names its class, one of :data:`ROUTER_CLASSES`.

    ``allow_pickle``: also load the routers whose files are unpickled (SB3, RLlib), which runs
    whatever code those files hold; only for folders you trust (``--trust-routers``).
    """
    path = Path(directory) / ROUTER_FILE
    name = read_router_json(directory).get("class")
    name = FORMER_NAMES.get(name, name) if isinstance(name, str) else name
    if not isinstance(name, str) or name not in ROUTER_CLASSES:
        raise ValueError(
            f"{path}: class {name!r} is not one of maw-gym's routers {sorted(ROUTER_CLASSES)}"
        )
    if ROUTER_CLASSES[name] and not allow_pickle:
        raise ValueError(
            f"{path}: a {name.rpartition(':')[2]} is loaded by unpickling its files, which runs "
            "any code they hold; pass --trust-routers if you trust this folder"
        )
    module_name, _, class_name = name.partition(":")
    router_class = getattr(importlib.import_module(module_name), class_name)
    return router_class.load(Path(directory))
