"""Encoders: the frozen pretrained base encoder and the MAW layer trained on its states.

``BaseEncoder`` and ``DEFAULT_MODEL`` are imported lazily, so importing a sibling module such as
``maw_gym.encoder.attention`` does not load transformers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_MODEL", "BaseEncoder"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from maw_gym import base_encoder as base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
