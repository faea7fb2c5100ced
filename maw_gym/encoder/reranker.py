"""The MAW reranker: frozen base-encoder states -> MAW layer(s) -> a score head linear in the
attention output, plus its training (listwise loss, joint depth router, early stopping on dev).

**Score.** For a (query, candidate) pair with last-layer input ``x`` and per-head, per-depth
attended CLS values ``o[d, h] = A_{h,d}[CLS] V_h`` (``MAWAttention.row_outputs``)::

    score = Σ_h w_hᵀ o[d_h, h] + vᵀ x_CLS + b + α · z(bm25) [+ γ · z(cos)]

where ``w_h`` folds the output projection and a linear head (``u_hᵀ W_o,h``), and ``z(bm25)`` is
the BM25 score z-scored over the query's candidates; with ``semantic``, ``z(cos)`` is the base
encoder's bi-encoder cosine (``SplitInputs.dense_scores``) z-scored the same way. These
*first-stage* features are the columns of ``first_stage`` (B, F) in every scoring call. Nothing
non-linear follows the attention,
so ``score[c] = score_base[c] + Σ_h score_parts[d_h, h, c]`` holds exactly for hard, per-head
and soft choices: the tables (``maw_gym.tables``) store only these two arrays. The BM25 term
makes reranking start at BM25's ranking (α is initialised large, the rest near zero), which
the prototypes found necessary to beat BM25 at all (issue 3).

**Depth specialisation: straight-through Gumbel-softmax router in the loop.** Training each
query on a random depth makes all depths learn the same ranking (rank correlation 0.95 in the
prototype), which makes routing pointless. Here a router MLP reads the *same* compressed
observation the environment exposes (``compress_attention`` pooled maps of every depth,
averaged over the query's top BM25 candidates, detached) and picks one depth per query with a hard
straight-through Gumbel-softmax sample; the query's scores are that depth's scores, so each
depth is trained only on the queries routed to it and the router learns (through the
straight-through gradient of the listwise loss) which depth ranks which query best. A Switch
Transformer load-balancing term ``λ · D · Σ_d f_d P_d`` (f_d: fraction of the batch routed to
d, P_d: mean router probability) keeps every depth in use. We chose Gumbel over hard-EM
(train each query's currently-best depth) because the prototype's hard-EM decorrelated the
depths but made every one weaker, and because Gumbel trains the router jointly with one
objective; the first epoch uses random depths (a warm start: every depth first learns to
rank, then specialises). Honest status: the prototypes found no routing gain from either;
``maw-gym encoder report`` measures what this one reaches, against a seed control.
``specialisation="random"`` keeps random-depth training for comparison.

**Depths as experts (levers, each a ``MAWReranker``/``TrainConfig`` argument recorded in the
encoder config, and a preset field, so in every cache key).** With one shared score head the
depth only changes how one CLS row pools already-contextualised states, and training pulls the
depths together (Spearman 0.97 between depths' scores at quick). ``depth_heads`` gives each
depth its own score head and first-stage weights, so depths can sit anywhere on the
lexical ↔ semantic axis, still exactly linear; ``semantic`` adds the base encoder's bi-encoder
cosine as that axis' semantic end (and is what makes the reranker beat BM25 at quick);
``temperature_spread`` makes depths sharp ↔ diffuse and ``locality`` local ↔ global by
construction. ``specialisation="sinkhorn"`` trains each query only on the depth a balanced
hard assignment gives it (BASE layers: Sinkhorn on the per-query, per-depth listwise losses,
so every depth gets ``Bq/D`` queries of each batch and none starves), after a warm-up epoch in
which every depth learns every query; the router learns to predict that assignment from the
observation (cross-entropy), which makes the assignment something the observation can tell
apart. The projections, the CLS head and the shared score head are a trunk every query trains.
``diversity_weight`` adds the mean pairwise correlation of the depths' candidate scores to the
loss (negative correlation learning). ``specialisation="groups"`` is the ground-truth tier
(issue 18): every depth's listwise loss on a query is weighted by ``maw_gym.groups``'
``group_loss_weights`` (its own group's depths only at ``group_mix`` 0, every depth alike at 1;
every depth alike during the warm-up), so depths become experts on known query groups by
construction; the router learns to predict each query's own depths from the observation, as
under ``sinkhorn``. Not done: query/document segment restriction per depth
(the states cache holds no token types; ``locality`` approximates it from the CLS row), and MAW
inside the base encoder (the base encoder stays frozen).
Whether any of this makes routing pay is measured by ``maw-gym encoder study``.

**Layerwise stack.** With ``layers=2``, layer 1's output is added to its input (residual,
LayerNorm) and fed to layer 2, whose CLS row feeds the same linear head; it is trained with a
random depth per layer per query (cheap), for ``MAW/LayerwiseDepth``.

Train queries with no relevant candidate give the listwise loss no target; they are dropped
from training (they still appear in the tables and in evaluation).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maw_gym.encoder.attention import MAWAttention, NonMAWAttention, compress_attention
from maw_gym.groups import group_loss_weights
from maw_gym.metrics import depth_scores, ndcg_at_10
from maw_gym.pipeline import SplitInputs
from maw_gym.progress import progress_bar
from maw_gym.specs import KEY_OMITS_DEFAULT, Specialisation

logger = logging.getLogger(__name__)

AttentionKind = Literal["maw", "nonmaw"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one reranker."""

    epochs: int = 5
    """Maximum epochs; the best dev epoch is kept."""
    patience: int = 2
    """Epochs without dev improvement before stopping."""
    batch_queries: int = 16
    """Queries per optimisation step (all their candidates together)."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    specialisation: Specialisation = "router"
    """How a MAW layer chooses the depth a training query uses: ``router`` (straight-through
    Gumbel router), ``random``, ``sinkhorn`` (balanced hard assignment, see
    :func:`sinkhorn_assignment`; the router learns to predict it) or ``groups`` (each query's
    group's depths, weighted by ``group_mix``; the inputs must carry groups)."""
    warmup_epochs: int = 1
    """Epochs before specialisation starts (random depth for ``router``, every depth on every
    query for ``sinkhorn`` and ``groups``)."""
    group_mix: float = field(default=1.0, metadata=KEY_OMITS_DEFAULT)
    """ρ of ``groups`` specialisation (``EncoderSpec.group_mix``); left out of cache keys at
    its default, so every model trained before the tier keeps its key."""
    diversity_weight: float = 0.0
    """Weight of the diversity term: mean pairwise correlation of the depths' candidate
    scores (:func:`depth_correlation`), minimised so that depths rank differently."""
    balance_weight: float = 0.01
    """λ of the Switch load-balancing loss (Switch Transformer's default)."""
    gumbel_tau: float = 1.0
    """Temperature of the router's Gumbel-softmax samples."""
    seed: int = 0
    """Seed of initialisation, batching and depth sampling."""


def candidate_zscore(scores: Tensor, mask: Tensor) -> Tensor:
    """(..., C) first-stage scores z-scored over each query's real candidates; 0 on padding."""
    count = mask.sum(-1, keepdim=True).clamp(min=1)
    mean = (scores * mask).sum(-1, keepdim=True) / count
    var = (((scores - mean) * mask) ** 2).sum(-1, keepdim=True) / count
    return torch.where(mask, (scores - mean) / (var.sqrt() + 1e-6), torch.zeros_like(scores))


class DepthRouter(nn.Module):
    """MLP from the flattened compressed observation (D, H, P, P) to depth logits (D,).

    A LayerNorm first makes it indifferent to the observation's scale (pooled attention mass).
    """

    def __init__(self, depth: int, heads: int, pool: int, width: int = 128) -> None:
        super().__init__()
        features = depth * heads * pool * pool
        self.net = nn.Sequential(
            nn.LayerNorm(features), nn.Linear(features, width), nn.GELU(), nn.Linear(width, depth)
        )

    def forward(self, observation: Tensor) -> Tensor:
        return self.net(observation.flatten(1))


@dataclass(frozen=True)
class RerankerConfig:
    """Everything a :class:`MAWReranker` is built from (recorded in an encoder's config and its
    cache key, defaults included)."""

    hidden: int
    """Width of the base encoder's states."""
    heads: int
    """Attention heads H."""
    depth: int
    """MAW depths D (1 for ``nonmaw``)."""
    head_dim: int
    """Per-head width."""
    pool: int
    """The observation's pooled size P (each attention map to P x P)."""
    attention: AttentionKind = "maw"
    """``"maw"`` (``depth`` patterns) or ``"nonmaw"`` (standard attention, D = 1)."""
    layers: int = 1
    """MAW layers in the stack (the score reads the last one)."""
    router: bool = True
    """Build the joint depth router (MAW, one layer)."""
    observe_candidates: int = 8
    """The observation averages the last layer's compressed attention over each query's top
    ``observe_candidates`` BM25 candidates (materialising every depth's full attention is the
    pipeline's most expensive step, and the top of the list is what NDCG@10 depends on)."""
    init_noise: float = 2.0
    """``MAWAttention``'s depth-transform noise around identity (how different the depths
    start). 2.0, not the layer's 0.5: at quick, 0.5 left the depths' rankings almost identical
    (Spearman 0.986, oracle headroom +0.007 on test against a seed control of +0.015); 2.0 gave
    Spearman 0.966 and headroom +0.015 at equal NDCG@10."""
    depth_heads: bool = False
    """Each depth an expert with its own score head: ``w_{h,d} = w_h + δ_{d,h}`` and its own
    BM25 weight ``α + β_d`` (β starts spread over [-½, ½]·α, so depths start along the lexical
    ↔ semantic axis). ``β_d·z(bm25)/H`` is added to every head's part, so the score stays
    exactly ``score_base + Σ_h score_parts[d_h, h]``."""
    temperature_spread: float = 0.0
    """``MAWAttention``'s per-depth temperature prior (sharp ↔ diffuse)."""
    locality: float = 0.0
    """``MAWAttention``'s per-depth ALiBi-style locality prior (local ↔ global)."""
    semantic: bool = False
    """A second first-stage feature, the base encoder's bi-encoder cosine, with its own weight
    ``γ`` (and, with ``depth_heads``, ``γ + η_d``, η spread over [½, -½]·γ against β's [-½, ½]:
    depth 0 starts semantic, the last depth lexical). Inputs must then carry ``dense_scores``
    (``StatesSpec.semantic``)."""

    def __post_init__(self) -> None:
        if self.attention not in ("maw", "nonmaw"):
            raise ValueError(f"attention must be 'maw' or 'nonmaw', got {self.attention!r}")
        if self.layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}")
        if self.observe_candidates < 1:
            raise ValueError(f"observe_candidates must be >= 1, got {self.observe_candidates}")


