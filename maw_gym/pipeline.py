"""The reranker's inputs for one split: BM25 candidates, their judgments and base-encoder states.

The first three stages (:mod:`maw_gym.specs`) meet here: the data sampling (:class:`DataSpec`,
applied with a fixed seed so that the encoder, the tables and the leaderboard all see the same
queries), the BM25 candidates (cached by ``maw_gym.retrieval``) and the base-encoder states
(cached by ``maw_gym.base_encoder``), so calling :func:`split_inputs` twice is cheap.
:func:`inputs_key` names a split's inputs without loading any model: the key the encoder and
the tables build on.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from maw_gym.cache import stable_hash
from maw_gym.metrics import NDCG_CUTOFF
from maw_gym.specs import DataSpec, InputsSpec, spec_dict

if TYPE_CHECKING:
    from maw_gym.groups import QueryGroups

#: Seed of the query sampling (fixed: every stage must see the same queries).
SAMPLE_SEED = 0
#: Queries whose token states are computed and cached together (see :func:`split_inputs`); also
#: the unit of work of a sharded tables build. 256 queries x 30 candidates = 7,680 pairs.
SHARD_QUERIES = 256


class ShardedRows:
    """Several ``(n_i, ...)`` arrays read as one ``(sum n_i, ...)`` array, without copying them
    (each shard's states stay a memory map of its cache file). Supports ``x[rows]`` and
    ``x[rows, ...]`` with an int, a slice or an integer array for ``rows``."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(part) for part in parts])
        self.shape = (int(self.offsets[-1]), *parts[0].shape[1:])
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        """``x[rows]`` or ``x[rows, *rest]``: rows gathered shard by shard, then ``rest``."""
        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        index = np.arange(self.shape[0])[rows]  # (k,), or () for an int
        flat = index.ravel()
        shard = np.searchsorted(self.offsets, flat, side="right") - 1
        picked = np.empty((flat.size, *self.shape[1:]), dtype=self.dtype)
        for part in np.unique(shard):
            here = shard == part
            picked[here] = self.parts[part][flat[here] - self.offsets[part]]
        picked = picked.reshape(*index.shape, *self.shape[1:])
        return picked[(slice(None),) * index.ndim + rest]


#: The per-query arrays of :class:`SplitInputs` (row i belongs to query i), in field order.
QUERY_ARRAYS = (
    "query_ids",
    "candidate_ids",
    "candidate_mask",
    "bm25_scores",
    "relevance",
    "ideal_gains",
    "states",
    "token_mask",
    "dense_scores",
)


@dataclass
class SplitInputs:
    """Arrays for N queries x C candidates x L tokens (shapes in comments)."""

    dataset: str
    split: str
    fingerprint: str
    query_ids: np.ndarray  # (N,) str
    candidate_ids: np.ndarray  # (N, C) str, "" where a query has fewer than C candidates
    candidate_mask: np.ndarray  # (N, C) bool
    bm25_scores: np.ndarray  # (N, C) float32, 0 where masked
    relevance: np.ndarray  # (N, C) float32 qrels grade
    ideal_gains: np.ndarray  # (N, 10) float32, the query's best grades (incl. non-candidates)
    states: np.ndarray | ShardedRows  # (N, C, L, hidden) float16 base-encoder last hidden states
    token_mask: np.ndarray  # (N, C, L) bool, True for real tokens
    base_model_id: str
    #: (N, C) float32 bi-encoder cosine of query and candidate (0 where masked), the semantic
    #: first-stage score; None unless the states spec asks for it (``StatesSpec.semantic``).
    dense_scores: np.ndarray | None = None
    #: Each query's group, which ``specialisation="groups"`` trains its expert depths on
    #: (``maw_gym.groups.with_groups``); None unless the encoder spec asks for groups.
    groups: QueryGroups | None = None

    @property
    def num_queries(self) -> int:
        return int(self.query_ids.shape[0])

    def model_key(self) -> str:
        """What a model trained or early-stopped on these inputs depends on: the queries
        (``fingerprint``), candidates per query, tokens per pair, the base model and the
        first-stage features (and the query groups, where set)."""
        groups = () if self.groups is None else (self.groups.names, self.groups.index.tolist())
        return stable_hash(
            self.fingerprint,
            self.candidate_mask.shape[1],
            self.token_mask.shape[2],
            self.base_model_id,
            self.dense_scores is not None,
            *groups,
        )

    def has_relevant(self) -> np.ndarray:
        """(N,) bool: queries with at least one relevant candidate (the only ones that teach)."""
        return (self.relevance * self.candidate_mask > 0).any(axis=1)

    def subset(self, index: np.ndarray, part: str) -> SplitInputs:
        """The queries ``index`` of this split, named ``<split>:<part>`` (their own fingerprint)."""
        arrays = {
            name: None if getattr(self, name) is None else getattr(self, name)[index]
            for name in QUERY_ARRAYS
        }
        return dataclasses.replace(
            self,
            split=f"{self.split}:{part}",
            fingerprint=stable_hash(self.fingerprint, part, arrays["query_ids"].tolist()),
            groups=None if self.groups is None else self.groups.subset(index),
            **arrays,
        )


def router_queries(query_ids: np.ndarray, fraction: float) -> np.ndarray:
    """(N,) bool: the ``round(fraction · N)`` train queries held out from the encoder, on which
    routers learn (the router-train split). Chosen by a hash of each id, so the choice does not
    depend on the order of the queries, and is the same for the encoder and the tables.

    Why: tables of the encoder's own training queries overstate every depth (at quick, +0.02
    NDCG@10 over BM25 on train against ≈0 on dev and test), so a router or a best-fixed depth
    chosen on them learns an overfit signal.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"router_fraction must be in (0, 1), got {fraction}")
    keys = np.array([stable_hash("router", str(qid)) for qid in query_ids])
    held = np.zeros(len(query_ids), dtype=bool)
    held[np.argsort(keys, kind="stable")[: round(fraction * len(query_ids))]] = True
    return held


def encoder_and_router_parts(
    inputs: SplitInputs, fraction: float
) -> tuple[SplitInputs, SplitInputs]:
    """(encoder-train, router-train) parts of the train split (see :func:`router_queries`)."""
    held = router_queries(inputs.query_ids, fraction)
    return (
        inputs.subset(np.flatnonzero(~held), "encoder"),
        inputs.subset(np.flatnonzero(held), "router"),
    )


def document_text(doc: dict[str, str]) -> str:
    """The text the base encoder reads for a BEIR corpus entry: title then body."""
    return f"{doc.get('title', '')} {doc.get('text', '')}".strip()


@functools.lru_cache(maxsize=8)
def sampled_split(dataset: str, split: str, data: DataSpec):
    """The split with the data spec's query sampling applied (a ``maw_gym.data.Split``; cached
    in memory: the corpus is loaded once per process)."""
    from maw_gym.data import load_split

    loaded = load_split(dataset, split)
    count = data.queries(split)
    if count is not None and count < len(loaded.queries):
        loaded = loaded.sample(count, seed=SAMPLE_SEED)
    return loaded


def inputs_key(dataset: str, split: str, spec: InputsSpec) -> str:
    """The cache key of a split's inputs: its sampled queries' fingerprint, the candidates and
    states specs and the base model's id (hashed from its files: no model is loaded)."""
    from maw_gym.base_encoder import base_model_id

    fingerprint = sampled_split(dataset, split, spec.data).fingerprint
    return stable_hash(
        fingerprint, spec_dict(spec.candidates), spec_dict(spec.states), base_model_id()
    )


