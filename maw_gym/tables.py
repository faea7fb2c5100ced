"""Tables: everything an episode can need, per query and per action, for one split.

With the MAW encoder frozen, an episode's observation and reward are pure functions of
(query, action). They are computed once per split by
:func:`maw_gym.encoder.table_builder.build_tables` and cached here, so environments step at
memory speed.

The reranker's score is *linear* in the MAW attention output (see ``maw_gym.encoder.reranker``),
so a candidate's score under any choice of depths decomposes exactly as

    score[c] = score_base[c] + sum_h score_parts[d_h, h, c]

which makes the hard, per-head and soft-mixture environments exact from these arrays.

Shapes (N queries, D depths, H heads, P pooled size, C candidates; "top-8" = the query's 8 best
BM25 candidates, which the observation is averaged over):

| field               | shape              | meaning                                          |
|---------------------|--------------------|--------------------------------------------------|
| query_ids           | (N,) str           | BEIR query ids                                   |
| candidate_ids       | (N, C) str         | BM25 top-C doc ids, "" where a query has fewer   |
| candidate_mask      | (N, C) bool        | True for real candidates                         |
| relevance           | (N, C)             | qrels grade of each candidate (0 if unjudged)    |
| ideal_gains         | (N, 10)            | the query's 10 best qrels grades (for IDCG)      |
| observation         | (N, D, H, P, P)    | compressed 5D attention (mean over top-8)        |
| entropy             | (N, D, H)          | mean normalised row entropy, in [0, 1]           |
| focus               | (N, D, H)          | mean top-k key mass, in [0, 1]                   |
| score_parts         | (N, D, H, C)       | per-head, per-depth part of candidate scores     |
| score_base          | (N, C)             | depth-independent part of the scores             |
| bm25_scores         | (N, C)             | first-stage scores                               |
| nonmaw_scores       | (N, C)             | NON-MAW twin reranker's scores                   |
| joint_router_logits | (N, D)             | the encoder's jointly trained router             |
| layer2_observation  | (N, D, D, H, P, P) | optional: layer-2 observation given layer-1 depth|
| layer2_entropy      | (N, D, D, H)       | optional: layer-2 entropy given (d1, d2)         |
| layer2_focus        | (N, D, D, H)       | optional: layer-2 focus given (d1, d2)           |
| layer2_scores       | (N, D, D, C)       | optional: the stack's scores given (d1, d2)      |

Arrays are float32 unless the table says otherwise.

``alignment`` (N, D) is derived: NDCG@10 of the candidates reranked by each depth's scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from maw_gym.cache import atomic_path

NDCG_CUTOFF = 10


def ndcg_at_10(
    scores: np.ndarray, relevance: np.ndarray, ideal_gains: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """NDCG@10 of each row's candidates ranked by ``scores``; leading axes broadcast.

    ``scores``/``relevance``/``mask``: (..., C); ``ideal_gains``: (..., 10). Ties are broken by
    candidate position (BM25 order), as a stable sort does. Queries with no relevant document
    score 0. Uses linear gains ``rel`` and ``log2(rank + 1)`` discounts, as trec_eval (and so
    beir) does.
    """
    scores = np.where(mask, scores, -np.inf)
    order = np.argsort(-scores, axis=-1, kind="stable")[..., :NDCG_CUTOFF]
    ranked_rel = np.take_along_axis(np.where(mask, relevance, 0.0), order, axis=-1)
    k = ranked_rel.shape[-1]
    discounts = 1.0 / np.log2(np.arange(2, NDCG_CUTOFF + 2))
    dcg = (ranked_rel * discounts[:k]).sum(-1)
    idcg = (ideal_gains * discounts).sum(-1)
    return np.where(idcg > 0, dcg / np.maximum(idcg, 1e-12), 0.0).astype(np.float32)


@dataclass
class Tables:
    """Per-query, per-action arrays for one split (see the module docstring for shapes)."""

    query_ids: np.ndarray
    candidate_ids: np.ndarray
    candidate_mask: np.ndarray
    relevance: np.ndarray
    ideal_gains: np.ndarray
    observation: np.ndarray
    entropy: np.ndarray
    focus: np.ndarray
    score_parts: np.ndarray
    score_base: np.ndarray
    bm25_scores: np.ndarray
    nonmaw_scores: np.ndarray
    joint_router_logits: np.ndarray
    layer2_observation: np.ndarray | None = None
    layer2_entropy: np.ndarray | None = None
    layer2_focus: np.ndarray | None = None
    layer2_scores: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    alignment: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n, d, h = self.observation.shape[:3]
        c = self.candidate_ids.shape[1]
        expected = {
            "candidate_mask": (n, c),
            "relevance": (n, c),
            "ideal_gains": (n, NDCG_CUTOFF),
            "entropy": (n, d, h),
            "focus": (n, d, h),
            "score_parts": (n, d, h, c),
            "score_base": (n, c),
            "bm25_scores": (n, c),
            "nonmaw_scores": (n, c),
            "joint_router_logits": (n, d),
            "query_ids": (n,),
        }
        for name, shape in expected.items():
            actual = getattr(self, name).shape
            if actual != shape:
                raise ValueError(f"Tables.{name} has shape {actual}, expected {shape}")
        for name in ("entropy", "focus"):
            values = getattr(self, name)
            if not np.all((values >= 0) & (values <= 1)):
                raise ValueError(f"Tables.{name} must lie in [0, 1]")
        if not np.isfinite(self.observation).all() or not np.isfinite(self.score_parts).all():
            raise ValueError("Tables hold NaN or inf: the encoder that built them diverged")
        self.alignment = self.ndcg(self.depth_scores())

    @property
    def num_queries(self) -> int:
        return int(self.observation.shape[0])

    @property
    def depth(self) -> int:
        return int(self.observation.shape[1])

    @property
    def heads(self) -> int:
        return int(self.observation.shape[2])

    @property
    def has_layers(self) -> bool:
        return self.layer2_scores is not None

    def depth_scores(self) -> np.ndarray:
        """Candidate scores for every hard depth choice: (N, D, C)."""
        return self.score_base[:, None, :] + self.score_parts.sum(axis=2)

    def ndcg(self, scores: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """NDCG@10 of ``scores`` (rows ``index``, or all; extra middle axes broadcast)."""
        rows = slice(None) if index is None else index
        rel, ideal, mask = self.relevance[rows], self.ideal_gains[rows], self.candidate_mask[rows]
        extra = scores.ndim - rel.ndim
        for _ in range(extra):
            rel, mask, ideal = rel[..., None, :], mask[..., None, :], ideal[..., None, :]
        return ndcg_at_10(scores, rel, ideal, mask)

    def save(self, path: Path) -> None:
        """Write one ``.npz`` atomically; ``meta`` is stored as JSON inside it."""
        arrays = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.init and f.name != "meta" and getattr(self, f.name) is not None
        }
        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(self.meta)), **arrays)

    @classmethod
    def load(cls, path: Path) -> Tables:
        """Read tables written by :meth:`save`; a truncated or foreign file is a clear error."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except Exception as error:  # zipfile/ValueError/EOFError all mean the same thing here
            raise ValueError(
                f"{path}: not a readable tables file ({error}); delete it to rebuild"
            ) from error
        meta = json.loads(str(arrays.pop("meta")))
        return cls(**arrays, meta=meta)

    def subset(self, index: np.ndarray) -> Tables:
        """The tables restricted to queries ``index`` (a new object; arrays are copies)."""
        arrays = {
            f.name: getattr(self, f.name) for f in fields(self) if f.init and f.name != "meta"
        }
        picked = {k: (None if v is None else v[index]) for k, v in arrays.items()}
        return Tables(**picked, meta=dict(self.meta))

    @classmethod
    def synthetic(
        cls,
        num_queries: int = 32,
        depth: int = 4,
        heads: int = 2,
        pool: int = 2,
        candidates: int = 8,
        best_depth: int | None = None,
        layers: bool = False,
        seed: int = 0,
    ) -> Tables:
        """Random but well-formed tables for unit tests.

        With ``best_depth`` set, that depth's scores rank the relevant candidates first on every
        query, so an agent that learns anything should pick it.
        """
        rng = np.random.default_rng(seed)
        n, d, h, p, c = num_queries, depth, heads, pool, candidates
        relevance = (rng.random((n, c)) < 0.3).astype(np.float32)
        relevance[:, 0] = np.maximum(relevance[:, 0], (rng.random(n) < 0.8))
        ideal = -np.sort(-relevance, axis=1)[:, :NDCG_CUTOFF]
        ideal = np.pad(ideal, ((0, 0), (0, max(0, NDCG_CUTOFF - ideal.shape[1]))))
        score_parts = rng.normal(size=(n, d, h, c)).astype(np.float32)
        if best_depth is not None:
            score_parts[:, best_depth] += 4.0 * relevance[:, None, :] / h
        obs = rng.random((n, d, h, p, p)).astype(np.float32)
        obs /= obs.sum(axis=(-1, -2), keepdims=True)
        extra: dict[str, Any] = {}
        if layers:
            extra = {
                "layer2_observation": rng.random((n, d, d, h, p, p)).astype(np.float32),
                "layer2_entropy": rng.random((n, d, d, h)).astype(np.float32),
                "layer2_focus": rng.random((n, d, d, h)).astype(np.float32),
                "layer2_scores": rng.normal(size=(n, d, d, c)).astype(np.float32),
            }
            if best_depth is not None:
                extra["layer2_scores"][:, best_depth, best_depth] += 4.0 * relevance
        return cls(
            query_ids=np.array([f"q{i}" for i in range(n)]),
            candidate_ids=np.array([[f"d{i}_{j}" for j in range(c)] for i in range(n)]),
            candidate_mask=np.ones((n, c), dtype=bool),
            relevance=relevance,
            ideal_gains=ideal.astype(np.float32),
            observation=obs,
            entropy=rng.random((n, d, h)).astype(np.float32),
            focus=rng.random((n, d, h)).astype(np.float32),
            score_parts=score_parts,
            score_base=np.zeros((n, c), dtype=np.float32),
            bm25_scores=np.sort(rng.random((n, c)).astype(np.float32), axis=1)[:, ::-1].copy(),
            nonmaw_scores=rng.normal(size=(n, c)).astype(np.float32),
            joint_router_logits=rng.normal(size=(n, d)).astype(np.float32),
            meta={"synthetic": True, "seed": seed},
            **extra,
        )
