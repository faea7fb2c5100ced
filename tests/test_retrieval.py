"""BM25 candidates, their cache, BEIR metrics on a hand-computed ranking, and `maw-gym retrieve`."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import bm25s
import pytest

from maw_gym.data import load_split, write_beir_folder
from maw_gym.retrieval import bm25_candidates, candidates_to_results, evaluate, per_query_ndcg10
from maw_gym_leaderboard.cli import main

ANIMALS = {
    "camel": {"title": "Camel", "text": "The camel walks through the desert sand."},
    "whale": {"title": "Whale", "text": "The whale swims in the deep sea."},
    "eagle": {"title": "Eagle", "text": "The eagle flies over the mountains."},
    "lion": {"title": "Lion", "text": "The lion sleeps in the grass."},
}
ANIMAL_QUERIES = {"q-desert": "desert sand", "q-sea": "deep sea", "q-plural": "camels"}
ANIMAL_QRELS = {"test": {"q-desert": {"camel": 1}, "q-sea": {"whale": 1}, "q-plural": {"camel": 1}}}


@pytest.fixture
def animals(tmp_path: Path) -> Path:
    return write_beir_folder(tmp_path / "animals", ANIMALS, ANIMAL_QUERIES, ANIMAL_QRELS)


# Toy ranking. q1: relevant d1, d3 ranked 2nd and 3rd; q2: its one relevant doc first;
# q3: judged but no results (scores 0); q4: results but no judgments (ignored).
QRELS = {"q1": {"d1": 1, "d3": 1}, "q2": {"d2": 1}, "q3": {"d4": 1}}
RESULTS = {
    "q1": {"q1": 5.0, "d2": 0.9, "d1": 0.8, "d3": 0.1},  # its own id: dropped by default
    "q2": {"d2": 0.5, "d1": 0.4},
    "q4": {"d1": 1.0},
}
# DCG(q1) = 1/log2(3) + 1/log2(4); IDCG(q1) = 1 + 1/log2(3).
NDCG_Q1 = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))


def test_metrics_match_a_hand_computed_ranking() -> None:
    results = copy.deepcopy(RESULTS)
    metrics = evaluate(QRELS, results, k_values=(1, 2, 10, 100))
    assert results == RESULTS  # beir deletes entries: it must get a copy
    expected = {
        "NDCG@10": (NDCG_Q1 + 1 + 0) / 3,
        "MRR@10": (1 / 2 + 1 + 0) / 3,
        "Hit@1": (0 + 1 + 0) / 3,
        "Recall@1": (0 + 1 + 0) / 3,
        "Recall@2": (1 / 2 + 1 + 0) / 3,
        "Recall@100": (1 + 1 + 0) / 3,
        "MRR@1": 1 / 3,
        "Hit@2": 2 / 3,
    }
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-5), name
    assert all(type(value) is float for value in metrics.values())

    kept = evaluate(QRELS, RESULTS, ignore_identical_ids=False)
    assert kept["MRR@10"] == pytest.approx((1 / 3 + 1 + 0) / 3, abs=1e-5)


def test_per_query_ndcg10_covers_every_judged_query() -> None:
    per_query = per_query_ndcg10(QRELS, RESULTS)
    assert per_query == pytest.approx({"q1": NDCG_Q1, "q2": 1.0, "q3": 0.0})
    mean = sum(per_query.values()) / len(per_query)
    assert mean == pytest.approx(evaluate(QRELS, RESULTS)["NDCG@10"], abs=1e-5)


def test_bm25_returns_the_whole_corpus_when_k_is_larger(animals: Path) -> None:
    split = load_split(animals, "test")
    candidates = bm25_candidates(split, k=10)
    assert set(candidates) == {"q-desert", "q-sea", "q-plural"}
    for ranked in candidates.values():
        assert sorted(doc_id for doc_id, _ in ranked) == sorted(split.corpus)
        scores = [score for _, score in ranked]
        assert scores == sorted(scores, reverse=True)
    assert candidates["q-desert"][0][0] == "camel" and candidates["q-desert"][0][1] > 0
    assert candidates["q-sea"][0][0] == "whale"
    assert candidates["q-plural"][0][1] == 0  # "camels" is not "camel" without a stemmer
    assert len(bm25_candidates(split, k=2)["q-sea"]) == 2


def test_stemmer_matches_inflected_forms(animals: Path) -> None:
    split = load_split(animals, "test")
    top_doc, top_score = bm25_candidates(split, k=1, stemmer="english")["q-plural"][0]
    assert top_doc == "camel" and top_score > 0


def test_second_call_reads_the_cache(animals: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split = load_split(animals, "test")
    first = bm25_candidates(split, k=3)

    def no_bm25_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("BM25 ran again")

    monkeypatch.setattr(bm25s.BM25, "index", no_bm25_work)
    monkeypatch.setattr(bm25s.BM25, "retrieve", no_bm25_work)
    assert bm25_candidates(split, k=3) == first
    monkeypatch.undo()
    monkeypatch.setattr(bm25s.BM25, "index", no_bm25_work)
    # A new k retrieves again but reuses the index saved on disk.
    assert bm25_candidates(split, k=2)["q-sea"] == first["q-sea"][:2]


def test_retrieve_command_prints_json_metrics(animals: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["retrieve", "--dataset", str(animals), "--split", "test", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert list(metrics) == ["NDCG@10", "MRR@10", "Hit@1", "Recall@100"]
    # q-desert and q-sea find their animal first; q-plural's ties at zero put it anywhere.
    assert 2 / 3 <= metrics["Hit@1"] <= 1
    assert metrics["Recall@100"] == 1.0  # k=100 > corpus: everything is a candidate

    assert main(["retrieve", "--dataset", str(animals), "--k", "2"]) == 0
    table = capsys.readouterr().out
    assert "3 queries, 4 documents, top 2" in table and "Recall@2" in table

    assert main(["retrieve", "--dataset", str(animals), "--split", "train"]) == 2
    assert "no split 'train'" in capsys.readouterr().err


def test_nave_kjv_bm25_reproduces_the_readme_figures() -> None:
    split = load_split("nave-kjv", "test")
    metrics = evaluate(split.qrels, candidates_to_results(bm25_candidates(split, k=100)))
    reference = {"NDCG@10": 0.228, "MRR@10": 0.355, "Hit@1": 0.268, "Recall@100": 0.372}
    for name, value in reference.items():
        assert metrics[name] == pytest.approx(value, abs=0.005), name


def test_bad_k_and_stemmer_are_rejected(animals: Path) -> None:
    split = load_split(animals, "test")
    with pytest.raises(ValueError, match="k=0"):
        bm25_candidates(split, k=0)
    with pytest.raises(ValueError, match=r"stemmer 'klingon': expected one of .*english"):
        bm25_candidates(split, k=1, stemmer="klingon")


def test_a_query_without_relevant_judgments_counts_as_zero_in_every_metric() -> None:
    """pytrec_eval skips a query whose qrels are empty, for NDCG and recall only (beir's MRR
    and Hit count it): the tables' NDCG@10 counts it as 0, so ``evaluate`` must too."""

    qrels = {"a": {"d1": 1}, "b": {}, "c": {"d2": 0}}
    results = {"a": {"d1": 1.0, "d3": 0.5}, "b": {"d1": 1.0}, "c": {"d2": 1.0}}
    metrics = evaluate(qrels, results)
    assert metrics["NDCG@10"] == pytest.approx(1 / 3)
    assert metrics["Recall@10"] == pytest.approx(1 / 3)
    assert metrics["MRR@10"] == pytest.approx(1 / 3, abs=1e-5)
    assert per_query_ndcg10(qrels, results) == {"a": 1.0, "b": 0.0, "c": 0.0}
