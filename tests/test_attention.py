"""Behavioural tests of the 5D MAW attention, its NON-MAW twin and the streamed observation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from maw_gym.encoder import attention as attention_module
from maw_gym.encoder.attention import (
    MAWAttention,
    NonMAWAttention,
    compress_attention,
    compress_attention_reference,
)

B, L, HIDDEN, HEADS, HEAD_DIM, DEPTH = 3, 7, 16, 2, 8, 4


#: Structural priors: none, and per-depth temperatures with an ALiBi-style locality prior.
PRIORS = {"plain": {}, "priors": {"temperature_spread": 1.0, "locality": 0.7}}


@pytest.fixture(params=sorted(PRIORS))
def layer(request) -> MAWAttention:
    """A MAW layer, plain and with both structural priors: every path must agree with the naive
    loop (which adds the priors by hand) either way."""
    torch.manual_seed(0)
    return MAWAttention(HIDDEN, HEADS, DEPTH, HEAD_DIM, **PRIORS[request.param]).eval()


def hand_priors(layer: MAWAttention, d: int) -> tuple[float, torch.Tensor]:
    """Depth d's temperature τ_d and (L, L) locality logits -m_d·|i - j|, from the documented
    formulas (not the layer's buffers)."""
    spread = 1.0 if layer.locality else 0.0  # the "priors" layer sets both
    tau = 2.0 ** (spread * (d / (DEPTH - 1) - 0.5))
    slope = layer.locality * 2.0 ** (-8.0 * d / (DEPTH - 1))
    positions = torch.arange(L, dtype=torch.float32)
    return tau, -slope * (positions[:, None] - positions[None, :]).abs()


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states and a mask with right padding, a single-token item and a hole."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(B, L, HIDDEN, generator=generator)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 5:] = False
    mask[1, 1:] = False  # one valid token
    mask[2, 3] = False  # a padding hole in the middle
    return x, mask


def naive_attention(layer: MAWAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, H, Lq, Lk, D) the seeds' way: a Python loop over depth, projecting Q and K per depth."""
    batch, length, _ = x.shape

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, length, HEADS, HEAD_DIM).transpose(1, 2)

    query, key = heads(layer.q_proj(x)), heads(layer.k_proj(x))
    out = torch.empty(batch, HEADS, length, length, layer.depth)
    for d in range(layer.depth):
        query_d = query @ layer.depth_query[:, d]
        key_d = key @ layer.depth_key[:, d]
        tau, local = hand_priors(layer, d)
        scores = query_d @ key_d.transpose(-1, -2) / (tau * math.sqrt(HEAD_DIM)) + local
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        out[..., d] = scores.softmax(dim=-1)
    return out


def naive_output(layer, x, mask, weights_per_head: torch.Tensor) -> torch.Tensor:
    """Output for (B, H, D) weights over depth, from :func:`naive_attention`."""
    attention = naive_attention(layer, x, mask)
    mixed = (attention * weights_per_head[:, :, None, None, :]).sum(-1)
    value = layer.v_proj(x).view(x.shape[0], L, HEADS, HEAD_DIM).transpose(1, 2)
    return layer.out_proj((mixed @ value).transpose(1, 2).flatten(-2))


def test_shapes(layer, inputs) -> None:
    x, mask = inputs
    weights = torch.full((B, DEPTH), 1.0 / DEPTH)
    output, attention = layer(x, mask, depth_weights=weights, return_attention=True)
    assert output.shape == (B, L, HIDDEN)
    assert attention.shape == (B, HEADS, L, L, DEPTH)
    assert layer.depth_scores(x, mask).shape == (B, HEADS, DEPTH, L, L)
    assert layer.depth_attention(x, mask, slice(0, 2)).shape == (B, HEADS, DEPTH, 2, L)
    assert layer.row_outputs(x, mask).shape == (B, DEPTH, HEADS, HEAD_DIM)
    _, none = layer(x, mask, depth_index=torch.zeros(B, dtype=torch.long))
    assert none is None


def test_rows_sum_to_one_and_masked_keys_exactly_zero(layer, inputs) -> None:
    x, mask = inputs
    attention = layer.depth_attention(x, mask)
    torch.testing.assert_close(attention.sum(-1), torch.ones(B, HEADS, DEPTH, L))
    masked = attention.masked_select(~mask[:, None, None, None, :].expand_as(attention))
    assert masked.numel() > 0 and bool((masked == 0).all())
    scores = layer.depth_scores(x, mask)
    assert bool(torch.isneginf(scores[~mask[:, None, None, None, :].expand_as(scores)]).all())