def query_shards(count: int, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of ``size`` queries (the last one shorter) covering ``count``."""
    if size < 1:
        raise ValueError(f"shard size {size}: expected a positive number of queries")
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def split_inputs(
    dataset: str,
    split: str,
    spec: InputsSpec,
    rows: tuple[int, int] | None = None,
    device: str = "cpu",
) -> SplitInputs:
    """Load (or build and cache) the candidates, judgments and token states of one split, or of
    its queries ``rows`` = (start, stop) in sorted-id order.

    States are computed and cached per shard of :data:`SHARD_QUERIES` queries (a whole split is
    its shards, concatenated lazily): a pair's states depend, in the last float16 bit, on the
    pairs batched with it, so the encoder's training and every tables build, local or on Ray,
    must batch the same shards to see bit-identical states.
    """
    data = sampled_split(dataset, split, spec.data)
    query_ids = sorted(data.queries)
    if rows is not None:
        return _shard_inputs(data, query_ids[rows[0] : rows[1]], spec, device, rows)
    shards = [
        _shard_inputs(data, query_ids[start:stop], spec, device, (start, stop))
        for start, stop in query_shards(len(query_ids), SHARD_QUERIES)
    ]
    if len(shards) == 1:
        return shards[0]
    joined = {
        name: None
        if shards[0].dense_scores is None and name == "dense_scores"
        # States stay one memory map per shard's cache file.
        else ShardedRows([shard.states for shard in shards])
        if name == "states"
        else np.concatenate([getattr(shard, name) for shard in shards])
        for name in QUERY_ARRAYS
    }
    return dataclasses.replace(shards[0], **joined)


@functools.lru_cache(maxsize=2)
def _base_encoder(max_length: int, device: str, precision: str):
    """The base encoder, loaded once per process (a split, or a Ray worker, has many shards)."""
    from maw_gym.base_encoder import BaseEncoder

    return BaseEncoder(max_length=max_length, device=device, precision=precision)


def _shard_inputs(
    data, query_ids: list[str], spec: InputsSpec, device: str, rows: tuple[int, int]
) -> SplitInputs:
    """The inputs of ``query_ids`` (the split's sorted ids ``rows``) of the split ``data`` (a
    ``maw_gym.data.Split``)."""
    from maw_gym.retrieval import bm25_candidates

    c = spec.candidates.candidates
    candidates = bm25_candidates(data, c)
    n = len(query_ids)
    candidate_ids = np.full((n, c), "", dtype=object)
    mask = np.zeros((n, c), dtype=bool)
    bm25 = np.zeros((n, c), dtype=np.float32)
    relevance = np.zeros((n, c), dtype=np.float32)
    ideal = np.zeros((n, NDCG_CUTOFF), dtype=np.float32)
    pair_queries: list[str] = []
    pair_docs: list[str] = []
    for i, qid in enumerate(query_ids):
        judged = data.qrels.get(qid, {})
        grades = sorted((g for g in judged.values() if g > 0), reverse=True)[:NDCG_CUTOFF]
        ideal[i, : len(grades)] = grades
        for j, (doc_id, score) in enumerate(candidates.get(qid, [])[:c]):
            candidate_ids[i, j], mask[i, j], bm25[i, j] = doc_id, True, score
            relevance[i, j] = max(judged.get(doc_id, 0), 0)
        for j in range(c):
            # Padding pairs are encoded as the query against an empty document; masked later.
            doc = data.corpus.get(candidate_ids[i, j], {}) if mask[i, j] else {}
            pair_queries.append(data.queries[qid])
            pair_docs.append(document_text(doc))
    encoder = _base_encoder(spec.states.max_length, device, spec.states.states_precision)
    of = f"{data.dataset}/{data.name}"
    desc = f"pairs of {of} (queries {rows[0]}-{rows[1] - 1} of {len(data.queries)})"
    states, token_mask = encoder.encode_pairs(pair_queries, pair_docs, desc)
    length = states.shape[1]
    dense = None
    if spec.states.semantic:
        dense = _dense_scores(encoder, data, query_ids, candidate_ids.astype(str), mask, of)
    return SplitInputs(
        dataset=data.dataset,
        split=data.name,
        fingerprint=data.fingerprint,
        query_ids=np.array(query_ids, dtype=str),
        candidate_ids=candidate_ids.astype(str),
        candidate_mask=mask,
        bm25_scores=bm25,
        relevance=relevance,
        ideal_gains=ideal,
        states=np.asarray(states, dtype=np.float16).reshape(n, c, length, -1),
        token_mask=np.asarray(token_mask, dtype=bool).reshape(n, c, length),
        base_model_id=encoder.model_id,
        dense_scores=dense,
    )


def _dense_scores(
    encoder, data, query_ids: list[str], candidate_ids: np.ndarray, mask: np.ndarray, of: str
) -> np.ndarray:
    """(N, C) float32 cosine between each query's and each candidate's sentence embedding
    (``BaseEncoder.embed``; 0 where masked): the semantic first-stage score."""
    docs = sorted(set(candidate_ids[mask].tolist()))
    queries = encoder.embed([data.queries[qid] for qid in query_ids], f"queries of {of}")
    embedded = encoder.embed([document_text(data.corpus[d]) for d in docs], f"candidates of {of}")
    row = {doc: i for i, doc in enumerate(docs)}
    rows, cols = np.nonzero(mask)
    dense = np.zeros(mask.shape, dtype=np.float32)
    doc_rows = np.array([row[doc] for doc in candidate_ids[rows, cols]], dtype=np.int64)
    dense[rows, cols] = (queries[rows] * embedded[doc_rows]).sum(axis=1)
    return dense
