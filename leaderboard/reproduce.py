"""``maw-gym tables reproduce``: rebuild an official benchmark from scratch and compare it with
the tables shipped in the package, array by array.

A rebuild runs every stage (base-encoder states, encoder training, tables) on this machine, so
it may differ from the shipped arrays in the last bits of a float (another CPU, another BLAS,
another thread count). What matters is whether such differences reach the benchmark, so the
comparison reports, per split:

- each field's max absolute difference (exact equality for ids, masks and judgments);
- the share of queries whose best depth changes, by the default env return and by NDCG@10;
- the training-free figures a leaderboard reports, on both: the best fixed depth chosen on dev
  (by return and by NDCG@10) and its test mean, and the per-query oracle's test mean.

The rebuild runs in a cache of its own (``scratch``; by default
``$MAW_GYM_CACHE/reproduce/<dataset>-<preset>-<artifact>``), empty the first time, so that no
stage is taken from the user's cache; an interrupted rebuild resumes from it, and deleting it
starts over. The agents' figures come from ``maw-gym leaderboard --rebuild`` beside ``maw-gym
leaderboard``: both are deterministic given their tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from maw_gym.build import ensure_tables, shipped
from maw_gym.cache import cache_dir, cache_root_at
from maw_gym.official import official_tables
from maw_gym.presets import Preset
from maw_gym.specs import SPLITS
from maw_gym.tables import Tables

#: The env whose return the best depth is judged by (the main task's).
RETURN_ENV = "MAW/DepthSelection-v3"


def depth_returns(tables: Tables) -> np.ndarray:
    """(N, D) every query's return under every depth, played through the env."""
    from maw_gym_agents.rollouts import enumerate_returns

    return enumerate_returns(RETURN_ENV, tables).returns


def field_differences(official: Tables, rebuilt: Tables) -> dict[str, Any]:
    """Field -> max |official - rebuilt| (floats) or whether they are equal (the rest)."""
    out: dict[str, Any] = {}
    theirs = rebuilt.arrays()
    for name, array in official.arrays().items():
        other = theirs.get(name)
        if other is None or other.shape != array.shape:
            out[name] = "missing or another shape"
        elif array.dtype.kind == "f":
            out[name] = float(np.abs(array.astype(np.float64) - other).max(initial=0.0))
        else:
            out[name] = "equal" if np.array_equal(array, other) else "differs"
    return out


def headline(tables: dict[str, Tables], returns: dict[str, np.ndarray]) -> dict[str, float]:
    """The training-free figures of a leaderboard on these tables and their (N, D) depth
    ``returns`` per split (choices on dev)."""
    ndcg = {split: tables[split].alignment.astype(np.float64) for split in ("dev", "test")}
    by_return = int(returns["dev"].mean(0).argmax())
    by_ndcg = int(ndcg["dev"].mean(0).argmax())
    return {
        "best_fixed_depth_by_return": by_return,
        "best_fixed_test_return": float(returns["test"][:, by_return].mean()),
        "oracle_test_return": float(returns["test"].max(1).mean()),
        "best_fixed_depth_by_ndcg": by_ndcg,
        "best_fixed_test_ndcg10": float(ndcg["test"][:, by_ndcg].mean()),
        "oracle_test_ndcg10": float(ndcg["test"].max(1).mean()),
    }


def reproduce(dataset: str, preset: Preset, scratch: Path | None = None) -> dict[str, Any]:
    """Rebuild the official benchmark of (dataset, preset) in the cache ``scratch`` and compare
    (module docstring)."""
    benchmark = shipped(dataset, preset)
    if benchmark is None:
        raise ValueError(
            f"{dataset} at preset {preset.name!r} (with these --set values) is not an official "
            "benchmark; see maw_gym.official.OFFICIAL"
        )
    official = {split: official_tables(benchmark, split) for split in SPLITS}
    if scratch is None:
        scratch = cache_dir("reproduce", f"{dataset}-{preset.name}-{benchmark.artifact}")
    with cache_root_at(scratch):
        rebuilt = {split: ensure_tables(dataset, split, preset, rebuild=True) for split in SPLITS}
    report: dict[str, Any] = {
        "artifact": benchmark.artifact,
        "scratch_cache": str(scratch),
        "splits": {},
    }
    returns = {
        name: {split: depth_returns(tables[split]) for split in SPLITS}
        for name, tables in (("official", official), ("rebuilt", rebuilt))
    }
    for split in SPLITS:
        a, b = official[split], rebuilt[split]
        changed_return = returns["official"][split].argmax(1) != returns["rebuilt"][split].argmax(1)
        changed_ndcg = a.alignment.argmax(1) != b.alignment.argmax(1)
        fields = field_differences(a, b)
        report["splits"][split] = {
            "queries": a.num_queries,
            "fields": fields,
            "bitwise_equal": all(value in (0.0, "equal") for value in fields.values()),
            "best_depth_changed_by_return": float(changed_return.mean()),
            "best_depth_changed_by_ndcg10": float(changed_ndcg.mean()),
        }
    report["official"] = headline(official, returns["official"])
    report["rebuilt"] = headline(rebuilt, returns["rebuilt"])
    return report
