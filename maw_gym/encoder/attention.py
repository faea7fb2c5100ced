"""Multi-Attention-Weight (5D) attention, its standard 4D twin, and streamed observations.

``MAWAttention`` turns the usual 4D attention ``(B, H, Lq, Lk)`` into a 5D one with a depth
axis: each depth ``d`` has its own per-head query and key transforms, so each depth slice is a
genuinely different attention pattern (see DESIGN.md, "The 5D attention, precisely"). A router
picks one depth per input (or per head), or a mixture of depths.

No Python loop over depth: one batched matmul computes every depth. DESIGN.md puts the depth
axis next to the heads; internally it sits between the query and key axes, ``(B, H, Lq, D, Lk)``,
because that is the layout in which the transformed queries of all depths come out of one
matmul with no copy (see ``_AttentionBase``). ``depth_scores``/``depth_attention`` return the
``(B, H, D, Lq, Lk)`` view and ``forward`` the seeds' public layout ``(B, H, Lq, Lk, D)``.

``compress_attention`` computes the environment's observation (pooled attention maps, entropy,
focus) depth-chunk by depth-chunk, never holding the whole 5D tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MAWAttention",
    "NonMAWAttention",
    "compress_attention",
    "compress_attention_reference",
]

#: Tolerance on ``depth_weights`` rows summing to 1.
WEIGHT_SUM_TOLERANCE = 1e-4

#: Target size of the soft forward's per-block temporaries (see ``MAWAttention._mixed_values``).
SOFT_BLOCK_BYTES = 2 * 2**20


def _check_mask(x: Tensor, key_padding_mask: Tensor) -> None:
    """Fail early on a mask that does not fit ``x`` or leaves an item with no key to attend."""
    if x.dim() != 3:
        raise ValueError(f"x: expected (B, L, hidden), got shape {tuple(x.shape)}")
    if key_padding_mask.shape != x.shape[:2]:
        raise ValueError(
            f"key_padding_mask: expected shape {tuple(x.shape[:2])} (B, L), "
            f"got {tuple(key_padding_mask.shape)}"
        )
    if key_padding_mask.dtype != torch.bool:
        raise ValueError(f"key_padding_mask: expected dtype bool, got {key_padding_mask.dtype}")
    empty = ~key_padding_mask.any(dim=1)
    if bool(empty.any()):
        raise ValueError(
            f"key_padding_mask: items {empty.nonzero().flatten().tolist()} have no valid key "
            "(every row of their attention would be undefined)"
        )


class _AttentionBase(nn.Module):
    """Shared projections, masks, selection checks and depth-wise paths of both layers.

    A subclass defines :meth:`_depth_queries`; every depth-wise quantity (scores, attention,
    attended values of one row, compressed observations) follows from it.

    Internal layout: the depth axis sits between the query and key axes, ``(B, H, Lq, D, Lk)``,
    because the transformed queries of all depths come out of one matmul as ``(B, H, Lq, D·hd)``
    and are then a free view ``(B, H, Lq·D, hd)``: all depths' scores are one
    ``(Lq·D × hd) @ (hd × Lk)`` matmul per item and head, and all depths' attended values one
    call of PyTorch's fused ``scaled_dot_product_attention`` (SDPA) over ``Lq·D`` query rows.
    """

    def __init__(self, hidden: int, heads: int, depth: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        for name, value in (
            ("hidden", hidden),
            ("heads", heads),
            ("depth", depth),
            ("head_dim", head_dim),
        ):
            if value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be >= 1, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1), got {dropout}")
        self.hidden = hidden
        self.heads = heads
        self.depth = depth
        self.head_dim = head_dim
        self.dropout = dropout
        inner = heads * head_dim
        self.q_proj = nn.Linear(hidden, inner)
        self.k_proj = nn.Linear(hidden, inner)
        self.v_proj = nn.Linear(hidden, inner)
        self.out_proj = nn.Linear(inner, hidden)
        #: Locality prior (``MAWAttention``'s ``locality``); 0 = none, no extra work.
        self.locality = 0.0
        # (D,): each depth's ALiBi-style slope, logits per token of distance.
        self.register_buffer("depth_slope", torch.zeros(depth), persistent=False)

    # -- building blocks ---------------------------------------------------------------------

    def _split_heads(self, projected: Tensor) -> Tensor:
        """(B, L, H·head_dim) -> (B, H, L, head_dim)."""
        batch, length, _ = projected.shape
        return projected.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

    def _projections(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head Q, K, V, each (B, H, L, head_dim)."""
        return (
            self._split_heads(self.q_proj(x)),
            self._split_heads(self.k_proj(x)),
            self._split_heads(self.v_proj(x)),
        )

    def merge_heads(self, values: Tensor) -> Tensor:
        """Project per-head attended values ``(..., H, head_dim)`` to ``(..., hidden)``.

        Applied to :meth:`row_outputs` this gives every depth's output for that row, since the
        output projection is linear.
        """
        return self.out_proj(values.flatten(-2))

    @staticmethod
    def _mask_bias(key_padding_mask: Tensor, dtype: torch.dtype) -> Tensor:
        """(B, Lk) additive bias: 0 for real keys, -inf for padding (exactly 0 after softmax)."""
        bias = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
        return bias.masked_fill_(~key_padding_mask, float("-inf"))

    def _dropout_p(self) -> float:
        return self.dropout if self.training else 0.0

    def _locality(self, rows: slice, length: int, slopes: Tensor) -> Tensor | None:
        """ALiBi-style logits ``-m_d·|i - j|`` for the query positions ``range(length)[rows]``
        and keys ``0..length-1``, in the internal layout ``(..., Lq, D', Lk)`` for slopes
        ``(..., D')``; None without a locality prior (the default paths do no extra work)."""
        if self.locality == 0:
            return None
        keys = torch.arange(length, device=slopes.device)
        distance = (keys[rows, None] - keys[None, :]).abs().to(slopes.dtype)  # (Lq, Lk)
        return -slopes[..., None, :, None] * distance[:, None, :]

    def _depth_queries(self, query: Tensor, depths: slice | None = None) -> Tensor:
        """(B, H, Lq, D', hd): each depth's query, transformed and scaled by 1/√hd, so that the
        depth's logits are its dot products with the shared keys. ``depths`` selects D' depths.
        """
        raise NotImplementedError

    def _scores_from(
        self,
        query: Tensor,
        key: Tensor,
        bias: Tensor,
        depths: slice | None = None,
        rows: slice = slice(None),
    ) -> Tensor:
        """(B, H, Lq, D', Lk) logits (internal layout) from per-head Q and K; padding -inf.
        ``rows``: which positions the query rows are (all by default), for the locality prior.
        """
        depth_queries = self._depth_queries(query, depths)
        batch, heads, lq, n_depth, head_dim = depth_queries.shape
        scores = depth_queries.reshape(batch, heads, lq * n_depth, head_dim) @ key.transpose(-1, -2)
        scores = scores.view(batch, heads, lq, n_depth, -1).add_(bias[:, None, None, None, :])
        local = self._locality(rows, key.shape[2], self.depth_slope[depths or slice(None)])
        return scores if local is None else scores.add_(local)

    def _depth_values(
        self,
        depth_queries: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor,
        local: Tensor | None = None,
    ) -> Tensor:
        """(B, H, Lq, D', hd): every depth's attended values ``A_d @ V`` in one SDPA call.
        ``local``: the locality logits (``_locality``), broadcastable to (B, H, Lq, D', Lk)."""
        batch, heads, lq, n_depth, head_dim = depth_queries.shape
        attn_mask = mask[:, None, None, :]
        if local is not None:
            padding = self._mask_bias(mask, depth_queries.dtype)[:, None, None, None, :]
            attn_mask = (padding + local).flatten(2, 3)  # (B, H or 1, Lq·D', Lk)
        attended = F.scaled_dot_product_attention(
            depth_queries.reshape(batch, heads, lq * n_depth, head_dim),
            key,
            value,
            attn_mask=attn_mask,
            dropout_p=self._dropout_p(),
            scale=1.0,  # the depth queries are already scaled
        )
        return attended.view(batch, heads, lq, n_depth, -1)

    # -- public depth-wise views -------------------------------------------------------------

    def depth_scores(
        self, x: Tensor, key_padding_mask: Tensor, query_rows: slice | None = None
    ) -> Tensor:
        """(B, H, D, Lq, Lk) pre-softmax logits of every depth; masked keys are ``-inf``.

        A permuted view of the internal (B, H, Lq, D, Lk) tensor. ``query_rows`` restricts the
        query rows (e.g. ``slice(0, 1)`` for the CLS row).
        """
        _check_mask(x, key_padding_mask)
        query, key, _ = self._projections(x)
        rows = query_rows if query_rows is not None else slice(None)
        bias = self._mask_bias(key_padding_mask, x.dtype)
        return self._scores_from(query[:, :, rows], key, bias, rows=rows).transpose(2, 3)

    def depth_attention(
        self, x: Tensor, key_padding_mask: Tensor, query_rows: slice | None = None
    ) -> Tensor:
        """(B, H, D, Lq, Lk) attention of every depth: softmax over keys, masked keys exactly 0.

        One batched matmul and one softmax for all depths (no Python loop over depth); a
        permuted view like :meth:`depth_scores`.
        """
        return self.depth_scores(x, key_padding_mask, query_rows).softmax(dim=-1)

    def row_outputs(self, x: Tensor, key_padding_mask: Tensor, row: int = 0) -> Tensor:
        """(B, D, H, head_dim): every depth's attended values ``A_d[row] @ V`` for one query row.

        Cheap (one query row for all depths, one SDPA call). The reranker's score head is linear
        in these, so a candidate's score under any hard, per-head or soft choice of depths
        follows from them.
        """
        _check_mask(x, key_padding_mask)
        length = x.shape[1]
        row = self._row_position(row, length, "row_outputs")
        # Only this row's query is projected: a third of the projection cost saved in training.
        query = self._split_heads(self.q_proj(x[:, row : row + 1]))  # (B, H, 1, hd)
        key = self._split_heads(self.k_proj(x))
        value = self._split_heads(self.v_proj(x))
        depth_queries = self._depth_queries(query)  # (B, H, 1, D, hd)
        local = self._locality(slice(row, row + 1), length, self.depth_slope)
        values = self._depth_values(depth_queries, key, value, key_padding_mask, local)
        return values.squeeze(2).transpose(1, 2)  # (B, D, H, hd)

    def row_readout(
        self, x: Tensor, key_padding_mask: Tensor, readout: Tensor, row: int = 0
    ) -> Tensor:
        """(B, D, H): :meth:`row_outputs` read out by one linear functional per depth and head,
        ``Σ_i readout[d, h, i] · (A_{h,d}[row] V_h)_i``, for ``readout`` (D or 1, H, head_dim),
        without projecting any key or value.

        Why: a reranker's score parts are exactly such read-outs (``MAWReranker.score_terms``),
        and both projections fold into them. The read-out folds into the value projection
        (``W_v,hᵀ r_{d,h}``: hidden × D·H numbers shared by every item), and the row's depth
        queries into the key projection (``W_k,hᵀ q_{h,d}``, per item), so the two
        ``L × hidden × H·hd`` projections per item become two ``L × hidden × D·H`` products:
        3× fewer FLOPs at the quick shapes (D·H = 96, H·hd = 384), 30× for NON-MAW (D = 1).
        Equal to reading out :meth:`row_outputs` up to float rounding (tested).
        """
        _check_mask(x, key_padding_mask)
        batch, length, hidden = x.shape
        row = self._row_position(row, length, "row_readout")
        heads, head_dim = self.heads, self.head_dim
        query = self._split_heads(self.q_proj(x[:, row : row + 1]))  # (B, H, 1, hd)
        depth_queries = self._depth_queries(query).squeeze(2)  # (B, H, D, hd)
        depth = depth_queries.shape[2]
        key_weight = self.k_proj.weight.view(heads, head_dim, hidden)
        folded_keys = torch.einsum("bhdi,hic->bhdc", depth_queries, key_weight)  # (B, H, D, hidden)
        logits = (folded_keys.reshape(batch, heads * depth, hidden) @ x.transpose(1, 2)).view(
            batch, heads, depth, length
        )
        key_bias = depth_queries @ self.k_proj.bias.view(heads, head_dim, 1)  # (B, H, D, 1)
        logits = logits + key_bias + self._mask_bias(key_padding_mask, x.dtype)[:, None, None, :]
        local = self._locality(slice(row, row + 1), length, self.depth_slope)  # (1, D, L)
        attention = (logits if local is None else logits + local).softmax(dim=-1)
        attention = F.dropout(attention, p=self._dropout_p())  # (B, H, D, L)
        readout = readout.expand(depth, heads, head_dim)
        value_weight = self.v_proj.weight.view(heads, head_dim, hidden)
        folded_values = torch.einsum("dhi,hic->chd", readout, value_weight)  # (hidden, H, D)
        value_bias = torch.einsum("dhi,hi->hd", readout, self.v_proj.bias.view(heads, head_dim))
        values = x @ folded_values.reshape(hidden, heads * depth) + value_bias.flatten()
        read = (attention.reshape(batch, heads * depth, length) * values.transpose(1, 2)).sum(-1)
        return read.view(batch, heads, depth).transpose(1, 2)  # (B, D, H)

    @staticmethod
    def _row_position(row: int, length: int, caller: str) -> int:
        """``row`` as a position in ``0..length-1`` (negative rows count from the end)."""
        if not -length <= row < length:
            raise ValueError(f"{caller}: row must index a position of L={length}, got {row}")
        return row % length

    # -- selection ---------------------------------------------------------------------------

    def _check_selection(
        self, batch: int, depth_index: Tensor | None, depth_weights: Tensor | None
    ) -> None:
        if (depth_index is None) == (depth_weights is None):
            raise ValueError(
                f"{type(self).__name__}.forward: give exactly one of depth_index (hard choice) "
                "or depth_weights (soft mixture), got "
                + ("both" if depth_index is not None else "neither")
            )
        if depth_index is not None:
            if depth_index.dtype not in (torch.int64, torch.int32):
                raise ValueError(
                    f"depth_index: expected an integer tensor, got dtype {depth_index.dtype}"
                )
            if depth_index.shape not in ((batch,), (batch, self.heads)):
                raise ValueError(
                    f"depth_index: expected shape ({batch},) or ({batch}, {self.heads}) "
                    f"(per item or per head), got {tuple(depth_index.shape)}"
                )
            if depth_index.numel() and (
                int(depth_index.min()) < 0 or int(depth_index.max()) >= self.depth
            ):
                raise ValueError(
                    f"depth_index: values must lie in [0, {self.depth - 1}], got range "
                    f"[{int(depth_index.min())}, {int(depth_index.max())}]"
                )
            return
        assert depth_weights is not None
        if depth_weights.shape not in ((batch, self.depth), (batch, self.heads, self.depth)):
            raise ValueError(
                f"depth_weights: expected shape ({batch}, {self.depth}) (B, D) or "
                f"({batch}, {self.heads}, {self.depth}) (B, H, D), got {tuple(depth_weights.shape)}"
            )
        if not depth_weights.is_floating_point():
            raise ValueError(f"depth_weights: expected floats, got dtype {depth_weights.dtype}")
        if not bool(torch.isfinite(depth_weights).all()):
            raise ValueError("depth_weights: contains NaN or infinite values")
        if bool((depth_weights < 0).any()):
            raise ValueError("depth_weights: weights must be non-negative")
        sums = depth_weights.sum(dim=-1)
        bad = (sums - 1).abs() > WEIGHT_SUM_TOLERANCE
        if bool(bad.any()):
            rows = bad.nonzero().tolist()
            raise ValueError(
                f"depth_weights: each row must sum to 1 (±{WEIGHT_SUM_TOLERANCE}); rows {rows} "
                f"sum to {sums[bad].tolist()}"
            )

    def _weights_per_head(
        self, batch: int, depth_index: Tensor | None, depth_weights: Tensor | None
    ) -> Tensor:
        """(B, H, D) weights over depth from a validated hard or soft choice (hard -> one-hot)."""
        if depth_index is not None:
            index = depth_index.long()
            if index.dim() == 1:
                index = index[:, None].expand(batch, self.heads)
            return F.one_hot(index, self.depth).to(self.q_proj.weight.dtype)
        assert depth_weights is not None
        weights = depth_weights.to(self.q_proj.weight.dtype)
        return weights if weights.dim() == 3 else weights[:, None, :].expand(-1, self.heads, -1)


