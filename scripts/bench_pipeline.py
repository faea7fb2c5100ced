"""Pairs per second of each pipeline stage: today's code against this checkout's, in one run.

Stages, on the first ``--queries`` queries of ``--split`` (all their candidates):

- ``states``: MiniLM ``[CLS] q [SEP] d [SEP]`` states (``BaseEncoder.compute_pairs``, no cache);
- ``embeddings``: sentence embeddings of the queries and candidates (texts/s);
- ``scores``: the MAW reranker's candidate scores (``score_split``, no observation);
- ``tables``: the tables of the queries (``shards.scored_arrays``: MAW with observations,
  NON-MAW, the layer-2 stack if any);
- ``train_maw``, ``train_nonmaw``, ``train_stack``: one training epoch of the MAW encoder
  (past the warm-up: its router in the loop), of its NON-MAW twin and of the layer-2 stack if
  the preset has one (``train_epoch``), pairs/s;
- opt-in rows, new code only: ``states_bfloat16`` and ``embeddings_bfloat16``
  (``BaseEncoder(precision="bfloat16")``).

"Today" is the code of commit ffe2755, kept callable in ``scripts/pipeline_reference.py``
(``BaseEncoder`` at that commit's settings, batch 32, float32). Each stage runs today's code and
the new one alternately, ``--runs`` times, in one process, and keeps the median. Two such
processes run: one with libgomp's default wait policy (what a user got before) and one with
``OMP_WAIT_POLICY=PASSIVE`` (what ``maw-gym`` sets now, ``maw_gym_leaderboard.command``):
libgomp reads the policy once, when torch loads, so it cannot change inside a process.
``before`` is today's code under the default policy, ``after`` the new code under the passive
one; ``code`` and ``policy`` split the ratio into its two causes. ``differences`` holds the max
and mean absolute difference of every output, new against today (and bfloat16 against float32).

The models are the preset's shapes, freshly initialised (seed 0), unless ``--encoder`` names a
trained encoder directory: the rates depend on the shapes, not on the weights. With ``--builds``
the older rows follow: a whole split's tables built shard by shard from a cache without
states, in this process vs a local Ray cluster of ``--ray-workers`` one-thread workers.

    .venv/bin/python scripts/bench_pipeline.py --preset quick --json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

#: The models a tables shard is scored with (``shards.scored_arrays``); the stack may be absent.
TABLE_MODELS = ("maw", "nonmaw_0", "stack")
#: The two OpenMP wait policies compared (None: libgomp's default, the variable unset).
POLICIES = {"default": None, "passive": "PASSIVE"}


def stage_rates(args: argparse.Namespace) -> dict:
    """Median rates of today's and the new code for every stage, in this process."""
    sys.path.insert(0, str(Path(__file__).parent))
    import pipeline_reference as reference

    from maw_gym.base_encoder import BaseEncoder
    from maw_gym.encoder.reranker import score_split
    from maw_gym.encoder.shards import scored_arrays
    from maw_gym.pipeline import document_text, sampled_split, split_inputs
    from maw_gym.presets import get_preset

    preset = get_preset(args.preset)
    inputs = split_inputs(
        args.dataset, args.split, preset.inputs, rows=(0, args.queries), device=args.device
    )
    data = sampled_split(args.dataset, args.split, preset.data)
    pairs = [
        (data.queries[qid], document_text(data.corpus.get(doc, {})) if real else "")
        for qid, docs, mask in zip(
            inputs.query_ids, inputs.candidate_ids, inputs.candidate_mask, strict=True
        )
        for doc, real in zip(docs, mask, strict=True)
    ]
    queries, docs = [query for query, _ in pairs], [doc for _, doc in pairs]
    texts = sorted(set(queries)) + sorted({doc for doc in docs if doc})
    encoders = {
        "today": BaseEncoder(
            max_length=preset.states.max_length, batch_size=32, device=args.device
        ),
        "new": BaseEncoder(max_length=preset.states.max_length, device=args.device),
        "bfloat16": BaseEncoder(
            max_length=preset.states.max_length, device=args.device, precision="bfloat16"
        ),
    }
    models = _models(args, preset, inputs)
    table_models = [models.get(name) for name in TABLE_MODELS]

    def today(run: Callable[[], object]) -> Callable[[], object]:
        def wrapped() -> object:
            with reference.todays_code():
                return run()

        return wrapped

    stages: dict[str, tuple[int, dict[str, Callable[[], object]]]] = {
        "states": (
            len(pairs),
            {
                variant: (lambda e=encoders[variant]: e.compute_pairs(queries, docs))
                for variant in ("today", "new", "bfloat16")
            },
        ),
        "embeddings": (
            len(texts),
            {
                variant: (lambda e=encoders[variant]: e.compute_embeddings(texts))
                for variant in ("today", "new", "bfloat16")
            },
        ),
        "scores": (
            len(pairs),
            {
                "today": today(lambda: reference.score_split(models["maw"], inputs)),
                "new": lambda: score_split(models["maw"], inputs),
            },
        ),
        "tables": (
            len(pairs),
            {
                "today": today(lambda: reference.scored_arrays(inputs, *table_models)),
                "new": lambda: scored_arrays(inputs, *table_models),
            },
        ),
    }
    for name in TABLE_MODELS:
        if name not in models:
            continue
        epoch, trained_pairs = _training_epoch(args, preset, inputs, name)
        stages[f"train_{name.split('_')[0]}"] = (
            trained_pairs,
            {"today": today(epoch), "new": epoch},
        )
    rates, outputs = {}, {}
    for stage, (count, variants) in stages.items():
        outputs[stage] = {variant: run() for variant, run in variants.items()}  # warm-up
        seconds: dict[str, list[float]] = {variant: [] for variant in variants}
        for _ in range(args.runs):
            for variant, run in variants.items():
                seconds[variant].append(_timed(run, args.device))
        rates[stage] = {v: count / statistics.median(s) for v, s in seconds.items()}
    return {
        "pairs": len(pairs),
        "texts": len(texts),
        "load_average": os.getloadavg(),
        "rates": rates,
        "differences": _differences(outputs),
    }


