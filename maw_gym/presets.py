"""Named configurations of the whole pipeline: data subset, MAW encoder shape, training budget.

``smoke`` builds from scratch in well under a minute on 2 cores (tests, first contact);
``quick`` is the README's main job: sized so the whole leaderboard, MiniLM encoding of 22,400
pairs included, fits in about 20 minutes on 2 cores (every model's best dev epoch was 1-3, and
it skips the 2-layer stack behind ``MAW/LayerwiseDepth``, 55% of table time); ``full`` uses
every query.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Preset:
    """One pipeline configuration; every field is part of the cache keys it produces."""

    name: str
    train_queries: int | None
    """Train queries sampled (seeded, deterministic); None = all."""
    dev_queries: int | None
    """Dev queries sampled; None = all."""
    test_queries: int | None
    """Test queries sampled; None = all."""
    candidates: int
    """BM25 top-k candidates reranked per query."""
    max_length: int
    """Token length of ``[CLS] query [SEP] doc [SEP]`` pairs fed to the base encoder."""
    depth: int
    """MAW depths D (the action space of DepthSelection)."""
    heads: int
    """Attention heads H of the MAW layer."""
    head_dim: int
    """Per-head width of the MAW layer."""
    pool: int
    """Observation: each (depth, head) attention map is average-pooled to pool x pool."""
    epochs: int
    """Maximum encoder training epochs (early stopping on dev NDCG@10)."""
    seed_controls: int
    """NON-MAW rerankers trained with different seeds for the seed control."""
    layers: int
    """MAW layers in the stack behind MAW/LayerwiseDepth (1 = no layerwise tables)."""
    agent_steps: int
    """Env steps each RL agent trains for in the leaderboard."""
    seeds: int
    """Default number of seeds per learned policy in the leaderboard."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **overrides: Any) -> Preset:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        "smoke",
        train_queries=48,
        dev_queries=24,
        test_queries=24,
        candidates=8,
        max_length=32,
        depth=4,
        heads=4,
        head_dim=16,
        pool=2,
        epochs=2,
        seed_controls=2,
        layers=2,
        agent_steps=2_000,
        seeds=2,
    ),
    "quick": Preset(
        "quick",
        train_queries=800,
        dev_queries=200,
        test_queries=400,
        candidates=16,
        max_length=64,
        depth=8,
        heads=12,
        head_dim=32,
        pool=4,
        epochs=3,
        seed_controls=2,
        layers=1,
        agent_steps=20_000,
        seeds=3,
    ),
    "full": Preset(
        "full",
        train_queries=None,
        dev_queries=None,
        test_queries=None,
        candidates=30,
        max_length=64,
        depth=8,
        heads=12,
        head_dim=32,
        pool=4,
        epochs=10,
        seed_controls=8,
        layers=2,
        agent_steps=100_000,
        seeds=5,
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name lists the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