class MAWAttention(_AttentionBase):
    """Multi-head attention with ``depth`` different attention patterns per head.

    Standard ``Q, K, V`` projections ``hidden -> heads·head_dim`` and an output projection
    back to ``hidden``. Depth ``d`` of head ``h`` transforms the shared per-head query and key
    with its own ``head_dim × head_dim`` matrices (parameters ``depth_query``, ``depth_key`` of
    shape ``(H, D, head_dim, head_dim)``)::

        Q_d = Q W_q[h, d],  K_d = K W_k[h, d],  A_d = softmax(Q_d K_dᵀ / √head_dim + mask)

    **Why per-head transforms, not a full projection.** A full depth-wise projection
    ``hidden -> hidden·D`` for Q and for K costs ``2 · 2·B·L·hidden·hidden·D`` FLOPs, while every
    depth's attention scores cost ``2·B·H·D·L²·head_dim = 2·B·D·L²·hidden``: the projection is
    ``2·hidden/L`` times the attention (6× at hidden=384, L=128: 2.4 GFLOP per item at D=32,
    against 0.4 GFLOP for the scores), with ``2·D·hidden²`` parameters (9.4 M). The per-head
    transforms cost ``2 · 2·B·L·H·D·head_dim²`` FLOPs, ``2·head_dim/L`` of the attention (half
    at head_dim=32, L=128), with ``2·H·D·head_dim²`` parameters (0.8 M).

    **Cheaper still in the forward pass.** Since ``Q_d K_dᵀ = Q (W_q W_kᵀ)[h, d] Kᵀ``, the two
    small transforms are multiplied first (``H·D·head_dim³`` FLOPs, independent of batch and
    length) and the product is applied to the query only: ``K`` is never copied per depth, and
    the transformed queries of all depths come out of one matmul (see ``_AttentionBase``).
    Soft mixtures use linearity, ``(Σ_d w_d A_d) V = Σ_d w_d (A_d V)``, so the attended values
    of all depths come from one fused SDPA call without materialising the 5D tensor; a hard
    choice gathers the chosen transforms and calls SDPA once for that depth only.

    **Initialisation.** Identity plus Gaussian noise of standard deviation
    ``init_noise / √head_dim``, so the noise moves a query or key by about ``init_noise`` times
    its length: near identity so every depth starts close to the attention pattern of the layer
    it is placed on, but different enough that depth slices differ at initialisation (seed
    002's expand-then-mean made them identical, seed 000 copied one Q/K into every depth).

    Args:
        hidden: model width of ``x``.
        heads: number of attention heads ``H``.
        depth: number of depths ``D`` (the seeds use 32; 8 is their recommended balance).
        head_dim: per-head width.
        dropout: dropout on attention probabilities during training.
        init_noise: scale of the noise added to the identity in the depth-wise transforms.
        temperature_spread: a structural prior making depths sharp ↔ diffuse by construction:
            depth ``d`` divides its logits by ``τ_d = 2^{spread·(d/(D-1) - 1/2)}`` (depth 0 the
            sharpest). 0 = every depth at temperature 1. Folded into the depth transforms, so
            every path (hard, soft, 5D, compressed) sees it at no cost.
        locality: a structural prior making depths local ↔ global by construction, as ALiBi
            does per head: depth ``d`` adds ``-m_d·|i - j|`` to its logits, with
            ``m_d = locality · 2^{-8d/(D-1)}`` (depth 0 the most local, logits per token of
            distance). From the CLS row, whose pair is ``[CLS] query [SEP] doc``, a local
            depth reads the query and the document's start, a global one the whole pair. 0 = no
            prior (and no extra work); otherwise SDPA gets a float mask per depth.
    """

    def __init__(
        self,
        hidden: int,
        heads: int,
        depth: int,
        head_dim: int,
        dropout: float = 0.0,
        init_noise: float = 0.5,
        temperature_spread: float = 0.0,
        locality: float = 0.0,
    ) -> None:
        super().__init__(hidden, heads, depth, head_dim, dropout)
        if init_noise < 0:
            raise ValueError(f"MAWAttention: init_noise must be >= 0, got {init_noise}")
        if locality < 0:
            raise ValueError(f"MAWAttention: locality must be >= 0, got {locality}")
        self.locality = float(locality)
        self.depth_slope.copy_(locality * 2.0 ** (-8.0 * torch.arange(depth) / max(depth - 1, 1)))
        position = torch.arange(depth, dtype=torch.float32) / max(depth - 1, 1) - 0.5
        # (D,): 1/τ_d, each depth's logit scale; a function of the constructor's arguments,
        # so not stored in checkpoints.
        self.register_buffer(
            "depth_scale", 2.0 ** (-temperature_spread * position), persistent=False
        )
        eye = torch.eye(head_dim).expand(heads, depth, head_dim, head_dim)
        noise_std = init_noise / math.sqrt(head_dim)
        # (H, D, head_dim, head_dim)
        self.depth_query = nn.Parameter(eye + noise_std * torch.randn(eye.shape))
        self.depth_key = nn.Parameter(eye + noise_std * torch.randn(eye.shape))

    def _depth_queries(self, query: Tensor, depths: slice | None = None) -> Tensor:
        side_by_side = self._side_by_side(depths if depths is not None else slice(None))
        # An einsum, not ``query @ side_by_side``: matmul would copy the transforms once per item.
        depth_queries = torch.einsum("bhli,hij->bhlj", query, side_by_side)
        return depth_queries.unflatten(-1, (-1, self.head_dim))  # (B, H, Lq, D', hd)

    def _side_by_side(self, depths: slice) -> Tensor:
        """(H, hd, D'·hd): ``W_q W_kᵀ / (τ_d √hd)`` per head and depth, the depths side by side,
        so that one matmul transforms Q for all of them."""
        query_t, key_t = self.depth_query[:, depths], self.depth_key[:, depths]
        scale = self.depth_scale[depths][None, :, None, None] * (self.head_dim**-0.5)
        transform = (query_t @ key_t.transpose(-1, -2)) * scale  # (H, D', hd, hd)
        heads, n_depth, head_dim, _ = transform.shape
        return transform.permute(0, 2, 1, 3).reshape(heads, head_dim, n_depth * head_dim)

    def _mixed_values(
        self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor, weights: Tensor
    ) -> Tensor:
        """(B, H, L, hd): ``Σ_d w_d A_d V`` for (B, H, D) weights, one SDPA call over all depths
        per block of items.

        Blocks of items (never of depths) keep each block's ``(b, H, L, D, hd)`` temporaries
        near ``SOFT_BLOCK_BYTES``: on CPU, fresh allocations of tens of MB cost page faults
        comparable to the arithmetic (20-30% of this path at B=8, L=128, D=32, measured with
        scripts/bench_attention.py).
        """
        batch, heads, length, head_dim = query.shape
        per_item = heads * length * self.depth * head_dim * query.element_size()
        block = max(1, SOFT_BLOCK_BYTES // per_item)
        parts = []
        local = self._locality(slice(None), length, self.depth_slope)
        for first in range(0, batch, block):
            items = slice(first, first + block)
            depth_queries = self._depth_queries(query[items])  # (b, H, L, D, hd)
            values = self._depth_values(depth_queries, key[items], value[items], mask[items], local)
            parts.append((weights[items, :, None, None, :] @ values).squeeze(3))  # (b, H, L, hd)
        return torch.cat(parts)

    def outputs_per_depth(self, x: Tensor, key_padding_mask: Tensor) -> Iterator[Tensor]:
        """Yield, for d = 0 … D-1, the (B, L, hidden) output of every item under hard depth d:
        ``forward(x, mask, depth_index=d)`` up to float rounding (tested), with Q, K and V
        projected once for all depths rather than once per depth (the 2-layer stack's tables
        need layer 1's output under every depth: issue 20)."""
        _check_mask(x, key_padding_mask)
        query, key, value = self._projections(x)
        for depth in range(self.depth):
            depths = slice(depth, depth + 1)
            local = self._locality(slice(None), x.shape[1], self.depth_slope[depths])
            attended = self._depth_values(
                self._depth_queries(query, depths), key, value, key_padding_mask, local
            )  # (B, H, L, 1, hd)
            yield self.merge_heads(attended.squeeze(3).transpose(1, 2))

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Tensor,
        depth_index: Tensor | None = None,
        depth_weights: Tensor | None = None,
        return_attention: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend with the chosen depth(s).

        Args:
            x: (B, L, hidden) hidden states.
            key_padding_mask: (B, L) bool, True for real tokens.
            depth_index: hard choice, (B,) one depth per item or (B, H) one per head.
            depth_weights: soft choice, (B, D) non-negative weights, each row summing to 1, or
                (B, H, D) for a mixture per head.
            return_attention: also return the full 5D attention in the public layout
                (B, H, Lq, Lk, D) (a permuted view of the internal tensor).

        Returns:
            (output (B, L, hidden), attention or None). Exactly one of ``depth_index`` and
            ``depth_weights`` must be given (``ValueError`` otherwise).
        """
        _check_mask(x, key_padding_mask)
        batch = x.shape[0]
        self._check_selection(batch, depth_index, depth_weights)
        query, key, value = self._projections(x)

        public = None
        if return_attention:
            bias = self._mask_bias(key_padding_mask, x.dtype)
            attention = self._scores_from(query, key, bias).softmax(dim=-1)  # (B, H, L, D, L)
            weights = self._weights_per_head(batch, depth_index, depth_weights)  # (B, H, D)
            mixed = (weights[:, :, None, None, :] @ attention).squeeze(3)  # (B, H, Lq, Lk)
            attended = F.dropout(mixed, p=self._dropout_p()) @ value
            public = attention.transpose(-1, -2)
        elif depth_weights is not None:
            weights = self._weights_per_head(batch, None, depth_weights)  # (B, H, D)
            attended = self._mixed_values(query, key, value, key_padding_mask, weights)
        else:
            assert depth_index is not None
            index = depth_index.long()
            index = index[:, None].expand(batch, self.heads) if index.dim() == 1 else index
            head_ids = torch.arange(self.heads, device=x.device)[None, :]
            # (B, H, hd, hd): only the chosen depth's transforms, gathered before any product.
            chosen_q = self.depth_query[head_ids, index]
            chosen_k = self.depth_key[head_ids, index]
            scale = self.depth_scale[index][:, :, None, None] * (self.head_dim**-0.5)
            transform = (chosen_q @ chosen_k.transpose(-1, -2)) * scale
            chosen_queries = (query @ transform).unsqueeze(3)  # (B, H, L, 1, hd)
            local = self._locality(slice(None), x.shape[1], self.depth_slope[index][..., None])
            attended = self._depth_values(chosen_queries, key, value, key_padding_mask, local)
            attended = attended.squeeze(3)
        return self.merge_heads(attended.transpose(1, 2)), public


class NonMAWAttention(_AttentionBase):
    """The standard 4D multi-head attention baseline, with the MAW layer's interface.

    Same projections and sizes as :class:`MAWAttention` without the depth-wise transforms; its
    depth axis has size 1, so ``depth_index`` must be 0 and ``depth_weights`` a column of ones.
    The forward pass is :func:`torch.nn.functional.scaled_dot_product_attention`.

    Args:
        hidden: model width of ``x``.
        heads: number of attention heads.
        depth: ignored (this layer has one attention pattern); accepted so that both layers
            are built from one config.
        head_dim: per-head width.
        dropout: dropout on attention probabilities during training.
    """

    def __init__(
        self, hidden: int, heads: int, depth: int = 1, head_dim: int = 64, dropout: float = 0.0
    ) -> None:
        super().__init__(hidden, heads, 1, head_dim, dropout)

    def _depth_queries(self, query: Tensor, depths: slice | None = None) -> Tensor:
        return (query * self.head_dim**-0.5).unsqueeze(3)  # (B, H, Lq, 1, hd)

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Tensor,
        depth_index: Tensor | None = None,
        depth_weights: Tensor | None = None,
        return_attention: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Standard attention; the same arguments and returns as :meth:`MAWAttention.forward`.

        With ``return_attention`` the attention is computed explicitly and returned as
        (B, H, Lq, Lk, 1); otherwise PyTorch's fused SDPA kernel is used.
        """
        _check_mask(x, key_padding_mask)
        self._check_selection(x.shape[0], depth_index, depth_weights)
        query, key, value = self._projections(x)
        public = None
        if return_attention:
            bias = self._mask_bias(key_padding_mask, x.dtype)
            attention = self._scores_from(query, key, bias).softmax(dim=-1)  # (B, H, L, 1, L)
            attended = F.dropout(attention.squeeze(3), p=self._dropout_p()) @ value
            public = attention.transpose(-1, -2)
        else:
            attended = F.scaled_dot_product_attention(
                query,
                key,
                value,
                attn_mask=key_padding_mask[:, None, None, :],
                dropout_p=self._dropout_p(),
            )
        return self.merge_heads(attended.transpose(1, 2)), public


# -- compressed observations -------------------------------------------------------------------


def _check_compress_args(pool: int, depth_chunk: int, focus_fraction: float) -> None:
    if pool < 1:
        raise ValueError(f"compress_attention: pool must be >= 1, got {pool}")
    if depth_chunk < 1:
        raise ValueError(f"compress_attention: depth_chunk must be >= 1, got {depth_chunk}")
    if not 0.0 < focus_fraction <= 1.0:
        raise ValueError(
            f"compress_attention: focus_fraction must be in (0, 1], got {focus_fraction}"
        )


def _focus_keys(n_valid: Tensor, focus_fraction: float) -> Tensor:
    """(B,) number of top keys whose mass is the focus: ceil(fraction · n_valid), at least 1."""
    return torch.ceil(n_valid.to(torch.float64) * focus_fraction).long().clamp(min=1)


def _top_mass(values: Tensor, count: int) -> Tensor:
    """(...,) the sum of the ``count`` largest entries along the last axis.

    On CPU through numpy's introselect (``np.partition``): 3.7× faster than ``torch.topk`` on
    the observation's rows of ~50 keys (measured; torch's CPU top-k sorts (value, index) pairs
    row by row), and the focus's top-k was the tables' most expensive step (issue 20).
    """
    if values.device.type != "cpu":
        return values.topk(count, dim=-1, sorted=False).values.sum(dim=-1)
    largest = np.partition(values.numpy(), -count, axis=-1)[..., -count:]
    return torch.from_numpy(largest.sum(axis=-1))


def _pool_matrix(key_padding_mask: Tensor, pool: int, dtype: torch.dtype) -> Tensor:
    """(B, pool, L) averaging weights: row ``i`` is adaptive-average-pool bin ``i`` of the valid
    positions of each item.

    Bins follow :func:`torch.nn.functional.adaptive_avg_pool1d` on the item's valid tokens taken
    in order: bin ``i`` of ``n`` tokens covers ranks ``[floor(i·n/P), ceil((i+1)·n/P))``. Since
    each 2D bin is a rectangle, ``P A Pᵀ`` is exactly ``adaptive_avg_pool2d`` of the valid
    ``n × n`` block, whatever the padding length.
    """
    mask = key_padding_mask
    n_valid = mask.sum(dim=1, keepdim=True)  # (B, 1)
    rank = mask.long().cumsum(dim=1) - 1  # (B, L): position among valid tokens
    bins = torch.arange(pool, device=mask.device)[None, :]  # (1, P)
    start = (bins * n_valid) // pool  # (B, P)
    end = ((bins + 1) * n_valid + pool - 1) // pool
    member = (
        mask[:, None, :]
        & (rank[:, None, :] >= start[:, :, None])
        & (rank[:, None, :] < end[:, :, None])
    )  # (B, P, L)
    return member.to(dtype) / (end - start).to(dtype)[:, :, None]


def compress_attention(
    attention_module: MAWAttention | NonMAWAttention,
    x: Tensor,
    key_padding_mask: Tensor,
    pool: int,
    depth_chunk: int = 2,
    focus_fraction: float = 0.1,
) -> dict[str, Tensor]:
    """Compressed observation of every depth's attention, streamed depth-chunk by depth-chunk.

    Only ``(b, H, L', depth_chunk, L')`` attention exists at a time, never the whole 5D tensor.
    Runs without gradient: the observation is a router's input, not something to train through.
    Works for :class:`MAWAttention` and :class:`NonMAWAttention` (D = 1).

    Returns, with ``n`` the item's number of valid tokens:

    - ``"observation"`` (B, D, H, pool, pool): each attention map restricted to valid query
      rows and valid keys, adaptive-average-pooled to ``pool × pool``; padding is excluded by
      averaging masks (see ``_pool_matrix``), so padding length does not change it.
    - ``"entropy"`` (B, D, H) in [0, 1]: mean over valid query rows of the row entropy divided
      by ``log n`` (0 when n = 1).
    - ``"focus"`` (B, D, H) in [0, 1]: mean over valid query rows of the attention mass on the
      top ``max(1, ceil(focus_fraction · n))`` keys.

    Items are compressed in groups that read the same number of top keys, each group cut to
    its longest item (``L'``): at ``focus_fraction`` 0.1 a group's lengths lie within 10 tokens,
    so little padding is computed (issue 20: at max length 64, nave-kjv pairs hold 46.5 tokens
    on average), and the focus is one ``topk`` of that exact size.
    """
    _check_compress_args(pool, depth_chunk, focus_fraction)
    _check_mask(x, key_padding_mask)
    batch, length, _ = x.shape
    depth, heads = attention_module.depth, attention_module.heads
    with torch.no_grad():
        top_k = _focus_keys(key_padding_mask.sum(dim=1), focus_fraction)  # (B,)
        positions = torch.arange(1, length + 1, device=x.device)
        extent = (key_padding_mask * positions).amax(dim=1)  # (B,) one past the last valid key
        out = {
            "observation": x.new_empty(batch, depth, heads, pool, pool),
            "entropy": x.new_empty(batch, depth, heads),
            "focus": x.new_empty(batch, depth, heads),
        }
        for keys in torch.unique(top_k).tolist():
            items = (top_k == keys).nonzero().flatten()
            width = int(extent[items].max())
            group = _compress_group(
                attention_module,
                x[items, :width],
                key_padding_mask[items, :width],
                pool,
                depth_chunk,
                keys,
            )
            for name, value in group.items():
                out[name][items] = value
        return out


def _compress_group(
    attention_module: MAWAttention | NonMAWAttention,
    x: Tensor,
    key_padding_mask: Tensor,
    pool: int,
    depth_chunk: int,
    focus_keys: int,
) -> dict[str, Tensor]:
    """:func:`compress_attention` of items that all read ``focus_keys`` top keys."""
    query = attention_module._split_heads(attention_module.q_proj(x))  # (b, H, L, hd)
    key = attention_module._split_heads(attention_module.k_proj(x))
    # A finite bias, not -inf: a padding key's probability is still exactly 0 (its exp()
    # underflows), but its log-probability is finite, so its p·log p is 0, not NaN.
    bias = torch.zeros(key_padding_mask.shape, dtype=x.dtype, device=x.device)
    bias.masked_fill_(~key_padding_mask, torch.finfo(x.dtype).min / 2)
    n_valid = key_padding_mask.sum(dim=1)  # (b,)
    pool_matrix = _pool_matrix(key_padding_mask, pool, x.dtype)  # (b, P, L)
    pool_rows = pool_matrix[:, None]  # (b, 1, P, Lq)
    pool_keys = pool_matrix.transpose(1, 2)  # (b, Lk, P)
    # (b, 1, Lq, 1): weights of the mean over valid query rows.
    row_weight = (key_padding_mask / n_valid[:, None]).to(x.dtype)[:, None, :, None]
    log_n = torch.log(n_valid.to(x.dtype)).clamp(min=1e-12)[:, None, None]  # (b, 1, 1)

    observations, entropies, focuses = [], [], []
    for first in range(0, attention_module.depth, depth_chunk):
        depths = slice(first, min(first + depth_chunk, attention_module.depth))
        # (b, H, Lq, c, Lk) for this chunk's c depths only.
        log_attention = attention_module._scores_from(query, key, bias, depths).log_softmax(-1)
        attention = log_attention.exp()
        batch, heads, lq, chunk, _ = attention.shape
        # One (H·Lq·c × Lk) @ (Lk × P) matmul per item: far faster than broadcasting.
        pooled_keys = torch.bmm(attention.view(batch, -1, attention.shape[-1]), pool_keys)
        pooled_keys = pooled_keys.view(batch, heads, lq, chunk * pool)
        pooled = (pool_rows @ pooled_keys).view(batch, heads, pool, chunk, pool)
        observations.append(pooled.permute(0, 3, 1, 2, 4))  # (b, c, H, P, P)
        row_entropy = -(attention * log_attention).sum(dim=-1)  # (b, H, Lq, c)
        entropies.append((row_entropy * row_weight).sum(dim=2) / log_n)  # (b, H, c)
        row_focus = _top_mass(attention, focus_keys)  # (b, H, Lq, c)
        focuses.append((row_focus * row_weight).sum(dim=2))  # (b, H, c)
    entropy = torch.cat(entropies, dim=2).transpose(1, 2)  # (b, D, H)
    entropy = torch.where((n_valid > 1)[:, None, None], entropy, torch.zeros_like(entropy))
    return {
        "observation": torch.cat(observations, dim=1),
        "entropy": entropy.clamp(0.0, 1.0),
        "focus": torch.cat(focuses, dim=2).transpose(1, 2).clamp(0.0, 1.0),
    }


def compress_attention_reference(
    attention_module: MAWAttention | NonMAWAttention,
    x: Tensor,
    key_padding_mask: Tensor,
    pool: int,
    focus_fraction: float = 0.1,
) -> dict[str, Tensor]:
    """Non-streaming reference of :func:`compress_attention`, for tests: materialise the whole
    5D attention, then compress each item's valid block with plain per-item operations
    (crop, ``adaptive_avg_pool2d``, sort). Same outputs; slow and memory-hungry by design.
    """
    _check_compress_args(pool, 1, focus_fraction)
    with torch.no_grad():
        attention = attention_module.depth_attention(x, key_padding_mask)  # (B, H, D, L, L)
        observations, entropies, focuses = [], [], []
        for item in range(x.shape[0]):
            valid = key_padding_mask[item].nonzero().flatten()
            n = len(valid)
            block = attention[item][:, :, valid][:, :, :, valid]  # (H, D, n, n)
            observations.append(F.adaptive_avg_pool2d(block, pool).transpose(0, 1))
            plogp = torch.where(block > 0, block * block.log(), torch.zeros_like(block))
            row_entropy = (
                -plogp.sum(dim=-1) / math.log(n) if n > 1 else torch.zeros(block.shape[:-1])
            )
            entropies.append(row_entropy.mean(dim=-1).transpose(0, 1))
            k = max(1, math.ceil(n * focus_fraction))
            row_focus = block.sort(dim=-1, descending=True).values[..., :k].sum(dim=-1)
            focuses.append(row_focus.mean(dim=-1).transpose(0, 1))
        return {
            "observation": torch.stack(observations),
            "entropy": torch.stack(entropies).clamp(0.0, 1.0),
            "focus": torch.stack(focuses).clamp(0.0, 1.0),
        }