def test_output_equals_naive_per_depth_loop(layer, inputs) -> None:
    x, mask = inputs
    weights = torch.softmax(torch.randn(B, DEPTH, generator=torch.Generator().manual_seed(2)), 1)
    output, attention = layer(x, mask, depth_weights=weights, return_attention=True)
    reference = naive_attention(layer, x, mask)
    torch.testing.assert_close(attention, reference, atol=1e-5, rtol=0)
    expected = naive_output(layer, x, mask, weights[:, None, :].expand(B, HEADS, DEPTH))
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=0)


def test_soft_forward_in_item_blocks_equals_one_block(layer, inputs, monkeypatch) -> None:
    x, mask = inputs
    weights = torch.softmax(torch.randn(B, DEPTH, generator=torch.Generator().manual_seed(7)), 1)
    whole, _ = layer(x, mask, depth_weights=weights)
    monkeypatch.setattr(attention_module, "SOFT_BLOCK_BYTES", 1)  # one item per block
    blocked, _ = layer(x, mask, depth_weights=weights)
    torch.testing.assert_close(blocked, whole, atol=1e-6, rtol=0)
    expected = naive_output(layer, x, mask, weights[:, None, :].expand(B, HEADS, DEPTH))
    torch.testing.assert_close(blocked, expected, atol=1e-5, rtol=0)


def test_hard_choice_equals_one_hot_soft_weights(layer, inputs) -> None:
    x, mask = inputs
    index = torch.tensor([3, 0, 2])
    hard, _ = layer(x, mask, depth_index=index)
    soft, _ = layer(x, mask, depth_weights=F.one_hot(index, DEPTH).float())
    torch.testing.assert_close(hard, soft, atol=1e-5, rtol=0)
    hard_with_attention, _ = layer(x, mask, depth_index=index, return_attention=True)
    torch.testing.assert_close(hard_with_attention, soft, atol=1e-5, rtol=0)


def test_per_head_choice_gathers_each_heads_depth(layer, inputs) -> None:
    x, mask = inputs
    index = torch.tensor([[3, 1], [0, 0], [2, 3]])  # (B, H)
    output, _ = layer(x, mask, depth_index=index)
    expected = naive_output(layer, x, mask, F.one_hot(index, DEPTH).float())
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=0)
    # The per-head gather of the public 5D attention is what the head attends with.
    _, attention = layer(x, mask, depth_index=index, return_attention=True)
    gathered = attention.gather(4, index[:, :, None, None, None].expand(-1, -1, L, L, 1))
    naive = naive_attention(layer, x, mask)
    for b in range(B):
        for h in range(HEADS):
            torch.testing.assert_close(gathered[b, h, ..., 0], naive[b, h, ..., index[b, h]])


def test_per_head_soft_weights_equal_naive_mixture(layer, inputs) -> None:
    x, mask = inputs
    generator = torch.Generator().manual_seed(4)
    weights = torch.softmax(torch.randn(B, HEADS, DEPTH, generator=generator), dim=-1)
    output, _ = layer(x, mask, depth_weights=weights)
    torch.testing.assert_close(output, naive_output(layer, x, mask, weights), atol=1e-5, rtol=0)
    explicit, _ = layer(x, mask, depth_weights=weights, return_attention=True)
    torch.testing.assert_close(explicit, output, atol=1e-5, rtol=0)


def test_depth_slices_differ_after_init(layer, inputs) -> None:
    x, mask = inputs
    attention = layer.depth_attention(x, mask)[0]  # (H, D, L, L), item 0 has 5 valid keys
    for d in range(1, DEPTH):
        assert (attention[:, d] - attention[:, 0]).abs().max() > 1e-2


