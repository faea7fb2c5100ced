"""Memory of 8 env processes on one node reading the same tables: an (uncompressed) ``.npz``
loaded into each process (the format before issue 9) vs memory-mapped ``.npy`` (today's).

Synthetic tables of ``--queries`` queries in the quick preset's shapes are written both ways.
For each format, ``--procs`` processes each open them, make ``MAW/DepthSelection-v3`` over
them and take ``--steps`` random steps; then, while all are alive, each reports its peak RSS
(VmHWM) and its PSS (every page counted once per node: shared pages are divided among the
processes that map them). The sum of PSS is what the node spends; RSS counts a shared page in
every process that touches it, so it barely moves.

    .venv/bin/python scripts/bench_tables_rss.py --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
from pathlib import Path

import numpy as np


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _pss_mb() -> float:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise KeyError("Pss")


def _open(fmt: str, path: Path):
    from maw_gym.tables import Tables

    if fmt == "mmap":
        return Tables.load(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    return Tables(**arrays, meta={})


def _env_process(fmt: str, path: Path, steps: int, barrier, results) -> None:
    import gymnasium as gym

    import maw_gym  # noqa: F401  (registers the ids)

    env = gym.make("MAW/DepthSelection-v3", tables=_open(fmt, path))
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(steps):
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    barrier.wait()  # every process is alive and has done its work
    results.put({"peak_rss_mb": _status_mb("VmHWM"), "pss_mb": _pss_mb()})
    barrier.wait()


def measure(fmt: str, path: Path, procs: int, steps: int) -> dict:
    context = mp.get_context("spawn")
    barrier, results = context.Barrier(procs), context.Queue()
    workers = [
        context.Process(target=_env_process, args=(fmt, path, steps, barrier, results))
        for _ in range(procs)
    ]
    for worker in workers:
        worker.start()
    rows = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    return {
        "format": fmt,
        "processes": procs,
        "max_peak_rss_mb": max(row["peak_rss_mb"] for row in rows),
        "sum_peak_rss_mb": sum(row["peak_rss_mb"] for row in rows),
        "sum_pss_mb": sum(row["pss_mb"] for row in rows),
    }


def main() -> None:
    from maw_gym.presets import get_preset
    from maw_gym.tables import Tables

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    quick = get_preset("quick")
    tables = Tables.synthetic(
        num_queries=args.queries,
        depth=quick.depth,
        heads=quick.heads,
        pool=quick.pool,
        candidates=quick.candidates,
    )
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as scratch:
        npz, mmap = Path(scratch) / "tables.npz", Path(scratch) / "tables"
        np.savez(npz, **tables.arrays())
        tables.save(mmap)
        size_mb = sum(array.nbytes for array in tables.arrays().values()) / 2**20
        rows = [
            measure(fmt, path, args.procs, args.steps)
            for fmt, path in (("npz", npz), ("mmap", mmap))
        ]
    result = {"queries": args.queries, "tables_mb": size_mb, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"tables: {size_mb:.0f} MB ({args.queries} queries, quick shapes)")
    for row in rows:
        print(
            f"{row['format']:5} x{row['processes']}: node total (sum PSS) "
            f"{row['sum_pss_mb']:.0f} MB, peak RSS per process {row['max_peak_rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
