"""Named bundles of stage specs (:mod:`maw_gym.specs`): data subset, candidates, states, MAW
encoder, research controls and the agents' budget.

``smoke`` builds from scratch in well under a minute on 2 cores (tests, first contact);
``quick`` is the README's main job, sized for a leaderboard of minutes on 2 cores (every
model's best dev epoch was 1-3, and it skips the 2-layer stack behind ``MAW/LayerwiseDepth``,
55% of table time); ``full`` uses every query.

The encoder levers of ``quick`` and ``full`` (depth-specific score heads, temperature spread 3,
the semantic first-stage feature) and quick's 30 BM25 candidates are the depth study's dev-only
choice on nave-kjv at quick (``docs/depth-study.md``, ``dev_choice``: no crippled depth, a best
fixed depth above BM25 with a CI excluding 0, then the most headroom over the seed control).
Only with the semantic feature does the reranker beat BM25 on dev; 30 candidates gave more
headroom than 16; Sinkhorn specialisation crippled depths; the locality prior's dev gain over
BM25 had a CI containing 0. ``full`` was not studied; it takes quick's choice. ``smoke`` keeps
the plain encoder (tests' measured floors were set on it).

Any field of any stage can be overridden from the command line (``--set candidates=16``,
``--set depth_heads=true``); an override enters only the cache keys of the stage that owns the
field and of the stages after it, and is recorded in a run's config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from maw_gym.specs import (
    AgentSpec,
    CandidatesSpec,
    ControlSpec,
    DataSpec,
    EncoderSpec,
    InputsSpec,
    StatesSpec,
    field_owners,
    spec_dict,
)


@dataclass(frozen=True)
class Preset:
    """A named bundle of one spec per stage (see :mod:`maw_gym.specs`)."""

    name: str
    data: DataSpec
    candidates: CandidatesSpec
    states: StatesSpec
    encoder: EncoderSpec
    controls: ControlSpec
    agents: AgentSpec

    @property
    def inputs(self) -> InputsSpec:
        """The specs of the reranker's inputs (data, candidates, states)."""
        return InputsSpec(self.data, self.candidates, self.states)

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "<stage>": {field: value}}`` for run records."""
        stages = {
            f.name: spec_dict(getattr(self, f.name)) for f in fields(self) if f.name != "name"
        }
        return {"name": self.name, **stages}

    @classmethod
    def from_dict(cls, recorded: dict[str, Any]) -> Preset:
        """The preset a run recorded with :meth:`to_dict` (or, from before the stage specs, as
        one flat dict of fields): its named preset with every recorded field applied."""
        flat: dict[str, Any] = {}
        for key, value in recorded.items():
            flat.update(value if isinstance(value, dict) else {key: value})
        name = flat.pop("name")
        known = field_owners()
        return get_preset(name).with_overrides(**{k: v for k, v in flat.items() if k in known})

    def with_overrides(self, **overrides: Any) -> Preset:
        """This preset with ``field=value`` overrides, each applied to the stage owning it;
        an unknown field is a ``ValueError`` naming the valid ones."""
        owners = field_owners()
        changes: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            if key not in owners:
                raise ValueError(f"unknown preset field {key!r}; expected one of {sorted(owners)}")
            changes.setdefault(owners[key], {})[key] = value
        return dataclasses.replace(
            self,
            **{
                stage: dataclasses.replace(getattr(self, stage), **values)
                for stage, values in changes.items()
            },
        )


_SMOKE = Preset(
    "smoke",
    data=DataSpec(train_queries=48, dev_queries=24, test_queries=24),
    candidates=CandidatesSpec(candidates=8),
    states=StatesSpec(max_length=32),
    encoder=EncoderSpec(depth=4, heads=4, head_dim=16, pool=2, epochs=2, layers=2),
    controls=ControlSpec(seed_controls=2),
    agents=AgentSpec(agent_steps=2_000, seeds=2),
)
_QUICK = Preset(
    "quick",
    data=DataSpec(train_queries=800, dev_queries=200, test_queries=400),
    candidates=CandidatesSpec(candidates=30),
    states=StatesSpec(max_length=64, semantic=True),
    encoder=EncoderSpec(
        depth=8,
        heads=12,
        head_dim=32,
        pool=4,
        epochs=3,
        layers=1,
        depth_heads=True,
        temperature_spread=3.0,
    ),
    controls=ControlSpec(seed_controls=2),
    agents=AgentSpec(agent_steps=20_000, seeds=3),
)
PRESETS: dict[str, Preset] = {
    "smoke": _SMOKE,
    "quick": _QUICK,
    "full": dataclasses.replace(
        _QUICK.with_overrides(
            train_queries=None,
            dev_queries=None,
            test_queries=None,
            epochs=10,
            layers=2,
            seed_controls=8,
            agent_steps=100_000,
            seeds=5,
        ),
        name="full",
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name lists the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def _field_type(key: str) -> type:
    """The type of ``key``'s value in the quick preset (a nullable count is an ``int``)."""
    value = getattr(getattr(PRESETS["quick"], field_owners()[key]), key)
    return int if value is None else type(value)


def _parse_value(item: str, key: str, text: str) -> Any:
    """``text`` as the type of ``key``; positive for the integer fields."""
    kind = _field_type(key)
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
    if kind is int and value < 1 and key != "seed":
        raise ValueError(f"--set {item!r}: {key} takes a positive integer")
    return value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["candidates=16", "depth_heads=true"]`` → ``{"candidates": 16, "depth_heads": True}``.

    Every field of every stage spec may be overridden, parsed as the type of its quick value
    (integers positive). Errors name the bad item.
    """
    known = sorted(field_owners())
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {known}")
        overrides[key] = _parse_value(item, key, text.strip())
    return overrides


def resolve_preset(preset: str | Preset, overrides: list[str] | None = None) -> Preset:
    """``preset`` (a name or a preset) with its ``--set`` items applied."""
    base = get_preset(preset) if isinstance(preset, str) else preset
    try:
        return base.with_overrides(**parse_overrides(overrides))
    except ValueError as error:
        raise ValueError(f"--set: {error}" if overrides else str(error)) from None
