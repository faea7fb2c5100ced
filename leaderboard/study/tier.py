"""``maw-gym tier``: does the ground-truth tier (issue 18) give routing a known answer?

For each ρ (``EncoderSpec.group_mix``), the tier preset (the preset with
``specialisation=groups``, ``groups=…`` and ``group_mix=ρ``: ordinary overrides, so the
encoder and tables are the very ones ``maw-gym leaderboard --set …`` and the ``tier`` suite
build and reuse) has its encoder trained and its router-train, dev and test tables built
(``maw_gym.build``), and is measured against the figures of issue 18's acceptance (every
choice on dev, test read once), all on NDCG@10 of ``env`` (each fixed depth's, as the
leaderboard's ``best-fixed-ndcg`` and ``oracle-ndcg`` read it):

- the **specialisation matrix** (NDCG@10 of each depth on each group) and, per group, own
  depths minus other depths with a paired CI (``maw_gym.groups.specialisation_matrix``);
- the best fixed depth (chosen on dev), the per-query oracle, their gap with a paired CI, and
  the **seed control**: the same oracle over as many NON-MAW seeds as depths, minus the best
  seed on dev (``maw_gym_leaderboard.study.study.seed_control``), trained with the tier MAW's
  optimisation (how much two models differ per query depends on how they were trained);
- **closed gap** ``(π − best fixed) / (oracle − best fixed)`` with a paired bootstrap CI
  (``maw_gym.stats.closed_gap``) for the NDCG **ceilings** (``maw_gym_agents.ceiling``, fitted
  on router-train, chosen on dev), the controls ``random`` (the expectation of a uniform depth)
  and ``hash`` (``maw_gym_agents.heuristics.hash_depth``), the encoder's ``joint-router`` and
  ``group-told`` (each group's best depth on dev, given the true group: what a router that knew
  the groups exactly would get; a reference, not a router);
- ``group_probe_accuracy``: how often a ridge classifier of the group on the observation
  (router-train, penalty on dev) names a query's group: whether the observation could tell a
  router which experts a query needs at all.

The learned agents' closed gaps come from the leaderboard on the same tier preset (the
``tier`` suite, ``maw_gym_leaderboard.suite``). The JSON written records the command, the
preset of every ρ and each figure.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from maw_gym.build import get_tables, resolve_encoder
from maw_gym.cache import write_json
from maw_gym.groups import EXPERT_TRAINING, QueryGroups, spec_groups, specialisation_matrix
from maw_gym.pipeline import encoder_and_router_parts, split_inputs
from maw_gym.presets import Preset
from maw_gym.stats import closed_gap, paired_difference
from maw_gym.tables import Tables

#: How every output of the ground-truth tier labels it.
TIER_CONTROL = (
    "A control built to make routing matter: the depths are trained as experts on the "
    "dataset's query groups, so any routing value here is put there by construction; it is "
    "evidence about routers, not about real data or MAW."
)
#: The tier's dial values (issue 18: ρ ∈ {0, 0.25, 0.5, 1}).
TIER_MIXES = (0.0, 0.25, 0.5, 1.0)
#: The full-information learners of NDCG@10 (``maw_gym_agents.ceiling.CEILINGS``).
NDCG_CEILINGS = ("ceiling-ridge-ndcg", "ceiling-mlp-ndcg")
#: ``TrainConfig`` fields the NON-MAW seed control shares with the tier's MAW encoder.
OPTIMISATION_FIELDS = ("epochs", "patience", "batch_queries", "lr", "weight_decay")
#: Where the tables' splits come from: router-train is the train split's held-out part.
TABLE_SPLITS = {"router": "train", "dev": "dev", "test": "test"}


def tier_preset(preset: Preset, groups: str, mix: float) -> Preset:
    """``preset`` with depths trained as experts on ``groups`` at ρ = ``mix`` (overrides)."""
    return preset.with_overrides(specialisation="groups", groups=groups, group_mix=mix)


def _interval(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    mean, low, high = paired_difference(a, b)
    return {"mean": mean, "low": low, "high": high}


def _gap(policy: np.ndarray, fixed: np.ndarray, oracle: np.ndarray) -> dict[str, float]:
    point, low, high = closed_gap(policy, fixed, oracle)
    return {"mean": point, "low": low, "high": high}


def depth_values(env_id: str, tables: Tables) -> np.ndarray:
    """(N, D) NDCG@10 of each fixed depth on each query, as the leaderboard reads it."""
    from maw_gym_agents.heuristics import fixed_depth_values

    return np.asarray(fixed_depth_values(env_id, tables).of("ndcg"), dtype=np.float64)


def tier_policies(
    env_id: str,
    tables: dict[str, Tables],
    values: dict[str, np.ndarray],
    groups: dict[str, QueryGroups],
    best_fixed: int,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Per policy, per split (dev, test): its per-query NDCG@10 (N,); and what dev chose for
    each ceiling."""
    from maw_gym_agents.ceiling import first_observations, fit_ceiling
    from maw_gym_agents.heuristics import hash_depth

    def value_of(split: str, actions: np.ndarray) -> np.ndarray:
        return values[split][np.arange(len(actions)), actions]

    acted: dict[str, dict[str, np.ndarray]] = {}
    choices: dict[str, Any] = {}
    for name in NDCG_CEILINGS:
        router, choices[name] = fit_ceiling(name, env_id, tables["router"], tables["dev"])
        acted[name] = {
            split: value_of(
                split, router.predict(first_observations(env_id, tables[split])).argmax(1)
            )
            for split in ("dev", "test")
        }
    dev_groups = groups["dev"]
    per_group_best = np.array(
        [values["dev"][dev_groups.index == g].mean(0).argmax() for g in range(dev_groups.count)]
    )
    depth = values["dev"].shape[1]
    for name, actions in {
        "hash": lambda s: np.array([hash_depth(q, depth) for q in tables[s].query_ids]),
        "joint-router": lambda s: tables[s].joint_router_logits.argmax(1),
        "group-told": lambda s: per_group_best[groups[s].index],
    }.items():
        acted[name] = {split: value_of(split, actions(split)) for split in ("dev", "test")}
    acted["random"] = {split: values[split].mean(1) for split in ("dev", "test")}
    acted["best-fixed"] = {split: values[split][:, best_fixed] for split in ("dev", "test")}
    return acted, choices


