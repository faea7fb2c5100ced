"""Ranking metrics computed on candidate arrays in numpy: NDCG@10 (trec_eval's definition, as
beir's), the continuous alignment, and per-depth scores from the linear score decomposition.

They sit below every stage that ranks candidates (the reranker's early stopping, the tables,
the envs' rewards, the renderer), so each of those agrees with the others and with beir
(``tests/test_tables_build.py`` checks NDCG@10 against beir).
"""

from __future__ import annotations

import numpy as np

NDCG_CUTOFF = 10


def rank_candidates(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Candidate positions by descending ``scores`` (..., C), padding (``~mask``) last.

    Ties keep candidate position (BM25 order), as a stable sort does: the one ranking that
    NDCG and the rendered top-10 share.
    """
    return np.argsort(-np.where(mask, scores, -np.inf), axis=-1, kind="stable")


def ndcg_at_10(
    scores: np.ndarray, relevance: np.ndarray, ideal_gains: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """NDCG@10 of each row's candidates ranked by ``scores``.

    ``relevance``/``mask``: (N, C) and ``ideal_gains``: (N, 10) for N queries; ``scores``:
    (N, C), or (N, ..., C) with extra middle axes (depths, say), which broadcast: one NDCG per
    score row, (N, ...). Ties are broken by candidate position (BM25 order), as a stable sort
    does. Queries with no relevant document score 0. Uses linear gains ``rel`` and
    ``log2(rank + 1)`` discounts, as trec_eval (and so beir) does.
    """
    extra = scores.ndim - relevance.ndim
    if extra > 0:  # (N, C) -> (N, 1, ..., 1, C): the judgments are the same for every row
        axes = tuple(range(1, 1 + extra))
        relevance, mask = np.expand_dims(relevance, axes), np.expand_dims(mask, axes)
        ideal_gains = np.expand_dims(ideal_gains, axes)
    order = rank_candidates(scores, mask)[..., :NDCG_CUTOFF]
    ranked_rel = np.take_along_axis(np.where(mask, relevance, 0.0), order, axis=-1)
    k = ranked_rel.shape[-1]
    discounts = 1.0 / np.log2(np.arange(2, NDCG_CUTOFF + 2))
    dcg = (ranked_rel * discounts[:k]).sum(-1)
    idcg = (ideal_gains * discounts).sum(-1)
    return np.where(idcg > 0, dcg / np.maximum(idcg, 1e-12), 0.0).astype(np.float32)


def depth_scores(score_base: np.ndarray, score_parts: np.ndarray) -> np.ndarray:
    """(N, D, C) candidate scores of every hard depth: ``base + Σ_h parts[:, d, h]``.

    ``score_base`` (N, C), ``score_parts`` (N, D, H, C); exact because the reranker's score is
    linear in the attention output (module docstring).
    """
    return score_base[:, None, :] + score_parts.sum(axis=2)


def relevant_mass(
    scores: np.ndarray, relevance: np.ndarray, mask: np.ndarray, temperature: float = 1.0
) -> np.ndarray:
    """Continuous alignment: the probability mass ``softmax(scores / T)`` over a row's real
    candidates puts on relevant ones, each weighted by ``grade / max grade``; in [0, 1], 0 for
    a row with no relevant candidate. Extra middle axes of ``scores`` broadcast as in
    :func:`ndcg_at_10`.

    Why: NDCG@10 over a handful of relevant verses is a step function of the ranking, so most
    queries tie across depths (all-depth ties on 58% of quick test queries). This mass moves
    with every score and is ``exp(-ListNet loss)`` for one relevant candidate, the quantity the
    encoder was trained on (its scores are logits of this softmax at T = 1).
    """
    extra = scores.ndim - relevance.ndim
    if extra > 0:  # (N, C) -> (N, 1, ..., 1, C), as in ndcg_at_10
        axes = tuple(range(1, 1 + extra))
        relevance, mask = np.expand_dims(relevance, axes), np.expand_dims(mask, axes)
    logits = np.where(mask, scores / temperature, -np.inf)
    logits = logits - logits.max(-1, keepdims=True)
    weights = np.where(mask, np.exp(logits), 0.0)
    grades = np.where(mask, relevance, 0.0)
    top = grades.max(-1, keepdims=True)
    gain = np.where(top > 0, grades / np.maximum(top, 1e-12), 0.0)
    return ((weights * gain).sum(-1) / weights.sum(-1)).astype(np.float32)