class MAWReranker(nn.Module):
    """Base-encoder states of (query, candidate) pairs -> candidate scores (see module doc);
    built from a :class:`RerankerConfig`."""

    def __init__(self, config: RerankerConfig) -> None:
        super().__init__()
        self.config = config
        hidden, heads, head_dim = config.hidden, config.heads, config.head_dim
        attention, layers, semantic = config.attention, config.layers, config.semantic
        self.attention_kind = attention
        self.depth = config.depth if attention == "maw" else 1
        self.heads, self.head_dim, self.pool = heads, head_dim, config.pool
        self.observe_candidates = config.observe_candidates

        def make_layer() -> nn.Module:
            if attention == "maw":
                return MAWAttention(
                    hidden,
                    heads,
                    self.depth,
                    head_dim,
                    init_noise=config.init_noise,
                    temperature_spread=config.temperature_spread,
                    locality=config.locality,
                )
            return NonMAWAttention(hidden, heads, 1, head_dim)

        self.layers = nn.ModuleList(make_layer() for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers - 1))
        # u: read-out of the last layer's CLS output; u_hᵀ W_o,h is head h's share of it.
        self.score_weight = nn.Parameter(torch.randn(hidden) * 0.01)
        self.cls_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.cls_head.weight)
        nn.init.zeros_(self.cls_head.bias)
        self.bm25_weight = nn.Parameter(torch.tensor(1.0))
        self.semantic_weight = nn.Parameter(torch.tensor(1.0)) if semantic else None
        self.depth_head: nn.Parameter | None = None
        self.depth_bm25: nn.Parameter | None = None
        self.depth_semantic: nn.Parameter | None = None
        if config.depth_heads and attention == "maw":
            self.depth_head = nn.Parameter(torch.zeros(self.depth, heads, head_dim))
            self.depth_bm25 = nn.Parameter(torch.linspace(-0.5, 0.5, self.depth))
            if semantic:
                self.depth_semantic = nn.Parameter(torch.linspace(0.5, -0.5, self.depth))
        use_router = config.router and attention == "maw" and layers == 1 and self.depth > 1
        self.router = DepthRouter(self.depth, heads, config.pool) if use_router else None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def last_input(self, x: Tensor, mask: Tensor, lower_depths: Tensor | None = None) -> Tensor:
        """(B, L, hidden) input of the last layer, given one depth per item for each lower
        layer (``lower_depths`` (B, layers-1); ignored for one layer)."""
        for index, (layer, norm) in enumerate(zip(self.layers[:-1], self.norms, strict=True)):
            if lower_depths is None:
                raise ValueError(
                    f"lower_depths: a {self.num_layers}-layer stack needs a depth "
                    "per item for each lower layer, got None"
                )
            out, _ = layer(x, mask, depth_index=lower_depths[:, index].long())
            x = norm(x + out)
        return x

    def last_inputs_per_depth(self, x: Tensor, mask: Tensor) -> Iterator[Tensor]:
        """Yield, for each depth d of layer 1 of a 2-layer stack, the (B, L, hidden) input of
        layer 2: :meth:`last_input` with ``lower_depths`` all d, layer 1 projected once."""
        if self.num_layers != 2:
            raise ValueError(f"last_inputs_per_depth: a 2-layer stack only, not {self.num_layers}")
        for out in self.layers[0].outputs_per_depth(x, mask):
            yield self.norms[0](x + out)

    def score_terms(
        self, x: Tensor, mask: Tensor, first_stage: Tensor, lower_depths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Linear decomposition of the scores of B pairs: ``(base (B,), parts (B, D, H))``.

        The score with depth ``d_h`` for head ``h`` is ``base + Σ_h parts[:, d_h, h]``.
        """
        return self.last_terms(self.last_input(x, mask, lower_depths), mask, first_stage)

    def last_terms(self, x: Tensor, mask: Tensor, first_stage: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`score_terms` from the last layer's input ``x`` (:meth:`last_input`)."""
        self._check_first_stage(first_stage)
        last = self.layers[-1]
        # (1, H, head_dim): u_hᵀ W_o,h for each head; (D, H, head_dim) with depth heads.
        readout = (self.score_weight @ last.out_proj.weight).view(1, self.heads, self.head_dim)
        if self.depth_head is not None:
            readout = readout + self.depth_head
        parts = last.row_readout(x, mask, readout) + self._first_stage_parts(first_stage)
        base = self._depth_free(x, first_stage) + self.score_weight @ last.out_proj.bias
        return base, parts  # (B,), (B, D, H)

    @property
    def first_stage_features(self) -> int:
        """F: the columns ``first_stage`` must have (z(bm25), then z(cos) with ``semantic``)."""
        return 1 if self.semantic_weight is None else 2

    def _check_first_stage(self, first_stage: Tensor) -> None:
        if first_stage.dim() != 2 or first_stage.shape[1] != self.first_stage_features:
            raise ValueError(
                f"first_stage: expected (B, {self.first_stage_features}) z-scored first-stage "
                f"scores (BM25{', cosine' if self.semantic_weight is not None else ''}), got "
                f"{tuple(first_stage.shape)}; a semantic encoder needs inputs built with "
                "StatesSpec.semantic"
            )

    def _first_stage_parts(self, first_stage: Tensor) -> Tensor | float:
        """(B, D, 1) each depth's own first-stage weights' share of every head's part (0
        without depth heads): ``(β_d·z(bm25) [+ η_d·z(cos)]) / H``."""
        if self.depth_head is None or self.depth_bm25 is None:
            return 0.0
        weights = [self.depth_bm25]
        if self.depth_semantic is not None:
            weights.append(self.depth_semantic)
        per_depth = first_stage @ torch.stack(weights, dim=1).T  # (B, D)
        return per_depth[:, :, None] / self.heads

    def _depth_free(self, x: Tensor, first_stage: Tensor) -> Tensor:
        weights = [self.bm25_weight]
        if self.semantic_weight is not None:
            weights.append(self.semantic_weight)
        return self.cls_head(x[:, 0]).squeeze(-1) + first_stage @ torch.stack(weights)

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        first_stage: Tensor,
        depth_index: Tensor | None = None,
        depth_weights: Tensor | None = None,
        lower_depths: Tensor | None = None,
    ) -> Tensor:
        """(B,) scores of B pairs through the layer's own forward pass (hard ``depth_index``
        (B,) or (B, H), or soft ``depth_weights`` (B, D)); equals the :meth:`score_terms`
        decomposition, which is what tables store (tested)."""
        self._check_first_stage(first_stage)
        x = self.last_input(x, mask, lower_depths)
        if depth_index is None and depth_weights is None:
            depth_index = torch.zeros(x.shape[0], dtype=torch.long)
        last = self.layers[-1]
        out, _ = last(x, mask, depth_index=depth_index, depth_weights=depth_weights)
        score = out[:, 0] @ self.score_weight + self._depth_free(x, first_stage)
        if self.depth_head is not None:
            weights = last._weights_per_head(x.shape[0], depth_index, depth_weights)  # (B, H, D)
            # (B, D, H) through row_outputs, not score_terms' read-out, so tests compare two paths.
            own_heads = (last.row_outputs(x, mask) * self.depth_head).sum(-1)
            expert = own_heads + self._first_stage_parts(first_stage)
            score = score + (weights.transpose(1, 2) * expert).sum((1, 2))
        return score

    def observe(
        self, x: Tensor, mask: Tensor, lower_depths: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Compressed attention of the last layer (``compress_attention``; no gradient)."""
        with torch.no_grad():
            x = self.last_input(x, mask, lower_depths)
        return compress_attention(self.layers[-1], x, mask, self.pool)


@dataclass
class QueryBatch:
    """Tensors of Bq queries x C candidates, pairs flattened to B = Bq·C."""

    x: Tensor  # (B, L, hidden) float32
    mask: Tensor  # (B, L) bool
    first_stage: Tensor  # (Bq, C, F): z(bm25), and z(cos) where the inputs carry it
    candidate_mask: Tensor  # (Bq, C)
    relevance: Tensor  # (Bq, C)
    groups: Tensor | None = None  # (Bq,) int64 query groups, where the inputs carry them
    group_count: int = 0  # G, the number of groups (0 without groups)

    @classmethod
    def from_inputs(
        cls, inputs: SplitInputs, index: np.ndarray, device: torch.device | None = None
    ) -> QueryBatch:
        """Queries ``index`` of ``inputs``, on ``device`` (default: CPU)."""
        bq, c = len(index), inputs.candidate_mask.shape[1]
        states = _float_states(inputs.states, index)
        token_mask = torch.from_numpy(inputs.token_mask[index])
        candidate_mask = torch.from_numpy(inputs.candidate_mask[index])
        # Padding candidates keep their CLS token valid so attention rows stay defined.
        token_mask = token_mask.clone()
        token_mask[..., 0] = True
        batch = cls(
            x=states.view(bq * c, *states.shape[2:]),
            mask=token_mask.view(bq * c, -1),
            first_stage=torch.stack(
                [
                    candidate_zscore(torch.from_numpy(scores[index]), candidate_mask)
                    for scores in (inputs.bm25_scores, inputs.dense_scores)
                    if scores is not None
                ],
                dim=-1,
            ),
            candidate_mask=candidate_mask,
            relevance=torch.from_numpy(inputs.relevance[index]),
            groups=None if inputs.groups is None else torch.from_numpy(inputs.groups.index[index]),
            group_count=0 if inputs.groups is None else inputs.groups.count,
        )
        if device is None or device.type == "cpu":
            return batch
        tensors = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
        return dataclasses.replace(
            batch, **{k: v.to(device) for k, v in tensors.items() if isinstance(v, Tensor)}
        )

    def leading(self, count: int) -> QueryBatch:
        """The batch restricted to each query's first ``count`` (top BM25) candidates."""
        bq, c = self.shape
        k = min(count, c)
        x = self.x.view(bq, c, *self.x.shape[1:])[:, :k].reshape(bq * k, *self.x.shape[1:])
        mask = self.mask.view(bq, c, -1)[:, :k].reshape(bq * k, -1)
        return dataclasses.replace(
            self,
            x=x,
            mask=mask,
            first_stage=self.first_stage[:, :k],
            candidate_mask=self.candidate_mask[:, :k],
            relevance=self.relevance[:, :k],
        )

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.candidate_mask.shape)  # type: ignore[return-value]

    def per_query(self, values: Tensor) -> Tensor:
        """(B, ...) per pair -> (Bq, C, ...)."""
        return values.view(*self.shape, *values.shape[1:])

    def candidate_mean(self, values: Tensor) -> Tensor:
        """(B, ...) per pair -> (Bq, ...) mean over each query's real candidates."""
        grouped = self.per_query(values)
        weights = self.candidate_mask.to(grouped.dtype)
        weights = weights / weights.sum(1, keepdim=True).clamp(min=1)
        return torch.einsum("qc,qc...->q...", weights, grouped)