def test_row_outputs_match_full_attention(layer, inputs) -> None:
    x, mask = inputs
    rows = layer.row_outputs(x, mask, row=0)  # (B, D, H, hd)
    value = layer.v_proj(x).view(B, L, HEADS, HEAD_DIM).transpose(1, 2)
    cls_rows = naive_attention(layer, x, mask)[:, :, 0].permute(0, 3, 1, 2)  # (B, D, H, Lk)
    expected = (cls_rows.unsqueeze(-2) @ value[:, None]).squeeze(-2)  # (B, D, H, hd)
    torch.testing.assert_close(rows, expected, atol=1e-5, rtol=0)
    # Merged and projected, one depth's row equals that row of the forward output.
    output, _ = layer(x, mask, depth_index=torch.full((B,), 2))
    torch.testing.assert_close(layer.merge_heads(rows[:, 2]), output[:, 0], atol=1e-5, rtol=0)
    for row in (3, -1):
        other = layer.merge_heads(layer.row_outputs(x, mask, row=row)[:, 2])
        torch.testing.assert_close(other, output[:, row], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="row must index a position of L=7"):
        layer.row_outputs(x, mask, row=L)


@pytest.mark.parametrize("row", [0, -1])
def test_row_readout_equals_read_out_row_outputs(layer, inputs, row) -> None:
    """The folded read-out (no key or value projection) equals row_outputs read out, for one
    read-out per depth or one shared by all depths: values and every parameter's gradient."""
    x, mask = inputs
    generator = torch.Generator().manual_seed(7)
    layer.train()  # dropout is 0: train mode only makes autograd record both paths alike
    for depths in (DEPTH, 1):
        readout = torch.randn(depths, HEADS, HEAD_DIM, generator=generator)
        upstream = torch.randn(B, DEPTH, HEADS, generator=generator)
        gradients = []
        for path in ("folded", "rows"):
            layer.zero_grad()
            if path == "folded":
                read = layer.row_readout(x, mask, readout, row=row)
            else:
                read = (layer.row_outputs(x, mask, row=row) * readout).sum(-1)
            (read * upstream).sum().backward()
            # out_proj is in neither path (the read-out replaces it): no gradient.
            gradients.append({n: p.grad for n, p in layer.named_parameters() if "out" not in n})
            if path == "folded":
                folded = read.detach()
        torch.testing.assert_close(folded, read.detach(), atol=1e-5, rtol=0)
        for name, gradient in gradients[0].items():
            torch.testing.assert_close(gradient, gradients[1][name], atol=1e-4, rtol=1e-4)


def test_row_readout_of_nonmaw_is_its_attention_row(inputs) -> None:
    x, mask = inputs
    torch.manual_seed(4)
    baseline = NonMAWAttention(HIDDEN, HEADS, 1, HEAD_DIM).eval()
    readout = torch.randn(1, HEADS, HEAD_DIM)
    expected = (baseline.row_outputs(x, mask) * readout).sum(-1)  # (B, 1, H)
    torch.testing.assert_close(baseline.row_readout(x, mask, readout), expected, atol=1e-5, rtol=0)


def test_outputs_per_depth_equal_the_hard_forward(layer, inputs) -> None:
    x, mask = inputs
    outputs = list(layer.outputs_per_depth(x, mask))
    assert len(outputs) == DEPTH
    for depth, output in enumerate(outputs):
        expected, _ = layer(x, mask, depth_index=torch.full((B,), depth))
        torch.testing.assert_close(output, expected, atol=1e-5, rtol=0)


def test_gradients_reach_depth_transforms(layer, inputs) -> None:
    x, mask = inputs
    layer.train()
    for kwargs in (
        {"depth_weights": torch.full((B, DEPTH), 1.0 / DEPTH)},
        {"depth_index": torch.tensor([1, 2, 3])},
    ):
        layer.zero_grad()
        output, _ = layer(x, mask, **kwargs)
        output.square().sum().backward()
        for parameter in (layer.depth_query, layer.depth_key):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    layer.zero_grad()
    layer.row_outputs(x, mask)[:, 1].sum().backward()
    assert layer.depth_query.grad[:, 1].abs().sum() > 0
    assert layer.depth_query.grad[:, 0].abs().sum() == 0  # only the used depth learns


def test_dropout_only_in_training(inputs) -> None:
    x, mask = inputs
    torch.manual_seed(5)
    layer = MAWAttention(HIDDEN, HEADS, DEPTH, HEAD_DIM, dropout=0.5)
    weights = torch.full((B, DEPTH), 1.0 / DEPTH)
    layer.train()
    noisy, _ = layer(x, mask, depth_weights=weights)
    layer.eval()
    clean, _ = layer(x, mask, depth_weights=weights)
    again, _ = layer(x, mask, depth_weights=weights)
    assert not torch.allclose(noisy, clean)
    torch.testing.assert_close(clean, again, atol=0, rtol=0)