def _models(args: argparse.Namespace, preset, inputs) -> dict:
    """The encoder's models (``--encoder``), or the preset's freshly initialised (seed 0)."""
    from maw_gym.encoder.reranker import MAWReranker
    from maw_gym.encoder.train import TrainedEncoder, table_models

    if args.encoder:
        return TrainedEncoder.load(Path(args.encoder), device=args.device).models
    torch.manual_seed(0)
    return {
        name: MAWReranker(config).to(args.device).eval()
        for name, (config, _) in table_models(preset.encoder, preset.inputs).items()
        if name in TABLE_MODELS
    }


def _training_epoch(args: argparse.Namespace, preset, inputs, name: str):
    """(a function running one epoch of model ``name`` from the same start, the pairs it
    trains on). The MAW model's epoch is past the warm-up, so its router is in the loop."""
    from maw_gym.encoder.reranker import MAWReranker, train_epoch
    from maw_gym.encoder.train import deterministic_torch, table_models

    architecture, config = table_models(preset.encoder, preset.inputs)[name]
    torch.manual_seed(config.seed)
    start = MAWReranker(architecture).to(args.device)
    teach = np.flatnonzero(inputs.has_relevant())

    def epoch() -> dict[str, torch.Tensor]:
        model = copy.deepcopy(start)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
        generator = torch.Generator().manual_seed(config.seed)
        with deterministic_torch():
            specialise = model.depth > 1
            train_epoch(model, inputs, teach, optimizer, config, specialise, generator, name)
        return model.state_dict()

    return epoch, int(len(teach) * inputs.candidate_mask.shape[1])


def _differences(outputs: dict[str, dict[str, object]]) -> dict[str, dict]:
    """Max and mean absolute difference of every float output, new (and bfloat16) against
    today's: states, embeddings, each tables field, each parameter after one epoch."""
    result: dict[str, dict] = {}
    for stage, variants in outputs.items():
        for variant in ("new", "bfloat16"):
            if variant not in variants:
                continue
            pairs = _float_arrays(variants["today"], variants[variant])
            key = stage if variant == "new" else f"{stage}_{variant}"
            result[key] = {
                name: {
                    "max_abs": float(np.abs(a - b).max()) if a.size else 0.0,
                    "mean_abs": float(np.abs(a - b).mean()) if a.size else 0.0,
                    "max_value": float(np.abs(a).max()) if a.size else 0.0,
                }
                for name, (a, b) in pairs.items()
            }
    return result