def _float_states(states: np.ndarray, index: np.ndarray) -> Tensor:
    """The float16 states of queries ``index`` as float32 (exact), converted by torch: numpy's
    conversion took 10% of the tables' time (issue 20)."""
    return torch.from_numpy(np.ascontiguousarray(states[index])).float()


def listwise_loss(scores: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
    """Mean over queries of the cross-entropy between softmax(scores) and relevance/Σrelevance
    (ListNet top-1); queries without relevant candidates must be excluded by the caller."""
    log_p = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    target = relevance * mask
    target = target / target.sum(-1, keepdim=True).clamp(min=1e-12)
    return -(target * log_p.masked_fill(~mask, 0.0)).sum(-1).mean()


def depth_candidate_scores(
    model: MAWReranker, batch: QueryBatch, lower_depths: Tensor | None = None
) -> Tensor:
    """(Bq, D, C) every depth's candidate scores (the same depth for all heads)."""
    first_stage = batch.first_stage.flatten(0, 1)
    base, parts = model.score_terms(batch.x, batch.mask, first_stage, lower_depths)
    scores = base[:, None] + parts.sum(-1)  # (B, D)
    return batch.per_query(scores).transpose(1, 2)


def switch_balance_loss(router_probs: Tensor, assignment: Tensor) -> Tensor:
    """Switch Transformer load balancing ``D · Σ_d f_d · P_d`` (1 when perfectly balanced)."""
    depth = router_probs.shape[1]
    fraction = F.one_hot(assignment, depth).float().mean(0)
    return depth * (fraction * router_probs.mean(0)).sum()


def _query_batches(count: int, batch_size: int, generator: torch.Generator) -> Iterator[np.ndarray]:
    order = torch.randperm(count, generator=generator).numpy()
    for start in range(0, count, batch_size):
        yield order[start : start + batch_size]


def per_query_listwise(scores: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
    """(Bq, D) listwise loss of every depth's scores ``(Bq, D, C)`` for every query."""
    log_p = torch.log_softmax(scores.masked_fill(~mask[:, None], float("-inf")), dim=-1)
    target = relevance * mask
    target = (target / target.sum(-1, keepdim=True).clamp(min=1e-12))[:, None]
    return -(target * log_p.masked_fill(~mask[:, None], 0.0)).sum(-1)


def sinkhorn_assignment(cost: Tensor, iterations: int = 20, epsilon: float = 0.05) -> Tensor:
    """(Bq,) balanced hard assignment of queries to depths for a (Bq, D) cost (BASE layers).

    Sinkhorn iterations on ``exp(-cost/ε)`` scale rows to 1 and columns to ``Bq/D``; each query
    then takes its largest entry. Without the balance every query would pick the depth that is
    best on average and the others would starve (the collapse routing papers report).
    """
    cost = (cost - cost.mean()) / (cost.std() + 1e-6)
    log_plan = -cost / epsilon
    column = math.log(cost.shape[0] / cost.shape[1])
    for _ in range(iterations):
        log_plan = log_plan - log_plan.logsumexp(1, keepdim=True)
        log_plan = log_plan - log_plan.logsumexp(0, keepdim=True) + column
    return log_plan.argmax(1)


def depth_correlation(all_scores: Tensor, mask: Tensor) -> Tensor:
    """Mean over queries and depth pairs d ≠ d' of the Pearson correlation of two depths'
    candidate scores ``(Bq, D, C)`` (the diversity term: lower = depths rank differently)."""
    weight = mask[:, None].to(all_scores.dtype)
    count = weight.sum(-1, keepdim=True).clamp(min=1)
    centred = (all_scores - (all_scores * weight).sum(-1, keepdim=True) / count) * weight
    unit = centred / (centred.norm(dim=-1, keepdim=True) + 1e-6)
    corr = unit @ unit.transpose(1, 2)  # (Bq, D, D)
    depth = corr.shape[1]
    return (corr.sum((1, 2)) - corr.diagonal(dim1=1, dim2=2).sum(-1)).mean() / (depth * (depth - 1))


def _router_logits(model: MAWReranker, batch: QueryBatch) -> Tensor:
    """(Bq, D) the router's logits from the (detached) observation of each query."""
    assert model.router is not None
    observed = batch.leading(model.observe_candidates)
    observation = observed.candidate_mean(model.observe(observed.x, observed.mask)["observation"])
    return model.router(observation)


def _group_loss(model: MAWReranker, batch: QueryBatch, losses: Tensor, mix: float) -> Tensor:
    """``groups`` specialisation: each query's per-depth losses (Bq, D) weighted by
    ``group_loss_weights`` at ``mix``, plus the router's cross-entropy against the query's own
    depths (so the observation, never the group, is what it routes by)."""
    if batch.groups is None:
        raise ValueError(
            "specialisation='groups' needs training inputs with query groups "
            "(maw_gym.groups.with_groups; EncoderSpec.groups)"
        )
    index = batch.groups.cpu().numpy()
    weights = group_loss_weights(index, batch.group_count, model.depth, mix)
    loss = (torch.from_numpy(weights).to(losses) * losses).sum(1).mean()
    if model.router is None:
        return loss
    own = torch.from_numpy(group_loss_weights(index, batch.group_count, model.depth, 0.0))
    return loss + F.cross_entropy(_router_logits(model, batch), own.to(losses))


def training_step(
    model: MAWReranker,
    batch: QueryBatch,
    config: TrainConfig,
    specialise: bool,
    generator: torch.Generator,
) -> tuple[Tensor, dict[str, float]]:
    """Loss of one batch: listwise on the depth(s) chosen per query (``specialise``: past the
    warm-up), plus the router's balancing or imitation term and the diversity term."""
    bq = batch.shape[0]
    depth = model.depth
    device = batch.x.device  # draws come from the CPU generator: the same on every device
    lower = None
    if model.num_layers > 1:
        lower_q = torch.randint(depth, (bq, model.num_layers - 1), generator=generator)
        lower = lower_q.repeat_interleave(batch.shape[1], dim=0).to(device)
    all_scores = depth_candidate_scores(model, batch, lower)  # (Bq, D, C)
    losses = per_query_listwise(all_scores, batch.relevance, batch.candidate_mask)  # (Bq, D)
    logs: dict[str, float] = {}
    mode = config.specialisation
    if mode == "router" and specialise and model.router is not None:
        logits = _router_logits(model, batch)
        gumbel = -torch.log(
            -torch.log(torch.rand(logits.shape, generator=generator).clamp(1e-10, 1 - 1e-10))
        ).to(device)
        soft = torch.softmax((logits + gumbel) / config.gumbel_tau, dim=-1)
        assignment = soft.argmax(-1)
        hard = F.one_hot(assignment, depth).float()
        choice = hard + soft - soft.detach()  # straight-through: hard forward, soft gradient
        scores = (choice[:, :, None] * all_scores).sum(1)
        balance = switch_balance_loss(torch.softmax(logits, -1), assignment)
        loss = listwise_loss(scores, batch.relevance, batch.candidate_mask)
        logs["balance"] = float(balance.detach())
        loss = loss + config.balance_weight * balance
    elif mode == "sinkhorn" and specialise:
        assignment = sinkhorn_assignment(losses.detach())
        loss = losses[torch.arange(bq, device=device), assignment].mean()
        if model.router is not None:  # the router learns to predict the balanced assignment
            loss = loss + F.cross_entropy(_router_logits(model, batch), assignment)
    elif mode == "sinkhorn":
        loss = losses.mean()  # warm-up: every depth learns to rank every query
    elif mode == "groups":
        loss = _group_loss(model, batch, losses, config.group_mix if specialise else 1.0)
    else:
        chosen = torch.randint(depth, (bq,), generator=generator).to(device)
        loss = losses[torch.arange(bq, device=device), chosen].mean()
    if config.diversity_weight > 0 and depth > 1:
        correlation = depth_correlation(all_scores, batch.candidate_mask)
        logs["correlation"] = float(correlation.detach())
        loss = loss + config.diversity_weight * correlation
    logs["loss"] = float(loss.detach())
    return loss, logs


@dataclass
class SplitScores:
    """A model's outputs on every query of a split (numpy, float32)."""

    score_base: np.ndarray  # (N, C)
    score_parts: np.ndarray  # (N, D, H, C)
    observation: np.ndarray | None = None  # (N, D, H, P, P)
    entropy: np.ndarray | None = None  # (N, D, H)
    focus: np.ndarray | None = None  # (N, D, H)
    router_logits: np.ndarray | None = None  # (N, D)

    def depth_scores(self) -> np.ndarray:
        """(N, D, C) scores of each hard depth."""
        return depth_scores(self.score_base, self.score_parts)


#: Queries per ``score_split`` batch: 8 ran the tables 15% faster than 16 and 32 (their
#: temporaries stay nearer the CPU's caches; issue 20, quick shapes).
SCORE_BATCH_QUERIES = 8


@torch.no_grad()
def score_split(
    model: MAWReranker,
    inputs: SplitInputs,
    batch_queries: int = SCORE_BATCH_QUERIES,
    observe: bool = False,
    lower_depths: np.ndarray | None = None,
    progress: str | None = None,
) -> SplitScores:
    """Score every query of ``inputs`` (eval mode); with ``observe`` also the compressed
    observation, entropy, focus and the router's logits. ``lower_depths`` (N, layers-1) fixes
    the lower layers' depths of a stack. Runs on the model's device; returns numpy arrays."""
    model.eval()
    device = next(model.parameters()).device
    n, c = inputs.candidate_mask.shape
    out: dict[str, list[np.ndarray]] = {}
    for index in _query_blocks(n, batch_queries, progress):
        batch = QueryBatch.from_inputs(inputs, index, device)
        lower = None
        if lower_depths is not None:
            lower = torch.from_numpy(lower_depths[index]).long().repeat_interleave(c, dim=0)
            lower = lower.to(device)
        _score_batch(model, batch, model.last_input(batch.x, batch.mask, lower), observe, out)
    return _split_scores(out)


@torch.no_grad()
def score_split_per_lower_depth(
    model: MAWReranker,
    inputs: SplitInputs,
    batch_queries: int = SCORE_BATCH_QUERIES,
    progress: str | None = None,
) -> list[SplitScores]:
    """:func:`score_split` of a 2-layer stack with observations, once per depth d of layer 1
    (``lower_depths`` all d): element d. Each batch's layer 1 is projected once for every depth
    (``MAWReranker.last_inputs_per_depth``), not once per depth as D calls would."""
    model.eval()
    device = next(model.parameters()).device
    outs: list[dict[str, list[np.ndarray]]] = [{} for _ in range(model.depth)]
    for index in _query_blocks(inputs.num_queries, batch_queries, progress):
        batch = QueryBatch.from_inputs(inputs, index, device)
        for out, x in zip(outs, model.last_inputs_per_depth(batch.x, batch.mask), strict=True):
            _score_batch(model, batch, x, True, out)
    return [_split_scores(out) for out in outs]


def _query_blocks(n: int, batch_queries: int, progress: str | None) -> Iterator[np.ndarray]:
    """Query indices in blocks of ``batch_queries``, with a bar named ``progress`` if given."""
    starts = range(0, n, batch_queries)
    if progress is not None:
        starts = progress_bar(starts, desc=progress, unit="batch", leave=False)
    for start in starts:
        yield np.arange(start, min(start + batch_queries, n))


def _score_batch(
    model: MAWReranker,
    batch: QueryBatch,
    x: Tensor,
    observe: bool,
    out: dict[str, list[np.ndarray]],
) -> None:
    """Append a batch's arrays to ``out``, from the last layer's input ``x`` (B, L, hidden)."""
    base, parts = model.last_terms(x, batch.mask, batch.first_stage.flatten(0, 1))
    out.setdefault("score_base", []).append(batch.per_query(base).cpu().numpy())
    parts = batch.per_query(parts).permute(0, 2, 3, 1)
    out.setdefault("score_parts", []).append(parts.cpu().numpy())
    if not observe:
        return
    observed = dataclasses.replace(batch, x=x).leading(model.observe_candidates)
    compressed = compress_attention(model.layers[-1], observed.x, observed.mask, model.pool)
    means = {key: observed.candidate_mean(value) for key, value in compressed.items()}
    for key, value in means.items():
        out.setdefault(key, []).append(value.cpu().numpy())
    if model.router is not None:
        logits = model.router(means["observation"])
        out.setdefault("router_logits", []).append(logits.cpu().numpy())


def _split_scores(out: dict[str, list[np.ndarray]]) -> SplitScores:
    return SplitScores(**{k: np.concatenate(v).astype(np.float32) for k, v in out.items()})


def routed_ndcg(model: MAWReranker, inputs: SplitInputs, progress: str | None = None) -> float:
    """Dev metric for early stopping: NDCG@10 of the model's own choice of depth (its router's
    argmax; the mean over depths without a router). A stack's lower layers use depth
    ``query index mod D`` (one pass over dev, every lower depth equally often)."""
    rel, ideal, mask = inputs.relevance, inputs.ideal_gains, inputs.candidate_mask
    if model.num_layers > 1:
        lower = np.arange(inputs.num_queries)[:, None] % model.depth
        lower = np.repeat(lower, model.num_layers - 1, axis=1)
        scored = score_split(model, inputs, lower_depths=lower, progress=progress)
        return float(ndcg_at_10(scored.depth_scores(), rel, ideal, mask).mean())
    scored = score_split(model, inputs, observe=model.router is not None, progress=progress)
    per_depth = ndcg_at_10(scored.depth_scores(), rel, ideal, mask)
    if scored.router_logits is None:
        return float(per_depth.mean())
    choice = scored.router_logits.argmax(1)
    return float(per_depth[np.arange(len(choice)), choice].mean())


@dataclass
class TrainState:
    """Everything needed to resume training after an epoch."""

    epoch: int
    best_metric: float
    best_state: dict[str, Tensor]
    history: list[dict[str, float]]
    stale: int
    done: bool

    def end_epoch(
        self, model: MAWReranker, metric: float, routed: bool, config: TrainConfig
    ) -> None:
        """Count the epoch; keep the model if its dev metric is the best so far; stop after
        ``patience`` epochs without improvement or at ``config.epochs``."""
        self.epoch += 1
        # A router epoch is compared only with router epochs: warm-up epochs are not routed.
        if metric > self.best_metric or (routed and self.epoch == config.warmup_epochs + 1):
            self.best_metric, self.stale = metric, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.stale += 1
        self.done = self.stale >= config.patience or self.epoch >= config.epochs


def train_epoch(
    model: MAWReranker,
    train: SplitInputs,
    teach: np.ndarray,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    specialise: bool,
    generator: torch.Generator,
    desc: str,
) -> float:
    """One pass over the ``teach`` queries of ``train`` in shuffled batches; the mean loss."""
    model.train()
    device = next(model.parameters()).device
    losses = []
    batches = list(_query_batches(len(teach), config.batch_queries, generator))
    candidates = train.candidate_mask.shape[1]
    with progress_bar(total=len(teach) * candidates, desc=desc, unit="pair") as bar:
        for picked in batches:
            batch = QueryBatch.from_inputs(train, teach[picked], device)
            loss, logs = training_step(model, batch, config, specialise, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(logs["loss"])
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
            bar.update(len(picked) * candidates)
    return float(np.mean(losses))


def train_reranker(
    model: MAWReranker,
    train: SplitInputs,
    dev: SplitInputs,
    config: TrainConfig,
    name: str = "reranker",
    resume: dict | None = None,
    on_epoch=None,
) -> TrainState:
    """Train ``model`` in place, on its device (listwise loss, AdamW, early stopping on dev
    NDCG@10) and load its best dev epoch. ``resume`` is a dict saved by ``on_epoch(dict)``
    after an epoch."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    teach = np.flatnonzero(train.has_relevant())
    state = TrainState(0, -1.0, copy.deepcopy(model.state_dict()), [], stale=0, done=False)
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["generator"])
        state = resume["train_state"]
    while not state.done and state.epoch < config.epochs:
        started = time.perf_counter()
        specialise = model.depth > 1 and state.epoch >= config.warmup_epochs
        routed = specialise and config.specialisation != "random" and model.router is not None
        desc = f"encoder {name} epoch {state.epoch + 1}/{config.epochs}"
        loss = train_epoch(model, train, teach, optimizer, config, specialise, generator, desc)
        metric = routed_ndcg(model, dev, progress=f"{desc}: dev")
        state.history.append(
            {
                "epoch": state.epoch + 1,
                "train_loss": loss,
                "dev_ndcg10": metric,
                "router": float(routed),
                "seconds": time.perf_counter() - started,
            }
        )
        state.end_epoch(model, metric, routed, config)
        logger.info("%s: loss %.4f, dev NDCG@10 %.4f", desc, loss, metric)
        if on_epoch is not None:
            on_epoch(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "train_state": state,
                }
            )
    model.load_state_dict(state.best_state)
    return state
