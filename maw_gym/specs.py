"""One frozen spec per pipeline stage: what each stage is a function of, and nothing more.

The stages run in this order, each reading only the ones before it (DESIGN.md):

====================  =================================  ==========================================
stage                 spec                               its cache key hashes
====================  =================================  ==========================================
data sampling         :class:`DataSpec`                  the dataset's files and the sampled ids
BM25 candidates       :class:`CandidatesSpec`            the split's key and ``k``
base-encoder states   :class:`StatesSpec`                the pairs, the base model, ``max_length``
MAW encoder           :class:`EncoderSpec`               its spec and the train/dev inputs' keys
tables                (none of its own)                  the encoder's content hash, the split's
                                                         inputs key and ``TABLES_VERSION``
agents                :class:`AgentSpec`                 (no cache: the leaderboard's run folder)
====================  =================================  ==========================================

So ``--set agent_steps=40000`` retrains nothing, while ``--set depth=4`` retrains the encoder and
rebuilds the tables (issue 21: one ``Preset`` hashed whole into every key used to rebuild 18
minutes of work for a change the encoder never sees). A preset (:mod:`maw_gym.presets`) is a
named bundle of these specs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

#: Field -> (lowest, highest) accepted value: a typo such as ``--set candidates=100000`` would
#: start hours of encoding (issue 22), and MiniLM reads at most 512 tokens.
LIMITS: dict[str, tuple[float, float]] = {
    "train_queries": (1, 10_000_000),
    "dev_queries": (1, 10_000_000),
    "test_queries": (1, 10_000_000),
    "candidates": (1, 1000),
    "max_length": (4, 512),
    "depth": (1, 64),
    "heads": (1, 64),
    "head_dim": (1, 256),
    "pool": (1, 32),
    "epochs": (1, 1000),
    "layers": (1, 4),
    "seed_controls": (1, 64),
    "agent_steps": (1, 100_000_000),
    "seeds": (1, 100),
    "temperature_spread": (0, 16),
    "locality": (0, 16),
    "diversity_weight": (0, 100),
}


def check_limits(spec: Any) -> None:
    """Refuse a field of ``spec`` outside :data:`LIMITS`, naming it and its range."""
    for item in fields(spec):
        value = getattr(spec, item.name)
        if item.name in LIMITS and value is not None:
            low, high = LIMITS[item.name]
            if not low <= value <= high:
                raise ValueError(f"{item.name}={value!r}: expected a value in [{low}, {high}]")


#: Metadata of a field added after caches were keyed by its spec: :func:`spec_dict` leaves it out
#: at its default, so every key computed before the field existed stays the same.
KEY_OMITS_DEFAULT = {"key_omits_default": True}

#: The splits every dataset must have, in pipeline order (the one definition of their names).
SplitName = Literal["train", "dev", "test"]
SPLITS: tuple[SplitName, ...] = get_args(SplitName)

#: The base encoder's forward pass on CPU (``maw_gym.base_encoder.BaseEncoder``'s ``precision``).
StatesPrecision = Literal["float32", "bfloat16"]
STATES_PRECISIONS: tuple[str, ...] = get_args(StatesPrecision)

#: How the MAW encoder makes depths experts (``maw_gym.encoder.reranker.TrainConfig``).
Specialisation = Literal["router", "random", "sinkhorn", "groups"]
SPECIALISATIONS: tuple[str, ...] = get_args(Specialisation)


@dataclass(frozen=True)
class DataSpec:
    """Which queries of a dataset the pipeline uses (sampled with a fixed seed)."""

    train_queries: int | None
    """Train queries sampled; None = all."""
    dev_queries: int | None
    """Dev queries sampled; None = all."""
    test_queries: int | None
    """Test queries sampled; None = all."""
    router_fraction: float = 0.25
    """Share of the sampled train queries held out from the encoder: the router-train split
    whose tables the routers learn from (``maw_gym.pipeline.router_queries``)."""

    def __post_init__(self) -> None:
        check_limits(self)
        if not 0.0 < self.router_fraction < 1.0:
            raise ValueError(f"router_fraction must be in (0, 1), got {self.router_fraction}")

    def queries(self, split: str) -> int | None:
        """How many queries of ``split`` are sampled (None = all)."""
        counts = {"train": self.train_queries, "dev": self.dev_queries, "test": self.test_queries}
        if split not in counts:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        return counts[split]


@dataclass(frozen=True)
class CandidatesSpec:
    """The first stage: BM25 top-k per query; reranking never sees other documents."""

    candidates: int
    """BM25 top-k candidates reranked per query."""

    def __post_init__(self) -> None:
        check_limits(self)


@dataclass(frozen=True)
class StatesSpec:
    """What the frozen base encoder computes for each (query, candidate) pair."""

    max_length: int
    """Token length of ``[CLS] query [SEP] doc [SEP]`` pairs fed to the base encoder."""
    semantic: bool = False
    """Also the base encoder's bi-encoder cosine of query and candidate, a second first-stage
    feature beside BM25 (``SplitInputs.dense_scores``); the encoder's models then take it as
    an input (with a weight per depth under ``depth_heads``)."""
    states_precision: StatesPrecision = field(default="float32", metadata=KEY_OMITS_DEFAULT)
    """The base encoder's forward pass on CPU: ``float32``, or the opt-in ``bfloat16``, about
    2.5× faster where the CPU multiplies bf16 natively (AMX), at about 1 float16 ulp per state
    value; elsewhere slower (``scripts/bench_pipeline.py`` measures both). In the keys only when
    set (:data:`KEY_OMITS_DEFAULT`). A GPU always computes in half precision."""

    def __post_init__(self) -> None:
        check_limits(self)
        if self.states_precision not in STATES_PRECISIONS:
            raise ValueError(
                f"states_precision={self.states_precision!r}: choose one of {STATES_PRECISIONS}"
            )


@dataclass(frozen=True)
class InputsSpec:
    """What a split's reranker inputs (``maw_gym.pipeline.split_inputs``) are a function of:
    the first three stages' specs."""

    data: DataSpec
    candidates: CandidatesSpec
    states: StatesSpec