def group_probe_accuracy(
    env_id: str, tables: dict[str, Tables], groups: dict[str, QueryGroups]
) -> dict[str, float]:
    """Per split (dev, test), how often a ridge classifier of the group on the observation
    (trained on router-train, penalty on dev) names a query's group."""
    from maw_gym_agents.ceiling import SplitValues, first_observations, fit_ridge
    from maw_gym_agents.policy import as_input

    observed = {split: first_observations(env_id, tables[split]) for split in tables}
    one_hot = {split: np.eye(groups[split].count)[groups[split].index] for split in tables}
    model, _ = fit_ridge(
        SplitValues(observed["router"], one_hot["router"]),
        SplitValues(observed["dev"], one_hot["dev"]),
    )
    out = {}
    for split in ("dev", "test"):
        predicted = model(as_input(model, observed[split])).detach().numpy().argmax(1)
        out[split] = float((predicted == groups[split].index).mean())
    return out


def tier_metrics(
    env_id: str,
    tables: dict[str, Tables],
    groups: dict[str, QueryGroups],
    seeds: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Every figure of one ρ (module docstring) from its router/dev/test tables, the same
    splits' query groups and the NON-MAW seeds' NDCG@10 (N, K) per split (dev, test)."""
    values = {split: depth_values(env_id, t) for split, t in tables.items()}
    best_fixed = int(values["dev"].mean(0).argmax())
    best_seed = int(seeds["dev"].mean(0).argmax())
    acted, choices = tier_policies(env_id, tables, values, groups, best_fixed)
    out: dict[str, Any] = {
        "best_fixed_depth": best_fixed,
        "best_seed": best_seed,
        "ceiling_choices": choices,
        "group_probe_accuracy": group_probe_accuracy(env_id, tables, groups),
    }
    for split in ("dev", "test"):
        fixed, oracle = values[split][:, best_fixed], values[split].max(1)
        control = seeds[split].max(1) - seeds[split][:, best_seed]
        gap = oracle - fixed
        out[split] = {
            "queries": len(fixed),
            "matrix": specialisation_matrix(values[split], groups[split]),
            "depths": values[split].mean(0).tolist(),
            "best_fixed": float(fixed.mean()),
            "oracle": float(oracle.mean()),
            "gap": _interval(oracle, fixed),
            "seed_control": float(control.mean()),
            "gap_minus_3x_seed_control": _interval(gap, 3.0 * control),
            "gap_over_seed_control": float(gap.mean() / max(control.mean(), 1e-12)),
            "policies": {
                name: {
                    "ndcg10": float(per_split[split].mean()),
                    "minus_best_fixed": _interval(per_split[split], fixed),
                    "closed_gap": _gap(per_split[split], fixed, oracle),
                }
                for name, per_split in acted.items()
            },
        }
    return out


def tier_seed_control(
    dataset: str, preset: Preset, optimisation: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Per split (dev, test), (N, D) NDCG@10 of the D NON-MAW seeds of the depth study, trained
    on the encoder-train queries with ``optimisation`` (``TrainConfig`` fields)."""
    from maw_gym_leaderboard.study.study import seed_control

    train = split_inputs(dataset, "train", preset.inputs)
    encoder_part, _ = encoder_and_router_parts(train, preset.data.router_fraction)
    parts = {
        "encoder": encoder_part,
        "dev": split_inputs(dataset, "dev", preset.inputs),
        "test": split_inputs(dataset, "test", preset.inputs),
    }
    seeds, _ = seed_control(preset, parts, optimisation)
    return seeds


def tier_tables(dataset: str, preset: Preset) -> tuple[dict[str, Tables], dict[str, QueryGroups]]:
    """The router-train, dev and test tables of a tier preset (its encoder trained first if it
    is not cached) and each split's query groups."""
    encoder_dir = resolve_encoder(dataset, preset)
    tables = {
        name: get_tables(dataset, split, preset.inputs, encoder_dir)
        for name, split in TABLE_SPLITS.items()
    }
    groups = {
        name: spec_groups(dataset, preset.inputs, preset.encoder, t.query_ids)
        for name, t in tables.items()
    }
    return tables, groups


def run_tier(
    dataset: str,
    preset: Preset,
    groups: str,
    mixes: tuple[float, ...],
    out: Path,
    env_id: str,
    command: str = "",
) -> dict[str, Any]:
    """Train and measure the tier at every ρ of ``mixes``; write ``out`` (JSON) after each."""
    started = time.perf_counter()
    optimisation = {k: v for k, v in EXPERT_TRAINING.items() if k in OPTIMISATION_FIELDS}
    result: dict[str, Any] = {
        "dataset": dataset,
        "command": command,
        "env": env_id,
        "groups": {"source": groups},
        "seed_control_optimisation": optimisation,
        "mixes": {},
    }
    seeds = tier_seed_control(dataset, preset, optimisation)
    result["seed_control_seconds"] = time.perf_counter() - started
    for mix in mixes:
        variant = tier_preset(preset, groups, mix)
        started = time.perf_counter()
        tables, group_of = tier_tables(dataset, variant)
        result["groups"]["names"] = list(group_of["dev"].names)
        result["queries"] = {split: t.num_queries for split, t in tables.items()}
        result["mixes"][str(mix)] = {
            "preset": variant.to_dict(),
            "encoder_hash": tables["dev"].meta.get("encoder_hash"),
            "seconds": time.perf_counter() - started,
            **tier_metrics(env_id, tables, group_of, seeds),
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """One line per ρ: the test gap against the seed control, the own-minus-other of every
    group and the ridge ceiling's closed gap."""
    lines = []
    for mix, figures in result["mixes"].items():
        test = figures["test"]
        own = ", ".join(
            f"{name} {m['own_minus_other']['mean']:+.3f} "
            f"[{m['own_minus_other']['low']:+.3f}, {m['own_minus_other']['high']:+.3f}]"
            for name, m in test["matrix"].items()
            if m.get("queries")
        )
        gaps = "; ".join(
            f"{name} {p['closed_gap']['mean']:+.0%} "
            f"[{p['closed_gap']['low']:+.0%}, {p['closed_gap']['high']:+.0%}]"
            for name, p in test["policies"].items()
            if name != "best-fixed"
        )
        lines.append(
            f"rho={mix}: test gap {test['gap']['mean']:+.4f} [{test['gap']['low']:+.4f}, "
            f"{test['gap']['high']:+.4f}] vs seed control {test['seed_control']:+.4f} "
            f"({test['gap_over_seed_control']:.1f}x); own-other: {own}; closed gap: {gaps}"
        )
    return lines
