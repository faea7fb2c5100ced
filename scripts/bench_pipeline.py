"""Pairs per second of the encoder pipeline, per device, single process vs a local Ray cluster.

Two kinds of rows, each measured in its own child process (so its peak RSS is its own):

- ``stages``: on one shard (the first ``--shard-queries`` queries of ``--split``), the median
  over ``--runs`` of MiniLM states (``BaseEncoder.compute_pairs``, no cache), the MAW
  reranker's forward pass (``score_split``) and the whole tables computation of the shard
  (``shards.scored_arrays``: MAW with observations, NON-MAW, the layer-2 stack if any);
- ``build``: a whole split's tables built shard by shard (``build_tables``), states included,
  in this process or on a local Ray cluster of ``--ray-workers`` one-thread workers, from a
  cache without states or tables (the dataset and BM25 caches are reused). Ray's start-up is
  not timed; its workers' first model loads are. Peak RSS adds up the driver and the workers.

CUDA rows appear only where ``torch.cuda.is_available()``. The preset's encoder must exist (it
is trained on first use) unless ``--encoder`` names one: the rates depend on the preset's shapes,
not on the weights.

    .venv/bin/python scripts/bench_pipeline.py --preset quick --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

#: The models a tables shard is scored with (``shards.scored_arrays``); the stack may be absent.
TABLE_MODELS = ("maw", "nonmaw_0", "stack")


def stage_rates(args: argparse.Namespace, device: str) -> dict:
    """Median pairs/s of each stage on the first shard of the split."""
    from maw_gym.base_encoder import BaseEncoder
    from maw_gym.build import resolve_encoder
    from maw_gym.encoder.reranker import score_split
    from maw_gym.encoder.shards import scored_arrays
    from maw_gym.encoder.train import TrainedEncoder
    from maw_gym.pipeline import document_text, sampled_split, split_inputs
    from maw_gym.presets import get_preset

    preset = get_preset(args.preset)
    encoder_dir = resolve_encoder(args.dataset, preset, args.encoder)
    encoder = TrainedEncoder.load(encoder_dir, device=device)
    inputs = split_inputs(args.dataset, args.split, preset.inputs, rows=(0, args.shard_queries))
    data = sampled_split(args.dataset, args.split, preset.data)
    rows = zip(inputs.query_ids, inputs.candidate_ids, inputs.candidate_mask, strict=True)
    pairs = [
        (data.queries[qid], document_text(data.corpus.get(doc, {})) if real else "")
        for qid, docs, mask in rows
        for doc, real in zip(docs, mask, strict=True)
    ]
    queries, docs = [query for query, _ in pairs], [doc for _, doc in pairs]
    base = BaseEncoder(max_length=preset.states.max_length, device=device)
    models = encoder.models
    stages = {
        "states": lambda: base.compute_pairs(queries, docs, desc="states"),
        "reranker_forward": lambda: score_split(models["maw"], inputs),
        "tables": lambda: scored_arrays(inputs, *(models.get(n) for n in TABLE_MODELS)),
    }
    rates = {}
    for name, run in stages.items():
        run()  # warm-up (lazy CUDA kernels, allocator)
        seconds = [_timed(run, device) for _ in range(args.runs)]
        rates[f"{name}_pairs_per_s"] = len(pairs) / statistics.median(seconds)
    return {"pairs": len(pairs), **rates}


def build_rate(args: argparse.Namespace, device: str, ray_workers: int) -> dict:
    """A whole split's tables from a cache without states: pairs/s and peak RSS."""
    from maw_gym.build import build_tables, resolve_encoder
    from maw_gym.presets import get_preset

    preset = get_preset(args.preset)
    encoder_dir = resolve_encoder(args.dataset, preset, args.encoder)
    os.environ["MAW_GYM_CACHE"] = str(_cache_without_states(Path(args.scratch)))
    address = None
    if ray_workers:
        import ray

        torch.set_num_threads(1)  # one CPU per shard task (ShardJob.threads)
        # Workers inherit this process's environment: the fresh cache and PYTHONPATH.
        ray.init(num_cpus=ray_workers, include_dashboard=False, log_to_driver=False)
        address = "local"
    started = time.perf_counter()
    tables = build_tables(
        args.dataset,
        args.split,
        preset.inputs,
        encoder_dir,
        device=device,
        ray_address=address,
        shard_queries=args.shard_queries,
    )
    seconds = time.perf_counter() - started
    pairs = int(tables.candidate_mask.size)
    return {
        "pairs": pairs,
        "shards": tables.meta["shards"],
        "seconds": seconds,
        "pairs_per_s": pairs / seconds,
        "worker_peak_rss_mb": _ray_workers_peak_rss_mb() if ray_workers else 0.0,
    }


