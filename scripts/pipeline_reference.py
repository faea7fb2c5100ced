"""Today's hot paths, frozen as they were at commit ffe2755 (before issue 20's speed-ups), so
that ``bench_pipeline.py`` measures before and after in one process on the same inputs. The
issue-21 refactor (main up to 327cc9a) left these paths as they were, so they are also main's.

Not used by the library. :func:`score_split` and :func:`scored_arrays` are ffe2755's (one
``score_split`` per layer-1 depth for the stack's rows, each projecting layer 1 again), and
:func:`todays_code` swaps ffe2755's versions of four functions into the library for a block:
the score parts through ``row_outputs``, which projects every token's key and value
(``MAWReranker.last_terms``); the depth queries by a broadcast matmul, which copied the depth
transforms once per item (``MAWAttention._depth_queries``); the observation over the whole
padded batch with ``xlogy`` entropy and a sorted ``topk`` focus (``compress_attention``); and
numpy's float16 conversion of the states (``reranker._float_states``). The
states' reference is ``BaseEncoder`` at ffe2755's settings (batch 32, float32), which the bench
passes explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import numpy as np
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
from maw_gym.pipeline import SplitInputs

#: Today's tables batch (``score_split``'s default at ffe2755).
BATCH_QUERIES = 16


@contextmanager
def todays_code() -> Iterator[None]:
    """Run a block with the MAW score and observation as they were at ffe2755."""
    with (
        mock.patch.object(reranker.MAWReranker, "last_terms", last_terms),
        mock.patch.object(reranker, "compress_attention", compress_attention),
        mock.patch.object(MAWAttention, "_depth_queries", depth_queries),
        mock.patch.object(reranker, "_float_states", float_states),
    ):
        yield


def float_states(states: np.ndarray, index: np.ndarray) -> Tensor:
    """``QueryBatch.from_inputs``'s conversion at ffe2755: numpy's float16 -> float32."""
    return torch.from_numpy(states[index].astype(np.float32))


def depth_queries(self: MAWAttention, query: Tensor, depths: slice | None = None) -> Tensor:
    """``MAWAttention._depth_queries`` at ffe2755: a broadcast matmul, which copies the
    transforms once per item."""
    side_by_side = self._side_by_side(depths if depths is not None else slice(None))
    return (query @ side_by_side).unflatten(-1, (-1, self.head_dim))  # (B, H, Lq, D', hd)


def last_terms(
    self: reranker.MAWReranker, x: Tensor, mask: Tensor, first_stage: Tensor
) -> tuple[Tensor, Tensor]:
    """``MAWReranker.score_terms`` at ffe2755, after the last layer's input: every depth's
    attended CLS values, then the linear head."""
    self._check_first_stage(first_stage)
    last = self.layers[-1]
    rows = last.row_outputs(x, mask)  # (B, D, H, head_dim)
    head_weight = (self.score_weight @ last.out_proj.weight).view(self.heads, self.head_dim)
    parts = (rows * head_weight).sum(-1)
    if self.depth_head is not None:
        parts = parts + (rows * self.depth_head).sum(-1)
    parts = parts + self._first_stage_parts(first_stage)
    base = self._depth_free(x, first_stage) + self.score_weight @ last.out_proj.bias
    return base, parts


@torch.no_grad()
def score_split(
    model: reranker.MAWReranker,
    inputs: SplitInputs,
    batch_queries: int = BATCH_QUERIES,
    observe: bool = False,
    lower_depths: np.ndarray | None = None,
) -> reranker.SplitScores:
    """``score_split`` at ffe2755 (without its progress bar)."""
    model.eval()
    device = next(model.parameters()).device
    n, c = inputs.candidate_mask.shape
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_queries):
        index = np.arange(start, min(start + batch_queries, n))
        batch = reranker.QueryBatch.from_inputs(inputs, index, device)
        lower = None
        if lower_depths is not None:
            lower = torch.from_numpy(lower_depths[index]).long().repeat_interleave(c, dim=0)
            lower = lower.to(device)
        base, parts = model.score_terms(batch.x, batch.mask, batch.first_stage.flatten(0, 1), lower)
        out.setdefault("score_base", []).append(batch.per_query(base).cpu().numpy())
        parts = batch.per_query(parts).permute(0, 2, 3, 1)
        out.setdefault("score_parts", []).append(parts.cpu().numpy())
        if observe:
            observed = batch.leading(model.observe_candidates)
            observed_lower = None
            if lower_depths is not None:
                observed_lower = torch.from_numpy(lower_depths[index]).long()
                observed_lower = observed_lower.repeat_interleave(observed.shape[1], dim=0)
                observed_lower = observed_lower.to(device)
            compressed = model.observe(observed.x, observed.mask, observed_lower)
            means = {key: observed.candidate_mean(value) for key, value in compressed.items()}
            for key, value in means.items():
                out.setdefault(key, []).append(value.cpu().numpy())
            if model.router is not None:
                logits = model.router(means["observation"])
                out.setdefault("router_logits", []).append(logits.cpu().numpy())
    arrays = {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}
    return reranker.SplitScores(**arrays)


def scored_arrays(inputs: SplitInputs, maw, nonmaw, stack=None) -> dict[str, np.ndarray]:
    """``shards.scored_arrays`` at ffe2755; call it under :func:`todays_code`."""
    scored = score_split(maw, inputs, observe=True)
    arrays = {
        "query_ids": inputs.query_ids,
        "candidate_ids": inputs.candidate_ids,
        "candidate_mask": inputs.candidate_mask,
        "relevance": inputs.relevance,
        "ideal_gains": inputs.ideal_gains,
        "observation": scored.observation,
        "entropy": scored.entropy,
        "focus": scored.focus,
        "score_parts": scored.score_parts,
        "score_base": scored.score_base,
        "bm25_scores": inputs.bm25_scores,
        "nonmaw_scores": score_split(nonmaw, inputs).depth_scores()[:, 0],
        "joint_router_logits": scored.router_logits,
    }
    if stack is not None:
        per_lower = [
            score_split(
                stack,
                inputs,
                observe=True,
                lower_depths=np.full((inputs.num_queries, 1), lower),
            )
            for lower in range(stack.depth)
        ]
        arrays["layer2_observation"] = np.stack([s.observation for s in per_lower], axis=1)
        arrays["layer2_entropy"] = np.stack([s.entropy for s in per_lower], axis=1)
        arrays["layer2_focus"] = np.stack([s.focus for s in per_lower], axis=1)
        arrays["layer2_scores"] = np.stack([s.depth_scores() for s in per_lower], axis=1)
    return arrays


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
