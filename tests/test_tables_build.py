"""Tables built from the real smoke pipeline (nave-kjv): caching, rebuilds, exactness.

The first test to run builds the smoke encoder and tables into the tests' shared cache
(``.maw_cache``, see conftest.py); the rest reuse them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maw_gym import build as tables_module
from maw_gym.build import (
    ensure_tables,
    get_tables,
    resolve_encoder,
    tables_path,
)
from maw_gym.encoder.reranker import QueryBatch, score_split
from maw_gym.encoder.train import TrainedEncoder
from maw_gym.pipeline import sampled_split, split_inputs
from maw_gym.presets import get_preset
from maw_gym.retrieval import evaluate
from maw_gym_leaderboard.study.report import depth_js_divergence, depth_spearman, encoder_report

PRESET = get_preset("smoke")


@pytest.fixture(scope="module")
def encoder_dir():
    return resolve_encoder("nave-kjv", PRESET)


@pytest.fixture(scope="module")
def dev_tables(encoder_dir):
    return ensure_tables("nave-kjv", "dev", PRESET, encoder_dir)


def test_shapes_and_layer2_fields(dev_tables) -> None:
    spec = PRESET.encoder
    n, c, d, h, p = 24, PRESET.candidates.candidates, spec.depth, spec.heads, spec.pool
    assert dev_tables.num_queries == n
    assert dev_tables.observation.shape == (n, d, h, p, p)
    assert dev_tables.score_parts.shape == (n, d, h, c)
    assert dev_tables.joint_router_logits.shape == (n, d)
    assert dev_tables.layer2_observation.shape == (n, d, d, h, p, p)
    assert dev_tables.layer2_scores.shape == (n, d, d, c)
    assert dev_tables.meta["encoder_hash"] and dev_tables.meta["key"]


def test_get_tables_never_trains_an_encoder(encoder_dir, dev_tables, monkeypatch) -> None:
    """Only ensure_tables may train the encoder on the way to tables (issue 13)."""

    def refuse(*args, **kwargs):
        raise AssertionError("get_tables trained an encoder")

    monkeypatch.setattr("maw_gym.build.train_encoder", refuse)
    again = get_tables("nave-kjv", "dev", PRESET.inputs, encoder_dir)
    np.testing.assert_array_equal(again.score_parts, dev_tables.score_parts)
    with pytest.raises(AssertionError, match="trained an encoder"):
        resolve_encoder("nave-kjv", PRESET.with_overrides(epochs=1))  # not cached: it trains


def test_second_call_loads_without_building(encoder_dir, dev_tables, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("tables or encoder rebuilt although cached")

    monkeypatch.setattr(tables_module, "build_tables", refuse)
    monkeypatch.setattr("maw_gym.encoder.train.train_reranker", refuse)
    again = ensure_tables("nave-kjv", "dev", "smoke")
    np.testing.assert_array_equal(again.score_parts, dev_tables.score_parts)
    assert again.meta["key"] == dev_tables.meta["key"]


def test_corrupt_or_stale_file_is_rebuilt(encoder_dir, dev_tables) -> None:
    path, key = tables_path("nave-kjv", "dev", PRESET.inputs, encoder_dir)
    # Truncated, through a new file: the fixture maps the old one, and truncating a mapped file
    # in place kills its readers (SIGBUS), which is why Tables.save only ever renames.
    field, damaged = path / "score_parts.npy", path / "score_parts.tmp"
    damaged.write_bytes(field.read_bytes()[:200])
    damaged.replace(field)
    rebuilt = ensure_tables("nave-kjv", "dev", PRESET, encoder_dir)
    np.testing.assert_allclose(rebuilt.score_parts, dev_tables.score_parts, atol=1e-6)
    stale = rebuilt.subset(np.arange(rebuilt.num_queries))
    stale.meta["key"] = "not-" + key
    stale.save(path)
    assert ensure_tables("nave-kjv", "dev", PRESET, encoder_dir).meta["key"] == key


def test_checkpoint_reload_gives_table_scores(encoder_dir, dev_tables) -> None:
    encoder = TrainedEncoder.load(encoder_dir)
    inputs = split_inputs("nave-kjv", "dev", PRESET.inputs)
    scored = score_split(encoder.models["maw"], inputs)
    np.testing.assert_allclose(scored.score_parts, dev_tables.score_parts, atol=1e-5)
    # The model's own forward pass for a hard depth equals the tables' decomposition.
    model = encoder.models["maw"]
    batch = QueryBatch.from_inputs(inputs, np.arange(3))
    with torch.no_grad():
        for depth in range(PRESET.encoder.depth):
            direct = model(
                batch.x,
                batch.mask,
                batch.first_stage.flatten(0, 1),
                depth_index=torch.full((batch.x.shape[0],), depth),
            )
            expected = dev_tables.depth_scores()[:3, depth].reshape(-1)
            np.testing.assert_allclose(direct.numpy(), expected, atol=1e-4)


def test_ndcg_matches_beir_and_routed_results(dev_tables) -> None:
    # trec_eval breaks score ties by doc id, ndcg_at_10 by position: break BM25's ties first.
    scores = dev_tables.bm25_scores - 1e-3 * np.arange(PRESET.candidates.candidates)
    per_query = dev_tables.ndcg(scores)
    data = split_inputs("nave-kjv", "dev", PRESET.inputs)
    qrels = sampled_split("nave-kjv", "dev", PRESET.data).qrels
    results = dev_tables.results(scores)
    assert set(results) == set(data.query_ids)
    assert all(len(docs) == PRESET.candidates.candidates for docs in results.values())
    assert evaluate(qrels, results)["NDCG@10"] == pytest.approx(per_query.mean(), abs=1e-4)
    with pytest.raises(ValueError, match="expected shape"):
        dev_tables.results(scores[:, :2])


def test_diversity_measures_by_hand() -> None:
    scores = np.array([[[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]])  # (1, D=3, C=3)
    # Pairs: (0,1) -> -1, (0,2) -> 1, (1,2) -> -1.
    assert depth_spearman(scores, np.ones((1, 3), dtype=bool)) == pytest.approx(-1 / 3)
    same = np.full((2, 3, 1, 2, 2), 0.25)
    assert depth_js_divergence(same) == pytest.approx(0.0)
    apart = np.zeros((1, 2, 1, 1, 2))
    apart[0, 0, 0, 0, 0] = apart[0, 1, 0, 0, 1] = 1.0  # disjoint supports: JS = log 2
    assert depth_js_divergence(apart) == pytest.approx(np.log(2))


def test_encoder_report_on_smoke(encoder_dir, tmp_path) -> None:
    """The report's per-depth and oracle NDCG@10 recomputed through trec_eval (pytrec_eval on
    the routed rerank), not through the tables' own NDCG; the best depth is dev's."""
    from matplotlib.image import imread

    from maw_gym.retrieval import per_query_ndcg10

    report = encoder_report("nave-kjv", PRESET, encoder_dir, out=tmp_path)
    for split in ("dev", "test"):
        r = report[split]
        tables = ensure_tables("nave-kjv", split, PRESET, encoder_dir)
        qrels = sampled_split("nave-kjv", split, PRESET.data).qrels
        scores = tables.depth_scores()  # (N, D, C)
        per_depth = np.array(
            [
                [
                    per_query_ndcg10(qrels, tables.results(scores[:, d]))[str(q)]
                    for q in tables.query_ids
                ]
                for d in range(PRESET.encoder.depth)
            ]
        ).T  # (N, D)
        np.testing.assert_allclose(r["depths"], per_depth.mean(axis=0), atol=1e-5)
        assert r["oracle"] == pytest.approx(per_depth.max(axis=1).mean(), abs=1e-5)
        assert len(r["nonmaw_seeds"]) == PRESET.controls.seed_controls
        assert r["probe_minus_best_fixed"]["low"] <= r["probe_minus_best_fixed"]["high"]
    assert report["test"]["best_fixed_depth"] == int(np.argmax(report["dev"]["depths"]))
    for name in ("depth_ndcg_test.png", "depth_slices_test.png"):
        image = imread(tmp_path / name)  # a decodable PNG with something drawn on it
        assert image.ndim == 3 and min(image.shape[:2]) > 100, name
        assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10, name


def test_layer2_scores_and_router_logits_match_the_models(encoder_dir, dev_tables) -> None:
    encoder = TrainedEncoder.load(encoder_dir)
    inputs = split_inputs("nave-kjv", "dev", PRESET.inputs)
    batch = QueryBatch.from_inputs(inputs, np.arange(2))
    pairs = batch.x.shape[0]
    with torch.no_grad():
        for lower, depth in [(0, 0), (1, 3), (3, 2)]:
            direct = encoder.models["stack"](
                batch.x,
                batch.mask,
                batch.first_stage.flatten(0, 1),
                depth_index=torch.full((pairs,), depth),
                lower_depths=torch.full((pairs, 1), lower),
            )
            expected = dev_tables.layer2_scores[:2, lower, depth].reshape(-1)
            np.testing.assert_allclose(direct.numpy(), expected, atol=1e-4)
        logits = encoder.models["maw"].router(torch.tensor(dev_tables.observation))
    np.testing.assert_allclose(logits.numpy(), dev_tables.joint_router_logits, atol=1e-5)


def test_semantic_inputs_carry_the_bi_encoder_cosine() -> None:
    """``StatesSpec.semantic``: dense scores are each query's and candidate's embedding cosine,
    0 on padding, the same whole or by shard, and the second first-stage column of a batch."""
    from maw_gym.pipeline import _base_encoder, document_text

    preset = PRESET.with_overrides(semantic=True)
    inputs = split_inputs("nave-kjv", "dev", preset.inputs)
    assert split_inputs("nave-kjv", "dev", PRESET.inputs).dense_scores is None
    dense = inputs.dense_scores
    assert dense is not None and dense.shape == inputs.candidate_mask.shape
    assert not dense[~inputs.candidate_mask].any()
    data = sampled_split("nave-kjv", "dev", preset.data)
    encoder = _base_encoder(preset.states.max_length, "cpu", "float32")
    i, j = 3, 2
    query, doc = encoder.embed(
        [data.queries[inputs.query_ids[i]], document_text(data.corpus[inputs.candidate_ids[i, j]])]
    )
    assert dense[i, j] == pytest.approx(float(query @ doc), abs=1e-5)
    assert dense.min() >= -1.0 and dense.max() <= 1.0
    part = split_inputs("nave-kjv", "dev", preset.inputs, rows=(2, 5))
    np.testing.assert_allclose(part.dense_scores, dense[2:5], atol=1e-6)
    first_stage = QueryBatch.from_inputs(inputs, np.arange(4)).first_stage  # (4, C, 2)
    assert first_stage.shape == (4, preset.candidates.candidates, 2)
    real = torch.from_numpy(inputs.candidate_mask[:4])
    cosine_z = first_stage[0, :, 1][real[0]]  # z-scored over query 0's real candidates
    assert float(cosine_z.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(cosine_z.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)


def test_train_tables_score_only_the_router_queries(encoder_dir, monkeypatch) -> None:
    """The train tables hold the router-train queries (routers never learn on the encoder's
    own queries), and only those are scored (issue 20): the same arrays as scoring the whole
    split and keeping them, up to float rounding."""
    from maw_gym.encoder import shards
    from maw_gym.pipeline import router_queries

    scored_counts = []
    score = shards.scored_arrays

    def counting(inputs, *models):
        scored_counts.append(inputs.num_queries)
        return score(inputs, *models)

    monkeypatch.setattr(shards, "scored_arrays", counting)
    tables = tables_module.build_tables(
        "nave-kjv", "train", PRESET.inputs, encoder_dir, shard_queries=16
    )
    whole = split_inputs("nave-kjv", "train", PRESET.inputs)
    held = router_queries(whole.query_ids, PRESET.data.router_fraction)
    assert tables.query_ids.tolist() == whole.query_ids[held].tolist()
    assert sum(scored_counts) == tables.meta["router_queries"] == held.sum() < len(held)
    models = TrainedEncoder.load(encoder_dir).models
    expected = score(whole, models["maw"], models["nonmaw_0"], models.get("stack"))
    for name in ("score_parts", "observation", "focus", "layer2_scores", "nonmaw_scores"):
        np.testing.assert_allclose(getattr(tables, name), expected[name][held], atol=1e-5)
