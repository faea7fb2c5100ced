"""The MAW reranker: exact linear score decomposition, training, checkpoints (synthetic inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maw_gym.encoder.reranker import (
    MAWReranker,
    TrainConfig,
    bm25_zscore,
    listwise_loss,
    score_split,
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


def _pairs(batch: int = 6, length: int = 9, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, HIDDEN, generator=generator)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[::2, length - 4 :] = False
    bm25_z = torch.randn(batch, generator=generator)
    return x, mask, bm25_z


@pytest.mark.parametrize("layers", [1, 2])
def test_hard_depth_score_equals_base_plus_parts(layers: int) -> None:
    torch.manual_seed(0)
    model = MAWReranker(HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL, layers=layers).eval()
    x, mask, bm25_z = _pairs()
    lower = torch.tensor([[1], [0], [3], [2], [1], [0]]) if layers == 2 else None
    with torch.no_grad():
        base, parts = model.score_terms(x, mask, bm25_z, lower)
        for depth in range(DEPTH):
            direct = model(x, mask, bm25_z, depth_index=torch.full((6,), depth), lower_depths=lower)
            torch.testing.assert_close(direct, base + parts[:, depth].sum(-1), atol=1e-5, rtol=0)


def test_per_head_and_soft_choices_decompose() -> None:
    torch.manual_seed(1)
    model = MAWReranker(HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL).eval()
    x, mask, bm25_z = _pairs(seed=1)
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
    model = MAWReranker(HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL).eval()
    with torch.no_grad():
        _, parts = model.score_terms(*_pairs())
    assert not torch.allclose(parts[:, 0], parts[:, 1])


def test_bm25_zscore_and_losses_by_hand() -> None:
    z = bm25_zscore(torch.tensor([[1.0, 3.0, 9.0]]), torch.tensor([[True, True, False]]))
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


@pytest.mark.parametrize("specialisation", ["router", "random"])
def test_training_lowers_loss_and_is_deterministic(specialisation: str) -> None:
    train, dev = fake_inputs(seed=0), fake_inputs(n=12, seed=1)
    config = TrainConfig(
        epochs=4, patience=4, batch_queries=6, lr=3e-3, seed=3, specialisation=specialisation
    )  # type: ignore[arg-type]
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = MAWReranker(HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL, router=specialisation == "router")
        state = train_reranker(model, train, dev, config)
        runs.append((state, score_split(model, dev).score_parts))
    losses = [h["train_loss"] for h in runs[0][0].history]
    assert losses[-1] < losses[0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    if specialisation == "router":
        assert [h["router"] for h in runs[0][0].history] == [0.0, 1.0, 1.0, 1.0]


def test_score_split_shapes_and_resume_matches_uninterrupted() -> None:
    train, dev = fake_inputs(seed=0), fake_inputs(n=12, seed=1)
    config = TrainConfig(epochs=3, patience=3, batch_queries=6, seed=1)
    torch.manual_seed(0)
    straight = MAWReranker(HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL)
    train_reranker(straight, train, dev, config)

    saved: list[dict] = []
    torch.manual_seed(0)
    first = MAWReranker(HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL)
    train_reranker(
        first,
        train,
        dev,
        TrainConfig(**{**config.__dict__, "epochs": 1}),
        on_epoch=lambda payload: saved.append(torch.load(_roundtrip(payload), weights_only=False)),
    )
    resume = saved[-1]
    resume["train_state"].done = False
    resumed = MAWReranker(HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL)
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
