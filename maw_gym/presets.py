"""Named configurations of the whole pipeline: data subset, MAW encoder shape, training budget.

``smoke`` builds from scratch in well under a minute on 2 cores (tests, first contact);
``quick`` is the README's main job, sized for a leaderboard of minutes on 2 cores, MiniLM
encoding of 22,400 pairs included (every model's best dev epoch was 1-3, and it skips the
2-layer stack behind ``MAW/LayerwiseDepth``, 55% of table time); its measured time is the one
in the README, printed from the run by ``scripts/readme_tables.py``. ``full`` uses every query.

The encoder levers of ``quick`` and ``full`` (depth-specific score heads, temperature spread 3,
the semantic first-stage feature) and quick's 30 BM25 candidates are the depth study's dev-only
choice on nave-kjv at quick (``docs/depth-study.md``, ``dev_choice``: no crippled depth, a best
fixed depth above BM25 with a CI excluding 0, then the most headroom over the seed control),
within the cold quick leaderboard's budget of about 20 minutes on 2 cores. Only with the
semantic feature does the reranker beat BM25 on dev; 30 candidates gave more headroom than 16;
Sinkhorn specialisation crippled depths; the locality prior's dev gain over BM25 had a CI
containing 0. ``full`` was not studied; it takes quick's choice. ``smoke`` keeps the plain
encoder (tests' measured floors were set on it).

Any field but ``name`` can be overridden from the command line (``--set candidates=16``,
``--set depth_heads=true``); the overrides are part of every cache key and recorded in a run's
config.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

#: How the MAW encoder makes depths experts (``maw_gym.encoder.reranker.TrainConfig``).
SPECIALISATIONS = ("router", "random", "sinkhorn")


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
    router_fraction: float = 0.25
    """Share of the sampled train queries held out from the encoder: the router-train split
    whose tables the routers learn from (``maw_gym.pipeline.router_queries``)."""
    depth_heads: bool = False
    """MAW depths with their own score heads and BM25 weights (``MAWReranker``)."""
    temperature_spread: float = 0.0
    """Per-depth attention temperature prior, in octaves from the sharpest to the most diffuse
    depth (``MAWAttention``)."""
    locality: float = 0.0
    """Per-depth ALiBi-style locality prior: the slope of the most local depth, in logits per
    token of distance (``MAWAttention``)."""
    semantic: bool = False
    """Add the base encoder's bi-encoder cosine as a second first-stage feature beside BM25,
    with a weight per depth under ``depth_heads`` (``MAWReranker``): a semantic end for the
    lexical ↔ semantic axis and a stronger reranker."""
    specialisation: str = "router"
    """How the MAW encoder makes depths experts (``TrainConfig.specialisation``)."""
    diversity_weight: float = 0.0
    """Weight of the depth-diversity term in encoder training (``TrainConfig``)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.router_fraction < 1.0:
            raise ValueError(f"router_fraction must be in (0, 1), got {self.router_fraction}")
        if self.specialisation not in SPECIALISATIONS:
            raise ValueError(
                f"specialisation={self.specialisation!r}: choose one of {SPECIALISATIONS}"
            )
        if min(self.temperature_spread, self.locality, self.diversity_weight) < 0:
            raise ValueError("temperature_spread, locality and diversity_weight must be >= 0")

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
        candidates=30,
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
        depth_heads=True,
        temperature_spread=3.0,
        semantic=True,
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
        depth_heads=True,
        temperature_spread=3.0,
        semantic=True,
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name lists the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def _parse_value(item: str, key: str, text: str) -> Any:
    """``text`` as the type of ``key``'s quick value; positive for the integer fields."""
    kind = type(getattr(PRESETS["quick"], key))
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if kind is str:
            return text
        value = kind(text)
    except ValueError:
        expected = {int: "positive integer", bool: "true or false"}.get(kind, kind.__name__)
        raise ValueError(f"--set {item!r}: {key} takes a {expected}") from None
    if kind is int and value < 1:
        raise ValueError(f"--set {item!r}: {key} takes a positive integer")
    return value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["candidates=16", "depth_heads=true"]`` → ``{"candidates": 16, "depth_heads": True}``.

    Every field of :class:`Preset` but ``name`` may be overridden, parsed as the type of its
    value (integers positive; ``name`` may not: results stay labelled with the preset they
    started from, and the overrides are recorded beside it). Errors name the bad item.
    """
    known = sorted(f.name for f in fields(Preset) if f.name != "name")
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {known}")
        overrides[key] = _parse_value(item, key, text.strip())
    return overrides


def add_preset_arguments(
    parser: argparse.ArgumentParser, default: str | None, default_help: str | None = None
) -> None:
    """``--preset NAME`` and repeatable ``--set KEY=VALUE``: the one preset argument of every
    command (an unknown name is refused by :func:`preset_from_args`, naming the valid ones).
    ``default=None`` lets a command fill the name in later (``default_help`` says how)."""
    parser.add_argument(
        "--preset",
        default=default,
        help=f"{', '.join(PRESETS)} (default: {default_help or default})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one preset field, e.g. --set candidates=16 (repeatable; part of every "
        "cache key and recorded in the run's config)",
    )


def preset_from_args(args: argparse.Namespace) -> Preset:
    """The preset named by ``--preset`` with its ``--set`` overrides applied."""
    return get_preset(args.preset).with_overrides(**parse_overrides(args.overrides))
