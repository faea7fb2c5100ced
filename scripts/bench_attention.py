"""Benchmark the batched 5D MAW attention against the seeds' per-depth loop and a D×SDPA bound.

Usage: ``python scripts/bench_attention.py [--json] [--repeats N]``

For each shape, side by side in one process (warm-up first, then the median of ``--repeats``):

- ``maw_soft`` / ``maw_hard``: :class:`MAWAttention` forward with soft depth weights / a hard
  depth index per item (projections included);
- ``maw_soft_core``: the soft forward's attention part alone (depth queries, SDPA over all
  depths, mixing), like-for-like with ``sdpa_bound``;
- ``seed_loop``: the seeds' way, a Python loop over depth projecting Q and K per depth and
  writing each depth's softmax into a preallocated ``(B, H, L, L, D)`` tensor, then mixing with
  the same weights;
- ``sdpa_bound``: D calls of ``F.scaled_dot_product_attention`` on precomputed per-depth
  ``(B, H, L, head_dim)`` queries and keys (attention alone, no projections: a lower bound on
  computing D different attention patterns with PyTorch's fused kernel);
- ``compress_streaming`` / ``compress_materialised``: :func:`compress_attention` with
  ``depth_chunk=2`` versus ``depth_chunk=D`` (the whole 5D tensor at once, same arithmetic).

Everything runs in inference mode (no autograd graph). Peak memory is measured with torch's
CPU memory profiler: ``torch.profiler`` with ``profile_memory=True`` records every allocation
and free of torch's CPU allocator; the peak is the maximum running sum of those events during
one call (bytes allocated by the call on top of what existed before it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from maw_gym.encoder.attention import MAWAttention, compress_attention

POOL = 8


@dataclass(frozen=True)
class Shape:
    """One benchmark configuration."""

    batch: int
    heads: int
    length: int
    head_dim: int
    depth: int

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim


SHAPES = (Shape(8, 12, 128, 32, 32), Shape(8, 12, 64, 32, 8))


def median_seconds(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each case over ``repeats`` rounds, after one warm-up round.

    Cases are interleaved round by round, so that load from other processes on a shared machine
    falls on all of them alike instead of on whichever case happened to run at a busy moment.
    """
    for case in cases.values():
        case()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, case in cases.items():
            start = time.perf_counter()
            case()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_bytes(function: Callable[[], object]) -> int:
    """Peak bytes allocated by torch's CPU allocator during one call (see module docstring)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        function()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def seed_loop(
    layer: MAWAttention, x: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The seeds' per-depth loop (same parameters and weights as ``layer``)."""
    batch, length, _ = x.shape
    heads, head_dim = layer.heads, layer.head_dim

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, length, heads, head_dim).transpose(1, 2)

    query, key, value = split(layer.q_proj(x)), split(layer.k_proj(x)), split(layer.v_proj(x))
    attention = torch.empty(batch, heads, length, length, layer.depth)  # (B, H, Lq, Lk, D)
    padding = ~mask[:, None, None, :]
    for d in range(layer.depth):
        query_d = query @ layer.depth_query[:, d]
        key_d = key @ layer.depth_key[:, d]
        scores = query_d @ key_d.transpose(-1, -2) / head_dim**0.5
        attention[..., d] = scores.masked_fill(padding, float("-inf")).softmax(dim=-1)
    mixed = (attention * weights[:, None, None, None, :]).sum(dim=-1)
    return layer.out_proj((mixed @ value).transpose(1, 2).flatten(-2))


def bench_shape(shape: Shape, repeats: int) -> dict[str, object]:
    """Times (s), peak memory (bytes) and ratios for one shape."""
    torch.manual_seed(0)
    layer = MAWAttention(shape.hidden, shape.heads, shape.depth, shape.head_dim).eval()
    x = torch.randn(shape.batch, shape.length, shape.hidden)
    # Realistic padding: item lengths spread between half and all of L.
    lengths = torch.linspace(shape.length // 2, shape.length, shape.batch).long()
    mask = torch.arange(shape.length)[None, :] < lengths[:, None]
    weights = torch.softmax(torch.randn(shape.batch, shape.depth), dim=1)
    index = torch.randint(shape.depth, (shape.batch,))

    with torch.inference_mode():
        split = layer._projections(x)
        queries = [split[0] @ layer.depth_query[:, d] for d in range(shape.depth)]
        keys = [split[1] @ layer.depth_key[:, d] for d in range(shape.depth)]
        sdpa_mask = mask[:, None, None, :]

        def sdpa_bound() -> list[torch.Tensor]:
            return [
                F.scaled_dot_product_attention(q, k, split[2], attn_mask=sdpa_mask)
                for q, k in zip(queries, keys, strict=True)
            ]

        weights_per_head = weights[:, None, :].expand(-1, shape.heads, -1)

        def maw_core() -> torch.Tensor:
            # The MAW soft forward's attention part alone, like-for-like with ``sdpa_bound``:
            # depth queries, SDPA over all depths, mixing (no Q/K/V/output projections).
            return layer._mixed_values(*split, mask, weights_per_head)

        cases: dict[str, Callable[[], object]] = {
            "maw_soft": lambda: layer(x, mask, depth_weights=weights),
            "maw_soft_core": maw_core,
            "maw_hard": lambda: layer(x, mask, depth_index=index),
            "seed_loop": lambda: seed_loop(layer, x, mask, weights),
            "sdpa_bound": sdpa_bound,
            "compress_streaming": lambda: compress_attention(layer, x, mask, POOL, depth_chunk=2),
            "compress_materialised": lambda: compress_attention(
                layer, x, mask, POOL, depth_chunk=shape.depth
            ),
        }
        torch.testing.assert_close(
            cases["maw_soft"]()[0], cases["seed_loop"](), atol=1e-4, rtol=1e-4
        )
        seconds = median_seconds(cases, repeats)
        memory = {name: peak_bytes(case) for name, case in cases.items()}
    ratios = {
        "seed_loop_over_maw_soft": seconds["seed_loop"] / seconds["maw_soft"],
        "seed_loop_over_maw_hard": seconds["seed_loop"] / seconds["maw_hard"],
        "maw_soft_over_sdpa_bound": seconds["maw_soft"] / seconds["sdpa_bound"],
        "maw_soft_core_over_sdpa_bound": seconds["maw_soft_core"] / seconds["sdpa_bound"],
        "streaming_over_materialised_peak_memory": memory["compress_streaming"]
        / memory["compress_materialised"],
        "streaming_over_materialised_time": seconds["compress_streaming"]
        / seconds["compress_materialised"],
    }
    return {"shape": vars(shape), "seconds": seconds, "peak_bytes": memory, "ratios": ratios}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (median)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared machine, multi-threaded kernels "
        "spin-wait on busy cores and their timings become noise)",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    results = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "memory_method": "torch.profiler profile_memory: peak running sum of CPU allocations",
        "shapes": [bench_shape(shape, args.repeats) for shape in SHAPES],
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"torch {results['torch']}, {results['threads']} threads; median of {args.repeats}")
    for result in results["shapes"]:
        shape = result["shape"]
        print("\nB={batch} H={heads} L={length} head_dim={head_dim} D={depth}".format(**shape))
        for name, seconds in result["seconds"].items():
            peak_mb = result["peak_bytes"][name] / 2**20
            print(f"  {name:24s} {seconds * 1e3:9.2f} ms  peak {peak_mb:9.1f} MiB")
        for name, ratio in result["ratios"].items():
            print(f"  {name:40s} {ratio:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