def _timed(run, device: str) -> float:
    started = time.perf_counter()
    run()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _cache_without_states(scratch: Path) -> Path:
    """A fresh cache that links the real cache's datasets, BM25 and encoders, not its states
    or tables, so a build computes states again without rebuilding the BM25 index."""
    from maw_gym.cache import cache_dir

    fresh = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=scratch))
    for entry in cache_dir().iterdir():
        if entry.is_dir() and entry.name not in ("states", "tables"):
            (fresh / entry.name).symlink_to(entry)
    return fresh


def _ray_workers_peak_rss_mb() -> float:
    """Sum of VmHWM over this session's Ray workers (``ray::`` processes), before shutdown."""
    total_kb = 0
    for proc in Path("/proc").iterdir():
        try:
            if not (proc / "cmdline").read_bytes().startswith(b"ray::"):
                continue
            if os.environ["MAW_GYM_CACHE"].encode() not in (proc / "environ").read_bytes():
                continue
            status = (proc / "status").read_text()
        except OSError:
            continue
        peak = next(line for line in status.splitlines() if line.startswith("VmHWM"))
        total_kb += int(peak.split()[1])
    return total_kb / 1024


def run_config(args: argparse.Namespace) -> dict:
    kind, device, workers = args.config.split(":")
    row = stage_rates(args, device) if kind == "stages" else build_rate(args, device, int(workers))
    driver_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["driver_peak_rss_mb"] = driver_mb
    row["peak_rss_mb"] = driver_mb + row.get("worker_peak_rss_mb", 0.0)
    return {"kind": kind, "device": device, "ray_workers": int(workers), **row}


def configs(args: argparse.Namespace) -> list[str]:
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    rows = [f"stages:{d}:0" for d in devices]
    rows += [f"build:{d}:0" for d in devices]
    rows += [f"build:cpu:{args.ray_workers}"]
    if torch.cuda.is_available():
        rows.append(f"build:cuda:{torch.cuda.device_count()}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="nave-kjv")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--split", default="dev", help="split whose tables are built")
    parser.add_argument("--encoder", help="a trained encoder directory (default: the preset's)")
    parser.add_argument("--shard-queries", type=int, default=50, help="queries per shard")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per stage (median)")
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--config", help=argparse.SUPPRESS)  # one row, in a child process
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.config:
        print(json.dumps(run_config(args)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as scratch:
        for config in configs(args):
            child = [sys.executable, __file__, *sys.argv[1:], "--config", config]
            done = subprocess.run(
                [*child, "--scratch", scratch], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise SystemExit(f"{config} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    result = {
        "preset": args.preset,
        "split": args.split,
        "shard_queries": args.shard_queries,
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for row in rows:
        rate = row.get("pairs_per_s") or row["states_pairs_per_s"]
        print(
            f"{row['kind']:6} {row['device']:4} ray={row['ray_workers']} {rate:8.1f} pairs/s "
            f"peak RSS {row['peak_rss_mb']:.0f} MB  {row}"
        )


if __name__ == "__main__":
    main()
