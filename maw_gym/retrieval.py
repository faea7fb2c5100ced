"""First stage (BM25 with ``bm25s``) and retrieval metrics (through beir's ``EvaluateRetrieval``).

BM25 indexes each document as ``title + " " + text`` (BEIR's convention) with bm25s's English
stop words and, by default, no stemmer: that is the configuration behind the reference figures
in the nave-kjv README (stemming with ``stemmer="english"`` scores higher on nave-kjv, see
``maw-gym retrieve --help``). The index is cached per corpus and the candidates per
(split, k), so a second call reads a JSON file and does no BM25 work.

Metrics keep beir's definitions (pytrec_eval for NDCG/Recall, beir's own MRR and top-k accuracy)
with two fixes at the boundary: beir receives a copy (it deletes entries from ``results``), and
every judged query counts, a query with no results scoring 0, where beir would average NDCG
over the queries that have results but MRR over all judged ones.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from maw_gym.cache import (
    CORRUPT_ERRORS,
    atomic_path,
    cache_dir,
    load_or_build,
    locked,
    read_json,
    remove_cache_entry,
    rename_into_place,
    stable_hash,
    write_json,
)
from maw_gym.data import Split
from maw_gym.progress import announce

logger = logging.getLogger(__name__)

HEADLINE_METRICS = ("NDCG@10", "MRR@10", "Hit@1", "Recall@100")
STOPWORDS = "en"


def bm25_candidates(
    split: Split, k: int, *, stemmer: str | None = None
) -> dict[str, list[tuple[str, float]]]:
    """Top-``k`` documents per query of ``split`` by BM25, as ``(doc_id, score)``, best first.

    Every query gets ``min(k, len(corpus))`` candidates (zero-score ones included, in bm25s's
    order). ``stemmer`` is a PyStemmer language (e.g. ``"english"``) or None.
    """
    import Stemmer

    if k < 1:
        raise ValueError(f"k={k}: expected a positive number of candidates")
    if stemmer is not None and stemmer not in Stemmer.algorithms():
        raise ValueError(f"stemmer {stemmer!r}: expected one of {', '.join(Stemmer.algorithms())}")
    index_key = stable_hash("bm25s", split.corpus_key(), STOPWORDS, stemmer)
    results_path = (
        cache_dir("bm25") / f"candidates-{stable_hash(index_key, split.fingerprint, k)}.json"
    )
    query_ids = list(split.queries)

    def build(tmp: Path) -> None:
        retriever, doc_ids = _load_or_build_index(split.corpus, index_key, stemmer)
        work = f"ranking {len(query_ids):,} queries of {split.dataset}/{split.name}, top {k}"
        announce(logger, "bm25", work, results_path)
        query_tokens = _tokenize([split.queries[qid] for qid in query_ids], stemmer)
        doc_indices, scores = retriever.retrieve(
            query_tokens, k=min(k, len(doc_ids)), show_progress=True
        )
        ranked = {
            qid: [
                [doc_ids[index], float(score)] for index, score in zip(row, row_scores, strict=True)
            ]
            for qid, row, row_scores in zip(query_ids, doc_indices, scores, strict=True)
        }
        tmp.write_text(json.dumps(ranked))

    return load_or_build(results_path, build, lambda path: _read_candidates(path, query_ids))


def _read_candidates(path: Path, query_ids: list[str]) -> dict[str, list[tuple[str, float]]]:
    """A candidates file, verified: every query of the split, each a list of (doc id, score)."""
    cached = read_json(path)
    if not isinstance(cached, dict) or set(cached) != set(query_ids):
        raise ValueError(f"{path}: does not hold this split's {len(query_ids)} queries")
    return {
        qid: [(str(doc_id), float(score)) for doc_id, score in cached[qid]] for qid in query_ids
    }


def candidates_to_results(
    candidates: dict[str, list[tuple[str, float]]],
) -> dict[str, dict[str, float]]:
    """BEIR's ``results`` dict (query id -> doc id -> score) from ranked candidate lists."""
    return {qid: dict(ranked) for qid, ranked in candidates.items()}


def _tokenize(
    texts: list[str], stemmer: str | None, show_progress: bool = False
) -> list[list[str]]:
    import bm25s
    import Stemmer

    return bm25s.tokenize(
        texts,
        stopwords=STOPWORDS,
        stemmer=Stemmer.Stemmer(stemmer) if stemmer else None,
        return_ids=False,
        show_progress=show_progress,
    )


