"""The MAW reranker: exact linear score decomposition, training, checkpoints (synthetic inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maw_gym.encoder.reranker import (
    MAWReranker,
    RerankerConfig,
    TrainConfig,
    candidate_zscore,
    depth_correlation,
    listwise_loss,
    score_split,
    score_split_per_lower_depth,
    sinkhorn_assignment,
    switch_balance_loss,
    train_reranker,
)
from maw_gym.encoder.train import state_hash
from maw_gym.pipeline import SplitInputs

HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL = 16, 3, 4, 8, 2


def fake_inputs(n: int = 24, c: int = 5, length: int = 10, seed: int = 0) -> SplitInputs:
    """Random states in which a relevant candidate's CLS state is shifted: learnable."""
    rng = np.random.default_rng(seed)
    relevance = (rng.random((n, c)) < 0.3).astype(np.float32)
    relevance[:, 0] = 1.0
    rng.permuted(relevance, axis=1, out=relevance)
    states = rng.normal(size=(n, c, length, HIDDEN)).astype(np.float32)
    states[:, :, :, 0] += 2.0 * relevance[:, :, None]
    token_mask = np.ones((n, c, length), dtype=bool)
    token_mask[:, :, length - 3 :] = rng.random((n, c, 1)) < 0.5
    candidate_mask = np.ones((n, c), dtype=bool)
    candidate_mask[0, -1] = False
    ideal = np.zeros((n, 10), dtype=np.float32)
    ideal[:, :c] = -np.sort(-relevance, axis=1)
    return SplitInputs(
        dataset="fake",
        split="train",
        fingerprint=str(seed),
        query_ids=np.array([f"q{i}" for i in range(n)]),
        candidate_ids=np.array([[f"d{i}_{j}" for j in range(c)] for i in range(n)]),
        candidate_mask=candidate_mask,
        bm25_scores=rng.random((n, c)).astype(np.float32),
        relevance=relevance,
        ideal_gains=ideal,
        states=states.astype(np.float16),
        token_mask=token_mask,
        base_model_id="fake",
    )