@dataclass(frozen=True)
class EncoderSpec:
    """The MAW encoder: its architecture and its training (one frozen encoder per spec)."""

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
    layers: int
    """MAW layers in the stack behind MAW/LayerwiseDepth (1 = no layerwise tables)."""
    depth_heads: bool = False
    """MAW depths with their own score heads and first-stage weights (``MAWReranker``)."""
    temperature_spread: float = 0.0
    """Per-depth attention temperature prior, in octaves from the sharpest to the most diffuse
    depth (``MAWAttention``)."""
    locality: float = 0.0
    """Per-depth ALiBi-style locality prior: the slope of the most local depth, in logits per
    token of distance (``MAWAttention``)."""
    specialisation: Specialisation = "router"
    """How the MAW encoder makes depths experts (``TrainConfig.specialisation``)."""
    diversity_weight: float = 0.0
    """Weight of the depth-diversity term in encoder training (``TrainConfig``)."""
    groups: str = field(default="", metadata=KEY_OMITS_DEFAULT)
    """The ground-truth tier's query groups (issue 18), ``"task"`` (``metadata.task``) or
    ``"cluster:K"`` (k-means of base-encoder embeddings), ``maw_gym.groups``; set exactly when
    ``specialisation="groups"``."""
    group_mix: float = field(default=1.0, metadata=KEY_OMITS_DEFAULT)
    """ρ of the ground-truth tier: the share of each depth's training weight drawn from the
    other groups' queries; 0 trains each depth on its own group only, 1 every depth on every
    query alike (``maw_gym.groups.group_loss_weights``)."""
    seed: int = 0
    """Seed of every model's initialisation and training."""

    def __post_init__(self) -> None:
        check_limits(self)
        if self.specialisation not in SPECIALISATIONS:
            raise ValueError(
                f"specialisation={self.specialisation!r}: choose one of {SPECIALISATIONS}"
            )
        if min(self.temperature_spread, self.locality, self.diversity_weight) < 0:
            raise ValueError("temperature_spread, locality and diversity_weight must be >= 0")
        if bool(self.groups) != (self.specialisation == "groups"):
            raise ValueError(
                f"groups={self.groups!r} with specialisation={self.specialisation!r}: set "
                "specialisation=groups together with groups=task or groups=cluster:K"
            )
        if self.groups:
            clusters = parse_group_source(self.groups)
            if clusters is not None and clusters > self.depth:
                raise ValueError(
                    f"groups={self.groups!r}: {clusters} groups need depth >= {clusters}, "
                    f"got depth={self.depth}"
                )
        if not 0.0 <= self.group_mix <= 1.0:
            raise ValueError(f"group_mix={self.group_mix}: expected a value in [0, 1]")
        if self.group_mix != 1.0 and not self.groups:
            raise ValueError(
                f"group_mix={self.group_mix} needs specialisation=groups with groups=task or "
                "groups=cluster:K"
            )


def parse_group_source(source: str) -> int | None:
    """``"task"`` -> None, ``"cluster:K"`` -> K (K >= 2); anything else is refused."""
    if source == "task":
        return None
    kind, _, count = source.partition(":")
    if kind == "cluster" and count.isdigit() and int(count) >= 2:
        return int(count)
    raise ValueError(f"groups={source!r}: expected 'task' or 'cluster:K' with K >= 2")


@dataclass(frozen=True)
class ControlSpec:
    """The research controls beside the encoder (``maw-gym encoder report`` and the study);
    the leaderboard never trains them."""

    seed_controls: int
    """NON-MAW rerankers trained with different seeds for the seed control."""

    def __post_init__(self) -> None:
        check_limits(self)


@dataclass(frozen=True)
class AgentSpec:
    """The agents' budget in a leaderboard; no cache key reads it."""

    agent_steps: int
    """Env steps each RL agent trains for in the leaderboard."""
    seeds: int
    """Default number of seeds per learned policy in the leaderboard."""

    def __post_init__(self) -> None:
        check_limits(self)


#: The stage specs of a preset, by the attribute name a :class:`maw_gym.presets.Preset` gives
#: each (every field name is unique across them, so ``--set FIELD=VALUE`` names one stage).
STAGE_SPECS: dict[str, type] = {
    "data": DataSpec,
    "candidates": CandidatesSpec,
    "states": StatesSpec,
    "encoder": EncoderSpec,
    "controls": ControlSpec,
    "agents": AgentSpec,
}


def field_owners() -> dict[str, str]:
    """Field name -> the preset attribute of the spec that owns it."""
    owners: dict[str, str] = {}
    for attribute, spec in STAGE_SPECS.items():
        for item in fields(spec):
            if item.name in owners:
                raise AssertionError(f"field {item.name!r} in two stage specs")
            owners[item.name] = attribute
    return owners


def spec_dict(spec: Any) -> dict[str, Any]:
    """A spec's fields as a dict (for cache keys and run records); a field marked
    :data:`KEY_OMITS_DEFAULT` only where it differs from its default. Works on any dataclass
    (``TrainConfig`` too)."""
    out = {}
    for item in fields(spec):
        value = getattr(spec, item.name)
        if item.metadata.get("key_omits_default") and value == item.default:
            continue
        out[item.name] = value
    return out
