"""Today's hot paths, frozen as they were at commit ffe2755 (before issue 20's speed-ups), so
that ``bench_pipeline.py`` measures before and after in one process on the same inputs.

Not used by the library. :func:`todays_code` swaps them into ``maw_gym.encoder.reranker`` for
the length of a block: the MAW score (``MAWReranker.score_terms`` through ``row_outputs``, which
projects every token's key and value, and ``_depth_queries``, which copied the depth
transforms once per item) and the observation (``compress_attention`` over the
whole padded batch, ``xlogy`` entropy, sorted ``topk`` focus). The states' reference is
``BaseEncoder`` with today's settings (batch 32, float32), which the bench passes explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import torch
from torch import Tensor

from maw_gym.encoder import reranker
from maw_gym.encoder.attention import (
    MAWAttention,
    NonMAWAttention,
    _check_compress_args,
    _check_mask,
    _focus_keys,
    _pool_matrix,
)

#: Today's tables batch (``score_split``'s default at ffe2755).
BATCH_QUERIES = 16


@contextmanager
def todays_code() -> Iterator[None]:
    """Run a block with the MAW score and observation as they were at ffe2755."""
    with (
        mock.patch.object(reranker.MAWReranker, "score_terms", score_terms),
        mock.patch.object(reranker, "compress_attention", compress_attention),
        mock.patch.object(MAWAttention, "_depth_queries", depth_queries),
    ):
        yield


def depth_queries(self: MAWAttention, query: Tensor, depths: slice | None = None) -> Tensor:
    """``MAWAttention._depth_queries`` at ffe2755: a broadcast matmul, which copies the
    transforms once per item."""
    side_by_side = self._side_by_side(depths if depths is not None else slice(None))
    return (query @ side_by_side).unflatten(-1, (-1, self.head_dim))  # (B, H, Lq, D', hd)


def score_terms(
    self: reranker.MAWReranker,
    x: Tensor,
    mask: Tensor,
    first_stage: Tensor,
    lower_depths: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``MAWReranker.score_terms`` at ffe2755: every depth's attended CLS values, then the
    linear head (the depth heads' first-stage share is the library's own function)."""
    self._check_first_stage(first_stage)
    x = self.last_input(x, mask, lower_depths)
    last = self.layers[-1]
    rows = last.row_outputs(x, mask)  # (B, D, H, head_dim)
    head_weight = (self.score_weight @ last.out_proj.weight).view(self.heads, self.head_dim)
    parts = (rows * head_weight).sum(-1)
    if self.depth_head is not None:
        parts = parts + (rows * self.depth_head).sum(-1)
    parts = parts + self._first_stage_parts(first_stage)
    base = self._depth_free(x, first_stage) + self.score_weight @ last.out_proj.bias
    return base, parts


def compress_attention(
    attention_module: MAWAttention | NonMAWAttention,
    x: Tensor,
    key_padding_mask: Tensor,
    pool: int,
    depth_chunk: int = 2,
    focus_fraction: float = 0.1,
) -> dict[str, Tensor]:
    """``compress_attention`` at ffe2755: the whole padded batch at once, ``xlogy`` entropy,
    a sorted ``topk`` of the batch's largest focus size, then a gather."""
    _check_compress_args(pool, depth_chunk, focus_fraction)
    _check_mask(x, key_padding_mask)
    with torch.no_grad():
        query, key, _ = attention_module._projections(x)
        bias = attention_module._mask_bias(key_padding_mask, x.dtype)
        n_valid = key_padding_mask.sum(dim=1)  # (B,)
        pool_matrix = _pool_matrix(key_padding_mask, pool, x.dtype)  # (B, P, L)
        pool_rows = pool_matrix[:, None]  # (B, 1, P, Lq)
        pool_keys = pool_matrix.transpose(1, 2)  # (B, Lk, P)
        # (B, 1, Lq, 1): weights of the mean over valid query rows.
        row_weight = (key_padding_mask / n_valid[:, None]).to(x.dtype)[:, None, :, None]
        log_n = torch.log(n_valid.to(x.dtype)).clamp(min=1e-12)[:, None, None]  # (B, 1, 1)
        top_k = _focus_keys(n_valid, focus_fraction)
        k_max = int(top_k.max())
        # Where in each row's descending cumulative mass the focus is read, per item.
        top_pick = (top_k - 1)[:, None, None, None, None]  # (B, 1, 1, 1, 1)

        observations, entropies, focuses = [], [], []
        for first in range(0, attention_module.depth, depth_chunk):
            depths = slice(first, min(first + depth_chunk, attention_module.depth))
            # (B, H, Lq, c, Lk) for this chunk's c depths only.
            attention = attention_module._scores_from(query, key, bias, depths).softmax(dim=-1)
            batch, heads, lq, chunk, _ = attention.shape
            # One (H·Lq·c × Lk) @ (Lk × P) matmul per item: far faster than broadcasting.
            pooled_keys = torch.bmm(attention.view(batch, -1, attention.shape[-1]), pool_keys)
            pooled_keys = pooled_keys.view(batch, heads, lq, chunk * pool)
            pooled = (pool_rows @ pooled_keys).view(batch, heads, pool, chunk, pool)
            observations.append(pooled.permute(0, 3, 1, 2, 4))  # (B, c, H, P, P)
            row_entropy = -torch.special.xlogy(attention, attention).sum(dim=-1)  # (B,H,Lq,c)
            entropies.append((row_entropy * row_weight).sum(dim=2) / log_n)  # (B, H, c)
            top_mass = attention.topk(k_max, dim=-1, sorted=True).values.cumsum(dim=-1)
            row_focus = top_mass.gather(-1, top_pick.expand(-1, heads, lq, chunk, 1)).squeeze(-1)
            focuses.append((row_focus * row_weight).sum(dim=2))  # (B, H, c)
        entropy = torch.cat(entropies, dim=2).transpose(1, 2)  # (B, D, H)
        entropy = torch.where((n_valid > 1)[:, None, None], entropy, torch.zeros_like(entropy))
        return {
            "observation": torch.cat(observations, dim=1),
            "entropy": entropy.clamp(0.0, 1.0).contiguous(),
            "focus": torch.cat(focuses, dim=2).transpose(1, 2).clamp(0.0, 1.0).contiguous(),
        }
