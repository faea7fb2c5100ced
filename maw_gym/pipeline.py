"""The reranker's inputs for one split: BM25 candidates, their judgments and base-encoder states.

Every stage below is cached by the module that computes it (BM25 candidates in
``maw_gym.retrieval``, token states in ``maw_gym.encoder.base``), so calling
:func:`split_inputs` twice is cheap. A preset's query counts are applied here, with a fixed
sampling seed, so that the encoder, the tables and the leaderboard all see the same queries.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from maw_gym.presets import Preset
from maw_gym.tables import NDCG_CUTOFF

#: Seed of the preset's query sampling (fixed: every stage must see the same queries).
SAMPLE_SEED = 0


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
    states: np.ndarray  # (N, C, L, hidden) float16 base-encoder last hidden states
    token_mask: np.ndarray  # (N, C, L) bool, True for real tokens
    base_model_id: str

    @property
    def num_queries(self) -> int:
        return int(self.query_ids.shape[0])

    def has_relevant(self) -> np.ndarray:
        """(N,) bool: queries with at least one relevant candidate (the only ones that teach)."""
        return (self.relevance * self.candidate_mask > 0).any(axis=1)


def preset_queries(preset: Preset, split: str) -> int | None:
    """How many queries of ``split`` the preset samples (None = all)."""
    counts = {"train": preset.train_queries, "dev": preset.dev_queries, "test": preset.test_queries}
    if split not in counts:
        raise ValueError(f"split must be one of {sorted(counts)}, got {split!r}")
    return counts[split]


def document_text(doc: dict[str, str]) -> str:
    """The text the base encoder reads for a BEIR corpus entry: title then body."""
    return f"{doc.get('title', '')} {doc.get('text', '')}".strip()


@functools.lru_cache(maxsize=8)
def preset_split(dataset: str, split: str, preset: Preset):
    """The split with the preset's query sampling applied (a ``maw_gym.data.Split``; cached in
    memory: the corpus is loaded once per process)."""
    from maw_gym.data import load_split

    data = load_split(dataset, split)
    count = preset_queries(preset, split)
    if count is not None and count < len(data.queries):
        data = data.sample(count, seed=SAMPLE_SEED)
    return data


def split_fingerprint(dataset: str, split: str, preset: Preset) -> tuple[str, str]:
    """(dataset name, fingerprint) of the preset's sample of ``split``, without encoding."""
    data = preset_split(dataset, split, preset)
    return data.dataset, data.fingerprint


def split_inputs(dataset: str, split: str, preset: Preset) -> SplitInputs:
    """Load (or build and cache) the candidates, judgments and token states of one split."""
    from maw_gym.encoder.base import BaseEncoder
    from maw_gym.retrieval import bm25_candidates

    data = preset_split(dataset, split, preset)
    candidates = bm25_candidates(data, preset.candidates)
    query_ids = sorted(data.queries)
    n, c = len(query_ids), preset.candidates
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
    encoder = BaseEncoder(max_length=preset.max_length)
    states, token_mask = encoder.encode_pairs(pair_queries, pair_docs)
    length = states.shape[1]
    return SplitInputs(
        dataset=data.dataset,
        split=split,
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
    )