def test_nonmaw_equals_sdpa_and_identity_maw(inputs) -> None:
    x, mask = inputs
    torch.manual_seed(3)
    baseline = NonMAWAttention(HIDDEN, HEADS, 1, HEAD_DIM).eval()
    output, _ = baseline(x, mask, depth_index=torch.zeros(B, dtype=torch.long))

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(B, L, HEADS, HEAD_DIM).transpose(1, 2)

    sdpa = F.scaled_dot_product_attention(
        heads(baseline.q_proj(x)),
        heads(baseline.k_proj(x)),
        heads(baseline.v_proj(x)),
        attn_mask=mask[:, None, None, :],
    )
    expected = baseline.out_proj(sdpa.transpose(1, 2).flatten(-2))
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=0)
    explicit, attention = baseline(x, mask, depth_weights=torch.ones(B, 1), return_attention=True)
    torch.testing.assert_close(explicit, expected, atol=1e-5, rtol=0)
    assert attention.shape == (B, HEADS, L, L, 1)
    assert baseline.row_outputs(x, mask).shape == (B, 1, HEADS, HEAD_DIM)
    # A MAW layer with D=1, identity transforms and the same weights is the same layer.
    maw = MAWAttention(HIDDEN, HEADS, 1, HEAD_DIM).eval()
    maw.load_state_dict(
        {
            **baseline.state_dict(),
            "depth_query": torch.eye(HEAD_DIM).expand(HEADS, 1, -1, -1),
            "depth_key": torch.eye(HEAD_DIM).expand(HEADS, 1, -1, -1),
        }
    )
    soft, _ = maw(x, mask, depth_weights=torch.ones(B, 1))
    torch.testing.assert_close(soft, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("depth_chunk", [1, 3, DEPTH])
@pytest.mark.parametrize("pool", [2, 4, 9])
@pytest.mark.parametrize("focus_fraction", [0.1, 0.5])
def test_streaming_compress_equals_materialised_reference(
    layer, inputs, depth_chunk, pool, focus_fraction
):
    """At focus 0.5 the items (5, 1 and 6 valid tokens) read 3, 1 and 3 top keys: two groups,
    the one-token item's cut to width 1, each scattered back to its rows."""
    x, mask = inputs
    streamed = compress_attention(
        layer, x, mask, pool=pool, depth_chunk=depth_chunk, focus_fraction=focus_fraction
    )
    reference = compress_attention_reference(
        layer, x, mask, pool=pool, focus_fraction=focus_fraction
    )
    assert streamed["observation"].shape == (B, DEPTH, HEADS, pool, pool)
    assert streamed["entropy"].shape == streamed["focus"].shape == (B, DEPTH, HEADS)
    for name in ("observation", "entropy", "focus"):
        torch.testing.assert_close(streamed[name], reference[name], atol=1e-5, rtol=0)


def test_compress_works_for_nonmaw(inputs) -> None:
    x, mask = inputs
    torch.manual_seed(6)
    baseline = NonMAWAttention(HIDDEN, HEADS, 1, HEAD_DIM).eval()
    streamed = compress_attention(baseline, x, mask, pool=3)
    reference = compress_attention_reference(baseline, x, mask, pool=3)
    assert streamed["observation"].shape == (B, 1, HEADS, 3, 3)
    for name in ("observation", "entropy", "focus"):
        torch.testing.assert_close(streamed[name], reference[name], atol=1e-5, rtol=0)


def test_observation_does_not_depend_on_padding_length(layer, inputs) -> None:
    x, mask = inputs
    padded_x = torch.cat([x, torch.randn(B, 5, HIDDEN)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(B, 5, dtype=torch.bool)], dim=1)
    short = compress_attention(layer, x, mask, pool=3)
    long = compress_attention(layer, padded_x, padded_mask, pool=3)
    for name in short:
        torch.testing.assert_close(short[name], long[name], atol=1e-5, rtol=0)


class FixedAttention(NonMAWAttention):
    """A layer whose logits are set by hand, to check entropy and focus against known values."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__(HIDDEN, 1, 1, HEAD_DIM)
        self.logits = logits  # (B, Lq, Lk)

    def _scores_from(self, query, key, bias, depths=None):
        return (self.logits + bias[:, None, :])[:, None, :, None, :]  # (B, 1, Lq, 1, Lk)


def test_entropy_and_focus_hand_computed() -> None:
    n = 10
    logits = torch.zeros(2, n, n)
    logits[1] = torch.eye(n) * 1e4  # item 1: every row one-hot
    layer = FixedAttention(logits)
    mask = torch.ones(2, n, dtype=torch.bool)
    stats = compress_attention(layer, torch.zeros(2, n, HIDDEN), mask, pool=2, focus_fraction=0.25)
    # Uniform rows: entropy log n / log n = 1; focus = top ceil(2.5)=3 keys of 1/10 each.
    assert stats["entropy"][0].item() == pytest.approx(1.0, abs=1e-6)
    assert stats["focus"][0].item() == pytest.approx(0.3, abs=1e-6)
    assert stats["entropy"][1].item() == pytest.approx(0.0, abs=1e-6)
    assert stats["focus"][1].item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(stats["observation"][0, 0, 0], torch.full((2, 2), 0.1))
    torch.testing.assert_close(
        stats["observation"][1, 0, 0], torch.tensor([[0.2, 0.0], [0.0, 0.2]])
    )


def test_entropy_is_not_a_function_of_focus() -> None:
    # Same entropy-free comparison: rows with equal top-1 mass but different tails.
    a = torch.log(torch.tensor([0.5, 0.5, 1e-9, 1e-9]))
    b = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125]))
    layer = FixedAttention(torch.stack([a.expand(4, 4), b.expand(4, 4)]))
    mask = torch.ones(2, 4, dtype=torch.bool)
    stats = compress_attention(layer, torch.zeros(2, 4, HIDDEN), mask, pool=1, focus_fraction=0.25)
    assert stats["focus"][0].item() == pytest.approx(stats["focus"][1].item(), abs=1e-6)
    assert stats["entropy"][0].item() == pytest.approx(math.log(2) / math.log(4), abs=1e-5)
    assert stats["entropy"][1].item() > stats["entropy"][0].item() + 0.1


def test_single_valid_key_has_zero_entropy_full_focus(layer, inputs) -> None:
    x, mask = inputs
    stats = compress_attention(layer, x, mask, pool=2)
    assert bool((stats["entropy"][1] == 0).all())
    torch.testing.assert_close(stats["focus"][1], torch.ones(DEPTH, HEADS))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "neither"),
        (
            {
                "depth_index": torch.zeros(B, dtype=torch.long),
                "depth_weights": torch.ones(B, DEPTH),
            },
            "both",
        ),
        ({"depth_weights": torch.full((B, DEPTH), 0.3)}, "sum to 1"),
        ({"depth_weights": torch.full((B, DEPTH), float("nan"))}, "NaN"),
        ({"depth_weights": torch.ones(B, DEPTH + 1) / (DEPTH + 1)}, r"expected shape \(3, 4\)"),
        ({"depth_weights": torch.tensor([[1.5, -0.5, 0, 0]] * B)}, "non-negative"),
        ({"depth_index": torch.tensor([0, DEPTH, 1])}, r"\[0, 3\]"),
        ({"depth_index": torch.tensor([0, -1, 1])}, r"\[0, 3\]"),
        ({"depth_index": torch.zeros(B, 5, dtype=torch.long)}, "per head"),
        ({"depth_index": torch.zeros(B)}, "integer"),
    ],
)
def test_invalid_selection_raises(layer, inputs, kwargs, message) -> None:
    x, mask = inputs
    with pytest.raises(ValueError, match=message):
        layer(x, mask, **kwargs)


def test_invalid_masks_and_compress_arguments(layer, inputs) -> None:
    x, mask = inputs
    empty = mask.clone()
    empty[2] = False
    with pytest.raises(ValueError, match=r"items \[2\] have no valid key"):
        layer.depth_attention(x, empty)
    with pytest.raises(ValueError, match="key_padding_mask: expected shape"):
        layer.depth_attention(x, mask[:, :-1])
    with pytest.raises(ValueError, match="pool must be >= 1"):
        compress_attention(layer, x, mask, pool=0)
    with pytest.raises(ValueError, match="focus_fraction"):
        compress_attention(layer, x, mask, pool=2, focus_fraction=0.0)
    with pytest.raises(ValueError, match="depth_index: values must lie in"):
        NonMAWAttention(HIDDEN, HEADS, 1, HEAD_DIM)(x, mask, depth_index=torch.ones(B).long())
