"""Pairs per second of the base encoder on real nave-kjv (query, judged verse) pairs.

For each max length: one warm-up batch, then ``--runs`` timed passes over the same ``--pairs``
pairs without the cache (``BaseEncoder.compute_pairs``); the median is reported. Batches are
padded to their longest pair, so the figure depends on the texts, not only on the max length.

    .venv/bin/python scripts/bench_encoder.py --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from maw_gym.base_encoder import BaseEncoder
from maw_gym.data import load_split


def nave_pairs(count: int) -> tuple[list[str], list[str]]:
    """The first ``count`` (query, relevant verse) pairs of nave-kjv's test split, in id order."""
    split = load_split("nave-kjv", "test")
    pairs = [
        (split.queries[qid], split.corpus[doc_id]["text"])
        for qid in sorted(split.qrels)
        for doc_id in sorted(split.qrels[qid])
    ][:count]
    return [query for query, _ in pairs], [doc for _, doc in pairs]


def bench(max_length: int, batch_size: int, queries: list[str], docs: list[str], runs: int) -> dict:
    encoder = BaseEncoder(max_length=max_length, batch_size=batch_size)
    encoder.compute_pairs(queries[:batch_size], docs[:batch_size], desc="warm-up")
    seconds = []
    for run in range(runs):
        start = time.perf_counter()
        _, mask = encoder.compute_pairs(queries, docs, desc=f"L={max_length} run {run + 1}")
        seconds.append(time.perf_counter() - start)
    return {
        "max_length": max_length,
        "pairs_per_second": round(len(queries) / statistics.median(seconds), 1),
        "seconds": [round(value, 3) for value in seconds],
        "mean_tokens_per_pair": round(float(mask.sum(axis=1).mean()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=512, help="pairs per run (default 512)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs, median kept (default 3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    queries, docs = nave_pairs(args.pairs)
    report = {
        "pairs": len(queries),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "results": [
            bench(length, args.batch_size, queries, docs, args.runs) for length in args.lengths
        ],
    }
    if args.json:
        print(json.dumps(report))
        return
    threads = report["torch_threads"]
    print(f"{report['pairs']} nave-kjv pairs, batch {args.batch_size}, {threads} torch threads")
    for row in report["results"]:
        print(
            f"  max length {row['max_length']:>4}: {row['pairs_per_second']:>8.1f} pairs/s "
            f"(mean {row['mean_tokens_per_pair']} tokens/pair, runs {row['seconds']} s)"
        )


if __name__ == "__main__":
    main()
