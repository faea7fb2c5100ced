"""Steps per second of the MAW environments: one env, SyncVectorEnv of 64, the native vector env;
and the milliseconds a rendered frame costs (``rgb_array``, ``ansi``).

    python scripts/bench_env.py [--json] [--preset synthetic|smoke|quick] [--env-id ID]

``--preset synthetic`` (default) uses random tables of the quick preset's shapes (N=800, D=8,
H=12, P=4, C=20), so it runs without an encoder; a pipeline preset loads (or builds) its real
train tables. Each figure is the median of a few timed repeats after a warm-up, with the
configurations timed round-robin; actions are pre-sampled so only the env is timed. Table
build time is measured by the tables' own build. A render figure is a step plus its frame (the
step is ~1% of it); synthetic tables have no texts, so ``ansi`` there skips the text look-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import gymnasium as gym

import maw_gym  # noqa: F401  (registers the ids)
from maw_gym.tables import Tables

QUICK_SHAPES = {"num_queries": 800, "depth": 8, "heads": 12, "pool": 4, "candidates": 20}


def load_tables(preset: str, env_id: str) -> Tables:
    if preset == "synthetic":
        return Tables.synthetic(**QUICK_SHAPES, layers="Layerwise" in env_id)
    from maw_gym.build import ensure_tables

    return ensure_tables(split="train", preset=preset)


def timed(run: Callable[[], int]) -> float:
    """Steps per second of one call of ``run`` (which returns the steps it took)."""
    started = time.perf_counter()
    steps = run()
    return steps / (time.perf_counter() - started)


def single_env_runner(
    env_id: str, tables: Tables, steps: int, render_mode: str | None = None
) -> Callable[[], int]:
    """Steps ``steps`` times; with ``render_mode``, renders after each step (a frame after a
    step shows the decision)."""
    env = gym.make(env_id, tables=tables, render_mode=render_mode)
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]

    def run() -> int:
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if render_mode is not None:
                env.render()
            if terminated or truncated:
                env.reset()
        return steps

    return run


def vector_runner(envs: gym.vector.VectorEnv, steps: int) -> Callable[[], int]:
    """Counts sub-env steps (``steps`` batched calls of ``num_envs`` each)."""
    envs.reset(seed=0)
    envs.action_space.seed(0)
    actions = [envs.action_space.sample() for _ in range(min(steps, 16))]

    def run() -> int:
        for i in range(steps):
            envs.step(actions[i % len(actions)])
        return steps * envs.num_envs

    return run


def benchmark(env_id: str, tables: Tables, repeats: int) -> dict[str, float]:
    """Median steps/s of each configuration, and median ratios of paired measurements.

    The configurations are timed round-robin within each repeat, so the load of a shared
    machine drifts over all of them alike and each ratio compares neighbouring measurements.
    """

    def sync(num_envs: int) -> gym.vector.VectorEnv:
        return gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="sync",
            tables=tables,
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        )

    def native(num_envs: int) -> gym.vector.VectorEnv:
        return gym.make_vec(
            env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", tables=tables
        )

    runners = {
        "single_env": single_env_runner(env_id, tables, steps=2000),
        "sync_vector_64": vector_runner(sync(64), steps=40),
        "native_vector_64": vector_runner(native(64), steps=400),
        "native_vector_4096": vector_runner(native(4096), steps=60),
        "render_rgb_array": single_env_runner(env_id, tables, 100, "rgb_array"),
        "render_ansi": single_env_runner(env_id, tables, 100, "ansi"),
    }
    for run in runners.values():
        run()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            rates[name].append(timed(run))
    results = {
        name: statistics.median(values)
        for name, values in rates.items()
        if not name.startswith("render_")
    }
    for mode in ("rgb_array", "ansi"):
        results[f"render_{mode}_ms_per_frame"] = 1000 / statistics.median(rates[f"render_{mode}"])
    for top, bottom in [
        ("native_vector_4096", "sync_vector_64"),
        ("native_vector_64", "sync_vector_64"),
        ("sync_vector_64", "single_env"),
    ]:
        ratios = [a / b for a, b in zip(rates[top], rates[bottom], strict=True)]
        results[f"{top}_over_{bottom}"] = statistics.median(ratios)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--preset",
        default="synthetic",
        help="synthetic (random tables, quick shapes) or a pipeline preset",
    )
    parser.add_argument(
        "--env-id",
        action="append",
        dest="env_ids",
        help="env id to time (repeatable; default: every MAW id but presets)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    env_ids = args.env_ids or [
        "MAW/DepthSelection-v3",
        "MAW/SoftDepthMixture-v3",
        "MAW/PerHeadDepth-v3",
        "MAW/LayerwiseDepth-v3",
    ]
    report: dict[str, object] = {"preset": args.preset, "envs": {}}
    for env_id in env_ids:
        tables = load_tables(args.preset, env_id)
        report["shapes"] = {
            "N": tables.num_queries,
            "D": tables.depth,
            "H": tables.heads,
            "P": tables.observation.shape[-1],
            "C": tables.candidate_mask.shape[1],
        }
        figures = benchmark(env_id, tables, args.repeats)
        report["envs"][env_id] = figures
        if not args.json:
            print(f"{env_id} ({args.preset} tables {report['shapes']}), steps/s:")
            for name, value in figures.items():
                unit = "x" if "_over_" in name else " steps/s"
                if name.endswith("_ms_per_frame"):
                    print(f"  {name:<40} {value:>14,.3f} ms")
                else:
                    print(f"  {name:<40} {value:>14,.1f}{unit}")
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