def _load_or_build_index(corpus: dict[str, dict[str, str]], index_key: str, stemmer: str | None):
    """The bm25s retriever and its doc ids (row order), from the cache or built and cached; an
    index folder that does not load (truncated, partial) is rebuilt."""
    import bm25s

    index_dir = cache_dir("bm25") / f"index-{index_key}"
    with locked(index_dir):
        if index_dir.is_dir():
            try:
                doc_ids = read_json(index_dir / "doc_ids.json")
                return bm25s.BM25.load(str(index_dir)), doc_ids
            except CORRUPT_ERRORS as error:
                logger.warning("rebuilding %s: %s", index_dir, error)
                remove_cache_entry(index_dir)
        doc_ids = list(corpus)
        announce(logger, "bm25", f"indexing {len(doc_ids):,} documents", index_dir)
        texts = [f"{corpus[d].get('title') or ''} {corpus[d]['text']}" for d in doc_ids]
        retriever = bm25s.BM25()
        retriever.index(_tokenize(texts, stemmer, show_progress=True), show_progress=True)
        with atomic_path(index_dir, folder=True, place=rename_into_place) as tmp:
            retriever.save(str(tmp))
            write_json(tmp / "doc_ids.json", doc_ids)
        return retriever, doc_ids


def _judged_results(
    qrels: dict[str, dict[str, int]],
    results: dict[str, dict[str, float]],
    ignore_identical_ids: bool,
) -> dict[str, dict[str, float]]:
    """A fresh copy of ``results`` restricted to judged queries, with an empty ranking for each
    judged query that has none (so it scores 0), and a query's own id dropped from its ranking
    when ``ignore_identical_ids`` (beir's default, for corpora that contain their queries)."""
    return {
        qid: {
            doc_id: float(score)
            for doc_id, score in results.get(qid, {}).items()
            if not (ignore_identical_ids and doc_id == qid)
        }
        for qid in qrels
    }


def evaluate(
    qrels: dict[str, dict[str, int]],
    results: dict[str, dict[str, float]],
    k_values: tuple[int, ...] = (1, 10, 100),
    *,
    ignore_identical_ids: bool = True,
) -> dict[str, float]:
    """NDCG@k, Recall@k, MRR@k and Hit@k (beir's Accuracy@k) for each k in ``k_values``.

    1 and 10 are always included, so ``NDCG@10``, ``MRR@10`` and ``Hit@1`` are always there.
    Averages run over every query in ``qrels`` (one with no judgment counts as 0, as in
    ``maw_gym.metrics.ndcg_at_10``); ``results`` is not modified.
    """
    from beir.retrieval.evaluation import EvaluateRetrieval

    if not qrels:
        raise ValueError("qrels is empty: no judged query to evaluate")
    ks = sorted({1, 10, *k_values})
    if ks[0] < 1:
        raise ValueError(f"k_values={k_values}: expected positive cut-offs")
    judged = _judged_results(qrels, results, ignore_identical_ids)
    ndcg, _, recall, _ = EvaluateRetrieval.evaluate(qrels, judged, ks, ignore_identical_ids=False)
    mrr = EvaluateRetrieval.evaluate_custom(qrels, judged, ks, metric="mrr")
    accuracy = EvaluateRetrieval.evaluate_custom(qrels, judged, ks, metric="top_k_accuracy")
    # pytrec_eval skips a query whose qrels are empty (MRR and Hit@k count it, as 0): count it
    # as 0 for NDCG and recall too, as every other NDCG here does (maw_gym.metrics).
    share = sum(1 for docs in qrels.values() if docs) / len(qrels)
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"NDCG@{k}"] = float(ndcg[f"NDCG@{k}"]) * share
        metrics[f"MRR@{k}"] = float(mrr[f"MRR@{k}"])
        metrics[f"Hit@{k}"] = float(accuracy[f"Accuracy@{k}"])
        metrics[f"Recall@{k}"] = float(recall[f"Recall@{k}"]) * share
    return metrics


def per_query_ndcg10(
    qrels: dict[str, dict[str, int]],
    results: dict[str, dict[str, float]],
    *,
    ignore_identical_ids: bool = True,
) -> dict[str, float]:
    """NDCG@10 of every query in ``qrels`` (0 without results), for paired bootstraps.

    Same trec_eval definition as :func:`evaluate` (pytrec_eval), unrounded: the mean of these
    values is ``evaluate(...)["NDCG@10"]`` up to beir's rounding to 5 decimals.
    """
    import pytrec_eval

    judged = _judged_results(qrels, results, ignore_identical_ids)
    scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(judged)
    return {qid: float(scores.get(qid, {}).get("ndcg_cut_10", 0.0)) for qid in qrels}


def routed_results(
    query_ids: np.ndarray, candidate_ids: np.ndarray, mask: np.ndarray, scores: np.ndarray
) -> dict[str, dict[str, float]]:
    """BEIR ``results`` of N queries from their candidates' scores ``(N, C)`` under a router's
    choices (padding, where ``mask`` is False, dropped); ``Tables.results`` calls it."""
    if scores.shape != mask.shape:
        raise ValueError(f"scores: expected shape {mask.shape} (N, C), got {scores.shape}")
    return {
        str(qid): {
            str(doc): float(score)
            for doc, score, real in zip(docs, row, real_row, strict=True)
            if real
        }
        for qid, docs, row, real_row in zip(query_ids, candidate_ids, scores, mask, strict=True)
    }