def _pairs(batch: int = 6, length: int = 9, seed: int = 0, features: int = 1):
    """States, mask and ``features`` z-scored first-stage scores (BM25, then cosine)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, HIDDEN, generator=generator)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[::2, length - 4 :] = False
    first_stage = torch.randn(batch, features, generator=generator)
    return x, mask, first_stage


#: Expert levers: depth-specific score heads and BM25 weights, per-depth temperatures.
EXPERTS = {"depth_heads": True, "temperature_spread": 2.0}
#: Every lever: experts with a locality prior and the semantic first-stage feature.
ALL_LEVERS = {**EXPERTS, "locality": 0.5, "semantic": True}


def _model(seed: int, **kwargs) -> MAWReranker:
    torch.manual_seed(seed)
    model = MAWReranker(RerankerConfig(HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL, **kwargs)).eval()
    if model.depth_head is not None:  # trained experts' heads differ (they start at 0)
        with torch.no_grad():
            model.depth_head.normal_()
    return model


@pytest.mark.parametrize("levers", [{"layers": 1}, {"layers": 2}, EXPERTS, ALL_LEVERS])
def test_hard_depth_score_equals_base_plus_parts(levers: dict) -> None:
    layers = levers.get("layers", 1)
    model = _model(0, **levers)
    x, mask, bm25_z = _pairs(features=model.first_stage_features)
    lower = torch.tensor([[1], [0], [3], [2], [1], [0]]) if layers == 2 else None
    with torch.no_grad():
        base, parts = model.score_terms(x, mask, bm25_z, lower)
        for depth in range(DEPTH):
            direct = model(x, mask, bm25_z, depth_index=torch.full((6,), depth), lower_depths=lower)
            torch.testing.assert_close(direct, base + parts[:, depth].sum(-1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("levers", [{}, EXPERTS, ALL_LEVERS])
def test_per_head_and_soft_choices_decompose(levers: dict) -> None:
    model = _model(1, **levers)
    x, mask, bm25_z = _pairs(seed=1, features=model.first_stage_features)
    per_head = torch.tensor([[0, 1, 2], [3, 3, 3], [1, 0, 1], [2, 2, 0], [0, 0, 0], [3, 1, 2]])
    weights = torch.softmax(torch.randn(6, DEPTH), dim=-1)
    with torch.no_grad():
        base, parts = model.score_terms(x, mask, bm25_z)
        heads = torch.arange(HEADS)
        expected = base + parts[torch.arange(6)[:, None], per_head, heads].sum(-1)
        torch.testing.assert_close(
            model(x, mask, bm25_z, depth_index=per_head), expected, atol=1e-5, rtol=0
        )
        mixed = base + (weights[:, :, None] * parts).sum((1, 2))
        torch.testing.assert_close(
            model(x, mask, bm25_z, depth_weights=weights), mixed, atol=1e-5, rtol=0
        )


def test_depths_give_different_scores_at_init() -> None:
    torch.manual_seed(2)
    model = MAWReranker(RerankerConfig(HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL)).eval()
    with torch.no_grad():
        _, parts = model.score_terms(*_pairs())
    assert not torch.allclose(parts[:, 0], parts[:, 1])


def test_expert_levers_make_depths_differ_as_specified() -> None:
    """Temperatures: depth 0 is the sharpest (lowest entropy); heads: each depth its own BM25
    weight α + β_d, so on zero states depths differ by exactly (β_d − β_0)·z(bm25)."""
    model = _model(3, **EXPERTS)
    x, mask, _ = _pairs()
    with torch.no_grad():
        attention = model.layers[0].depth_attention(x, mask)  # (B, H, D, L, L)
        entropy = -torch.special.xlogy(attention, attention).sum(-1).mean((0, 1, 3))
        assert entropy[0] < entropy[-1]
        torch.testing.assert_close(
            model.layers[0].depth_scale, 2.0 ** (-2.0 * torch.linspace(-0.5, 0.5, DEPTH))
        )
        model.depth_head.zero_()  # only the BM25 weights differ; zero states attend uniformly
        bm25_z = torch.tensor([[1.0]])
        _, parts = model.score_terms(
            torch.zeros(1, 4, HIDDEN), torch.ones(1, 4, dtype=bool), bm25_z
        )
        lexical = parts[0].sum(-1) - parts[0, 0].sum(-1)
        expected = model.depth_bm25 - model.depth_bm25[0]
        torch.testing.assert_close(lexical, expected, atol=1e-5, rtol=0)


def test_semantic_feature_weights_span_lexical_to_semantic() -> None:
    """With ``semantic``, depth d scores (α + β_d)·z(bm25) + (γ + η_d)·z(cos) on zero states:
    depth 0 starts semantic (1.5 on cosine, 0.5 on BM25), the last depth lexical."""
    model = _model(4, **ALL_LEVERS)
    zeros, mask = torch.zeros(3, 4, HIDDEN), torch.ones(3, 4, dtype=bool)
    first_stage = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    with torch.no_grad():
        base, parts = model.score_terms(zeros, mask, first_stage)
        per_depth = base[:, None] + parts.sum(-1)  # (3, D)
        weights = per_depth[:2] - per_depth[2]  # the weights of z(bm25) and z(cos) per depth
        torch.testing.assert_close(weights[:, [0, -1]], torch.tensor([[0.5, 1.5], [1.5, 0.5]]))
        with pytest.raises(ValueError, match=r"expected \(B, 2\) z-scored first-stage"):
            model.score_terms(zeros, mask, torch.ones(3, 1))


def test_sinkhorn_assignment_balances_and_keeps_preferences() -> None:
    # Every query prefers depth 0, but queries 2 and 3 mind depth 1 least: balance sends them.
    cost = torch.tensor([[0.0, 5.0], [0.0, 5.0], [0.0, 1.0], [0.0, 0.5]])
    assert sinkhorn_assignment(cost).tolist() == [0, 0, 1, 1]
    # Without competition each query keeps its own best depth.
    assert sinkhorn_assignment(torch.tensor([[0.0, 1.0], [1.0, 0.0]])).tolist() == [0, 1]


def test_depth_correlation_by_hand() -> None:
    mask = torch.tensor([[True, True, True, False]])
    same = torch.tensor([[[1.0, 2.0, 3.0, 9.0], [2.0, 4.0, 6.0, -9.0]]])
    opposite = torch.tensor([[[1.0, 2.0, 3.0, 0.0], [3.0, 2.0, 1.0, 0.0]]])
    assert float(depth_correlation(same, mask)) == pytest.approx(1.0, abs=1e-5)
    assert float(depth_correlation(opposite, mask)) == pytest.approx(-1.0, abs=1e-5)


def test_candidate_zscore_and_losses_by_hand() -> None:
    z = candidate_zscore(torch.tensor([[1.0, 3.0, 9.0]]), torch.tensor([[True, True, False]]))
    torch.testing.assert_close(z, torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-4, rtol=0)
    scores = torch.tensor([[0.0, np.log(3.0), 5.0]])
    loss = listwise_loss(
        scores, torch.tensor([[0.0, 1.0, 1.0]]), torch.tensor([[True, True, False]])
    )
    assert float(loss) == pytest.approx(-np.log(0.75), abs=1e-6)  # p(relevant) = 3/4
    balanced = switch_balance_loss(torch.full((4, 2), 0.5), torch.tensor([0, 1, 0, 1]))
    skewed = switch_balance_loss(torch.tensor([[0.9, 0.1]] * 4), torch.tensor([0, 0, 0, 0]))
    assert float(balanced) == pytest.approx(1.0)
    assert float(skewed) == pytest.approx(1.8)


@pytest.mark.parametrize("specialisation", ["router", "random", "sinkhorn"])
def test_training_lowers_loss_and_is_deterministic(specialisation: str) -> None:
    train, dev = fake_inputs(seed=0), fake_inputs(n=12, seed=1)
    config = TrainConfig(
        epochs=4,
        patience=4,
        batch_queries=6,
        lr=3e-3,
        seed=3,
        specialisation=specialisation,  # type: ignore[arg-type]
        diversity_weight=0.1 if specialisation == "sinkhorn" else 0.0,
    )
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = MAWReranker(
            RerankerConfig(
                HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL, router=specialisation != "random", **EXPERTS
            )
        )
        state = train_reranker(model, train, dev, config)
        runs.append((state, score_split(model, dev).score_parts))
    losses = [h["train_loss"] for h in runs[0][0].history]
    # sinkhorn's loss gains the router's imitation term after the warm-up epoch
    assert losses[-1] < losses[1 if specialisation == "sinkhorn" else 0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    if specialisation == "router":
        assert [h["router"] for h in runs[0][0].history] == [0.0, 1.0, 1.0, 1.0]


def test_score_split_shapes_and_resume_matches_uninterrupted() -> None:
    train, dev = fake_inputs(seed=0), fake_inputs(n=12, seed=1)
    config = TrainConfig(epochs=3, patience=3, batch_queries=6, seed=1)
    torch.manual_seed(0)
    straight = MAWReranker(RerankerConfig(HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL))
    train_reranker(straight, train, dev, config)

    saved: list[dict] = []
    torch.manual_seed(0)
    first = MAWReranker(RerankerConfig(HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL))
    train_reranker(
        first,
        train,
        dev,
        TrainConfig(**{**config.__dict__, "epochs": 1}),
        on_epoch=lambda payload: saved.append(torch.load(_roundtrip(payload), weights_only=False)),
    )
    resume = saved[-1]
    resume["train_state"].done = False
    resumed = MAWReranker(RerankerConfig(HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL))
    train_reranker(resumed, train, dev, config, resume=resume)
    assert state_hash({"m": resumed.state_dict()}) == state_hash({"m": straight.state_dict()})

    scored = score_split(resumed, dev, observe=True)
    n, c = dev.candidate_mask.shape
    assert scored.score_parts.shape == (n, DEPTH, HEADS, c)
    assert scored.observation.shape == (n, DEPTH, HEADS, POOL, POOL)
    assert scored.router_logits.shape == (n, DEPTH)
    assert ((scored.entropy >= 0) & (scored.entropy <= 1)).all()


def _roundtrip(payload: dict):
    import io

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    return buffer


def test_a_changed_reranker_default_changes_the_encoder_cache_key(monkeypatch) -> None:
    """``init_noise`` and ``observe_candidates`` change the tables, so the key holds every
    architecture field, defaults included (not only the ones a spec sets)."""
    import dataclasses

    from maw_gym.encoder import reranker
    from maw_gym.encoder.train import default_encoder_dir, encoder_config, table_models
    from maw_gym.presets import get_preset

    preset = get_preset("smoke")

    def config() -> dict:
        models = table_models(preset.encoder, preset.inputs)
        return encoder_config("nave-kjv", preset.inputs, preset.encoder, models)

    before = config()
    noise = dataclasses.fields(reranker.RerankerConfig)
    default = next(f.default for f in noise if f.name == "init_noise")
    changed = dataclasses.make_dataclass(
        "RerankerConfig",
        [("init_noise", float, dataclasses.field(default=default + 1))],
        bases=(reranker.RerankerConfig,),
        frozen=True,
    )
    monkeypatch.setattr("maw_gym.encoder.train.RerankerConfig", changed)
    after = config()
    assert after["models"]["maw"]["model"]["init_noise"] == default + 1
    assert default_encoder_dir(after) != default_encoder_dir(before)


def test_model_key_changes_with_what_a_model_learns_from() -> None:
    """A study's cached model is keyed by its inputs' queries *and* their shape: at 30
    candidates the study once silently reused models trained on 16 (same queries)."""
    import dataclasses

    inputs = fake_inputs(c=5, length=10)
    assert inputs.model_key() == fake_inputs(c=5, length=10).model_key()
    assert inputs.model_key() != fake_inputs(c=5, length=10, seed=1).model_key()  # queries
    assert inputs.model_key() != fake_inputs(c=4, length=10).model_key()
    assert inputs.model_key() != fake_inputs(c=5, length=9).model_key()
    semantic = dataclasses.replace(inputs, dense_scores=np.zeros((24, 5), dtype=np.float32))
    assert inputs.model_key() != semantic.model_key()


def test_stack_scored_once_per_lower_depth_equals_a_split_per_depth() -> None:
    """The tables' layer-2 rows (layer 1 projected once per batch for every depth) equal one
    ``score_split`` per layer-1 depth, up to float rounding."""
    model = _model(5, layers=2, router=False, observe_candidates=2)
    inputs = fake_inputs(n=7, seed=2)
    per_depth = score_split_per_lower_depth(model, inputs, batch_queries=3)
    assert len(per_depth) == DEPTH
    for depth, scored in enumerate(per_depth):
        lower = np.full((inputs.num_queries, 1), depth)
        expected = score_split(model, inputs, batch_queries=3, observe=True, lower_depths=lower)
        for name in ("score_base", "score_parts", "observation", "entropy", "focus"):
            np.testing.assert_allclose(
                getattr(scored, name), getattr(expected, name), atol=1e-5, rtol=0
            )
    with pytest.raises(ValueError, match="a 2-layer stack only"):
        score_split_per_lower_depth(_model(6), inputs)
