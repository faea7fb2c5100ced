"""The Tables contract: NDCG@10 by hand, the linear score decomposition, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from maw_gym.tables import Tables, ndcg_at_10


def test_ndcg_at_10_hand_computed_with_graded_judgments() -> None:
    # ranking by score: c2 (grade 2), c0 (0), c1 (1); a grade-1 document lies outside the list
    scores = np.array([0.5, 0.1, 0.9])
    relevance = np.array([0.0, 1.0, 2.0])
    ideal = np.array([2.0, 1.0, 1.0] + [0.0] * 7)
    mask = np.ones(3, dtype=bool)
    dcg = 2 / np.log2(2) + 0 / np.log2(3) + 1 / np.log2(4)
    idcg = 2 / np.log2(2) + 1 / np.log2(3) + 1 / np.log2(4)
    assert ndcg_at_10(scores, relevance, ideal, mask) == pytest.approx(dcg / idcg, rel=1e-6)


def test_masked_candidates_never_rank_and_no_relevant_scores_zero() -> None:
    scores = np.array([[0.0, 9.0], [1.0, 0.0]])
    relevance = np.array([[1.0, 1.0], [0.0, 0.0]])
    ideal = np.zeros((2, 10))
    ideal[0, 0] = 1.0
    mask = np.array([[True, False], [True, True]])
    assert ndcg_at_10(scores, relevance, ideal, mask).tolist() == [1.0, 0.0]


def test_depth_scores_and_alignment_follow_the_linear_decomposition() -> None:
    tables = Tables.synthetic(num_queries=6, depth=3, heads=2, candidates=5, best_depth=2)
    expected = tables.score_base[:, None, :] + tables.score_parts.sum(axis=2)
    np.testing.assert_allclose(tables.depth_scores(), expected)
    assert tables.alignment.shape == (6, 3)
    assert tables.alignment[:, 2].mean() > tables.alignment[:, :2].mean()


def test_save_load_round_trip_and_corrupt_file(tmp_path) -> None:
    tables = Tables.synthetic(layers=True)
    path = tmp_path / "t.npz"
    tables.save(path)
    loaded = Tables.load(path)
    np.testing.assert_array_equal(loaded.layer2_scores, tables.layer2_scores)
    np.testing.assert_array_equal(loaded.alignment, tables.alignment)
    assert loaded.meta == tables.meta
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="delete it to rebuild"):
        Tables.load(path)


def test_shape_and_range_errors_name_the_field() -> None:
    tables = Tables.synthetic(num_queries=4)
    with pytest.raises(ValueError, match=r"Tables\.entropy"):
        Tables(**{**_arrays(tables), "entropy": tables.entropy + 2.0})
    with pytest.raises(ValueError, match=r"Tables\.focus has shape"):
        Tables(**{**_arrays(tables), "focus": tables.focus[:, :1]})


def _arrays(tables: Tables) -> dict:
    names = [n for n in Tables.__dataclass_fields__ if n != "alignment"]
    return {n: getattr(tables, n) for n in names}
