"""The Tables contract: NDCG@10 by hand, the linear score decomposition, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from maw_gym.metrics import ndcg_at_10, relevant_mass
from maw_gym.tables import TABLES_MANIFEST, Tables


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


def test_save_load_round_trip_is_memory_mapped(tmp_path) -> None:
    tables = Tables.synthetic(layers=True)
    path = tmp_path / "t.tables"
    tables.save(path)
    loaded = Tables.load(path)
    for name, array in tables.arrays().items():
        np.testing.assert_array_equal(getattr(loaded, name), array)
        assert isinstance(getattr(loaded, name), np.memmap), name
    assert not loaded.observation.flags.writeable
    np.testing.assert_array_equal(loaded.alignment, tables.alignment)
    assert loaded.meta == tables.meta
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [TABLES_MANIFEST, *(f"{name}.npy" for name in tables.arrays())]
    )


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_damaged_field_is_a_clear_error(tmp_path, damage) -> None:
    path = tmp_path / "t.tables"
    Tables.synthetic().save(path)
    field = path / "score_parts.npy"
    data = field.read_bytes()
    if damage == "truncate":
        field.write_bytes(data[:-4])
    elif damage == "flip":  # same size, one byte of the data changed
        field.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    elif damage == "delete":
        field.unlink()
    else:
        (path / TABLES_MANIFEST).write_text("{")
    with pytest.raises(ValueError, match=r"t\.tables: not readable tables .* delete it to rebuild"):
        Tables.load(path)
    if damage == "flip":  # only the content hash sees a flipped byte
        assert Tables.load(path, verify=False).score_parts.shape == (32, 4, 2, 8)


def test_save_replaces_tables_but_refuses_a_foreign_directory(tmp_path) -> None:
    path = tmp_path / "t.tables"
    Tables.synthetic(seed=0).save(path)
    Tables.synthetic(seed=1).save(path)
    assert Tables.load(path).meta["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["t.tables"]  # no temporary left behind
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a tables directory"):
        Tables.synthetic().save(foreign)
    assert (foreign / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "t.tables"]


def test_shape_and_range_errors_name_the_field() -> None:
    tables = Tables.synthetic(num_queries=4)
    with pytest.raises(ValueError, match=r"Tables\.entropy"):
        Tables(**{**_arrays(tables), "entropy": tables.entropy + 2.0})
    with pytest.raises(ValueError, match=r"Tables\.focus has shape"):
        Tables(**{**_arrays(tables), "focus": tables.focus[:, :1]})


def _arrays(tables: Tables) -> dict:
    names = [n for n in Tables.__dataclass_fields__ if n != "alignment"]
    return {n: getattr(tables, n) for n in names}


def test_ndcg_broadcasts_middle_axes_over_one_query_judgments() -> None:
    """(N, D, C) scores: the depth axis shares each query's judgments, one NDCG per depth."""
    tables = Tables.synthetic(num_queries=6, depth=3, seed=1)
    scores = tables.depth_scores()  # (N, D, C)
    rel, ideal, mask = tables.relevance, tables.ideal_gains, tables.candidate_mask
    per_depth = np.stack([ndcg_at_10(scores[:, d], rel, ideal, mask) for d in range(3)], axis=1)
    np.testing.assert_array_equal(ndcg_at_10(scores, rel, ideal, mask), per_depth)
    np.testing.assert_array_equal(
        tables.ndcg(scores[[4, 1]], index=np.array([4, 1])), per_depth[[4, 1]]
    )
    assert per_depth.std() > 0  # depths rank differently, so a mixed-up axis would show


def test_relevant_mass_by_hand_graded_and_without_relevant() -> None:
    scores = np.array([[0.0, np.log(3.0), 5.0], [1.0, 2.0, 3.0]])
    relevance = np.array([[2.0, 1.0, 9.0], [0.0, 0.0, 0.0]])
    mask = np.array([[True, True, False], [True, True, True]])
    # Row 0: p = (1/4, 3/4) over the real candidates, gains (2/2, 1/2): 1/4 + 3/8.
    np.testing.assert_allclose(relevant_mass(scores, relevance, mask), [0.625, 0.0], atol=1e-6)