def _float_arrays(today: object, new: object) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Matching float arrays of two outputs of one stage, as float64 numpy, by name."""
    if isinstance(today, tuple):  # (states, mask)
        return {"states": (_numpy(today[0]), _numpy(new[0]))}
    if isinstance(today, np.ndarray):
        return {"embeddings": (_numpy(today), _numpy(new))}
    if not isinstance(today, dict):  # SplitScores
        today, new = vars(today), vars(new)
    return {
        name: (_numpy(value), _numpy(new[name]))
        for name, value in today.items()
        if value is not None and _numpy(value).dtype.kind == "f"
    }


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    value = np.asarray(value)
    return value.astype(np.float64) if value.dtype.kind == "f" else value


def build_rate(args: argparse.Namespace, ray_workers: int) -> dict:
    """A whole split's tables from a cache without states: pairs/s and peak RSS."""
    from maw_gym.build import build_tables, resolve_encoder
    from maw_gym.presets import get_preset

    preset = get_preset(args.preset)
    encoder_dir = resolve_encoder(args.dataset, preset, args.encoder)
    if ray_workers:
        import ray

        torch.set_num_threads(1)  # one CPU per shard task (ShardJob.threads)
        # Workers inherit this process's environment: the fresh cache and PYTHONPATH.
        ray.init(num_cpus=ray_workers, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    tables = build_tables(
        args.dataset,
        args.split,
        preset.inputs,
        encoder_dir,
        device=args.device,
        ray_address="local" if ray_workers else None,
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


def _timed(run: Callable[[], object], device: str) -> float:
    started = time.perf_counter()
    run()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _cache_without_states(scratch: Path) -> Path:
    """A fresh cache that links the real cache's datasets, BM25, embeddings and encoders, not
    its states or tables, so that states are computed here without rebuilding BM25 indexes."""
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


def run_child(args: argparse.Namespace) -> dict:
    """One row (``--child stages:POLICY`` or ``build:WORKERS``), in this child process."""
    os.environ["MAW_GYM_CACHE"] = str(_cache_without_states(Path(args.scratch)))
    kind, value = args.child.split(":")
    row = stage_rates(args) if kind == "stages" else build_rate(args, int(value))
    driver_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["driver_peak_rss_mb"] = driver_mb
    row["peak_rss_mb"] = driver_mb + row.get("worker_peak_rss_mb", 0.0)
    return {
        "kind": kind,
        "value": value,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        **row,
    }


def _child(args: argparse.Namespace, config: str, policy: str | None, scratch: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    command = [sys.executable, __file__, *sys.argv[1:], "--child", config, "--scratch", scratch]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{config} ({policy or 'default'} policy) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(children: dict[str, dict]) -> dict[str, dict]:
    """Per stage: before (today's code, default policy), after (new code, passive policy),
    their ratio, and its two causes measured separately."""
    default, passive = children["default"]["rates"], children["passive"]["rates"]
    stages = {}
    for stage, rates in passive.items():
        before = default[stage]["today"]
        row = {
            "before": before,
            "after": rates["new"],
            "ratio": rates["new"] / before,
            "code": rates["new"] / rates["today"],
            "policy": rates["today"] / before,
        }
        if "bfloat16" in rates:
            row["after_bfloat16"] = rates["bfloat16"]
            row["ratio_bfloat16"] = rates["bfloat16"] / before
        stages[stage] = row
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="nave-kjv")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--split", default="dev", help="split whose first queries are used")
    parser.add_argument("--queries", type=int, default=32, help="queries the stages run on")
    parser.add_argument("--encoder", help="a trained encoder directory (default: untrained)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per stage (median)")
    parser.add_argument("--builds", action="store_true", help="also time whole-split builds")
    parser.add_argument("--shard-queries", type=int, default=50, help="queries per shard")
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one row, in a child process
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as scratch:
        children = {
            name: _child(args, "stages:0", policy, scratch) for name, policy in POLICIES.items()
        }
        builds = []
        if args.builds:
            for workers in (0, args.ray_workers):
                builds.append(_child(args, f"build:{workers}", "PASSIVE", scratch))
    result = {
        "preset": args.preset,
        "split": args.split,
        "queries": args.queries,
        "device": args.device,
        "encoder": args.encoder or "untrained (seed 0)",
        "cpu_threads": torch.get_num_threads(),
        "stages": summary(children),
        "processes": children,
        "builds": builds,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'stage':14} {'before':>9} {'after':>9} {'ratio':>7} {'code':>6} {'policy':>7}  /s")
    for stage, row in result["stages"].items():
        print(
            f"{stage:14} {row['before']:9.1f} {row['after']:9.1f} {row['ratio']:6.2f}x "
            f"{row['code']:5.2f}x {row['policy']:6.2f}x"
            + (
                f"  bfloat16 {row['after_bfloat16']:.1f} ({row['ratio_bfloat16']:.2f}x)"
                if "after_bfloat16" in row
                else ""
            )
        )
    for row in builds:
        print(
            f"build ray={row['value']} {row['pairs_per_s']:8.1f} pairs/s, "
            f"peak RSS {row['peak_rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
