"""The depth study: do MAW depths become rankers worth routing between, and can a router tell?

``maw-gym encoder study`` trains each encoder *variant* (a set of preset levers: depth-specific
score heads, per-depth temperatures, per-depth locality, specialisation training, diversity
term; see ``VARIANTS``) on the encoder-train part of the train split, on the cached
base-encoder states of one preset (``--set semantic=true`` etc. change the preset for the whole
study, NON-MAW seeds included), and measures on dev and test:

- BM25, the NON-MAW twin, each fixed depth, the best fixed depth (chosen on dev), the per-query
  NDCG@10 oracle over depths, and the uniform mixture (the mean of the depths' scores, i.e. the
  ensemble of depths: scores are linear in the depth weights);
- the **seed control**: the same oracle over as many NON-MAW seeds as there are depths, minus
  the best seed (chosen on dev) — a max over k models grows with k, so headroom is only
  structure where it clearly exceeds this;
- learned routers, trained on the **router-train** part (train queries the encoder never saw;
  ``maw_gym.pipeline.router_queries``), their hyperparameters chosen on dev: the routability
  probe (softmax regression to the best depth, ``maw_gym_leaderboard.study.report``), a ridge
  regressor of each depth's continuous alignment (``relevant_mass``), and the joint router
  trained in the loop; each one's NDCG@10 gain over the best fixed depth with a paired
  bootstrap 95% CI;
- depth diversity: Spearman between depths' scores, JS divergence of pooled slices, and the
  fraction of queries where every depth gets the same NDCG@10;
- where a dataset's queries carry ``metadata.task`` (kjv-tasks), per task: NDCG@10 of the best
  fixed depth, the oracle and each router, and how often each router picks each depth.

It also measures BM25 Recall@k and the perfect-rerank NDCG@10 ceiling at k = 16/30/50, which
need no encoder. The JSON it writes is the only source of ``docs/depth-study.md`` and the PNG
(:mod:`maw_gym_leaderboard.study.render`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maw_gym.cache import atomic_path, cache_dir, stable_hash, write_json
from maw_gym.encoder.reranker import MAWReranker, RerankerConfig, score_split, train_reranker
from maw_gym.encoder.shards import scored_arrays
from maw_gym.encoder.train import table_models
from maw_gym.groups import task_labels
from maw_gym.metrics import ndcg_at_10
from maw_gym.pipeline import SplitInputs, encoder_and_router_parts, sampled_split, split_inputs
from maw_gym.presets import Preset
from maw_gym.specs import spec_dict
from maw_gym.stats import paired_difference
from maw_gym.tables import Tables
from maw_gym_leaderboard.study.report import (
    depth_js_divergence,
    depth_spearman,
    probe_actions,
    train_probe,
)

#: What every variant starts from: no lever (the plain MAW encoder), whatever the preset's
#: own defaults are, so that a variant means the same encoder under every preset.
NO_LEVERS: dict[str, Any] = {
    "depth_heads": False,
    "temperature_spread": 0.0,
    "locality": 0.0,
    "specialisation": "router",
    "diversity_weight": 0.0,
}
#: Encoder variants: the preset levers (``Preset`` fields) each variant sets on ``NO_LEVERS``.
#: ``semantic`` is not a variant but a study-wide ``--set semantic=true``: it changes the
#: NON-MAW seeds too, which must stay the same models as the variants' NON-MAW twin.
VARIANTS: dict[str, dict[str, Any]] = {
    name: {**NO_LEVERS, **levers}
    for name, levers in {
        "shared-head": {},
        "experts": {"depth_heads": True, "temperature_spread": 3.0},
        "experts-local": {"depth_heads": True, "temperature_spread": 3.0, "locality": 0.5},
        "experts-sinkhorn": {
            "depth_heads": True,
            "temperature_spread": 3.0,
            "specialisation": "sinkhorn",
            "diversity_weight": 0.1,
        },
    }.items()
}
RECALL_DEPTHS = (16, 30, 50)
RIDGE_ALPHAS = (1.0, 10.0, 100.0, 1000.0)


def _model(preset: Preset, name: str, seed: int) -> tuple[RerankerConfig, Any]:
    """(architecture, TrainConfig) of the encoder model ``name`` (``maw`` or ``nonmaw_0``)
    of ``preset`` trained with ``seed``."""
    spec = dataclasses.replace(preset.encoder, seed=seed)
    return table_models(spec, preset.inputs)[name]


def _train(
    architecture: RerankerConfig, config, train: SplitInputs, dev: SplitInputs, name: str
) -> MAWReranker:
    """Train one model, or load it from the study cache (keyed by everything it depends on),
    so that ``--worker`` processes can train a study's models in parallel beforehand."""
    key = stable_hash(
        spec_dict(architecture),
        spec_dict(config),
        train.model_key(),
        dev.model_key(),
    )
    path = cache_dir("study") / f"{key}.pt"
    torch.manual_seed(config.seed)
    model = MAWReranker(architecture)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    train_reranker(model, train, dev, config, name=name)
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return model.eval()


def study_models(
    preset: Preset, variants: dict[str, dict[str, Any]]
) -> list[tuple[str, RerankerConfig, Any]]:
    """(name, architecture, TrainConfig) of every model a study trains: the NON-MAW seeds,
    then each variant's MAW encoder."""
    models = [
        (f"nonmaw {seed}", *_model(preset, "nonmaw_0", seed))
        for seed in range(preset.encoder.depth)
    ]
    for name, levers in variants.items():
        models.append((f"maw {name}", *_model(preset.with_overrides(**levers), "maw", 0)))
    return models


def _ndcg(inputs: SplitInputs, scores: np.ndarray) -> np.ndarray:
    """(N, K) NDCG@10 of (N, K, C) score sets."""
    return ndcg_at_10(
        scores,
        inputs.relevance[:, None],
        inputs.ideal_gains[:, None],
        inputs.candidate_mask[:, None],
    )


def _interval(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    mean, low, high = paired_difference(a, b)
    return {"mean": mean, "low": low, "high": high}


def seed_control(
    preset: Preset, parts: dict[str, SplitInputs], optimisation: dict[str, Any] | None = None
) -> tuple[dict[str, np.ndarray], MAWReranker]:
    """Per split, (N, K) NDCG@10 of D (``EncoderSpec.depth``) NON-MAW seeds, and seed 0's
    model (the NON-MAW twin of every variant). ``optimisation`` changes their ``TrainConfig``
    (batch size, learning rate, epochs) to match a MAW encoder's (the ground-truth tier's,
    ``maw_gym.groups.EXPERT_TRAINING``): how much models differ per query depends on how they
    were trained."""
    per_split: dict[str, list[np.ndarray]] = {"dev": [], "test": []}
    models = []
    for seed in range(preset.encoder.depth):
        architecture, config = _model(preset, "nonmaw_0", seed)
        config = dataclasses.replace(config, **(optimisation or {}))
        models.append(
            _train(architecture, config, parts["encoder"], parts["dev"], f"nonmaw {seed}")
        )
        for split in per_split:
            scores = score_split(models[-1], parts[split]).depth_scores()
            per_split[split].append(_ndcg(parts[split], scores)[:, 0])
    return {split: np.stack(values, axis=1) for split, values in per_split.items()}, models[0]


def ridge_router(train: Tables, dev: Tables) -> tuple[Any, float]:
    """Ridge regression observation -> each depth's relevant_mass, alpha chosen on dev NDCG."""
    target = train.alignment_of(train.depth_scores(), "relevant_mass").astype(np.float64)
    x = train.observation.reshape(train.num_queries, -1).astype(np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-8
    z = (x - mean) / std
    best: tuple[float, Any, float] | None = None
    for alpha in RIDGE_ALPHAS:
        weight = np.linalg.solve(
            z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (target - target.mean(0))
        )
        router = (mean, std, weight, target.mean(0))
        value = float(dev.alignment[np.arange(dev.num_queries), ridge_actions(router, dev)].mean())
        if best is None or value > best[0]:
            best = (value, router, alpha)
    assert best is not None
    return best[1], best[2]


def ridge_actions(router: Any, tables: Tables) -> np.ndarray:
    mean, std, weight, bias = router
    x = tables.observation.reshape(tables.num_queries, -1).astype(np.float64)
    return (((x - mean) / std) @ weight + bias).argmax(1)


def split_metrics(
    tables: Tables, seeds: np.ndarray, best_fixed: int, best_seed: int, routed: dict
) -> dict[str, Any]:
    """Every figure of one split (see the module docstring); ``routed``: router -> actions."""
    per_depth = tables.alignment.astype(np.float64)  # (N, D)
    fixed = per_depth[:, best_fixed]
    rows = np.arange(tables.num_queries)
    mixture = tables.ndcg(tables.depth_scores().mean(1)).astype(np.float64)
    bm25 = tables.ndcg(tables.bm25_scores).astype(np.float64)
    oracle = per_depth.max(1)
    out: dict[str, Any] = {
        "queries": tables.num_queries,
        "bm25": float(bm25.mean()),
        "nonmaw": float(seeds[:, 0].mean()),
        "nonmaw_seeds": seeds.mean(0).tolist(),
        "depths": per_depth.mean(0).tolist(),
        "best_fixed_depth": best_fixed,
        "best_fixed": float(fixed.mean()),
        "oracle": float(oracle.mean()),
        "headroom": float((oracle - fixed).mean()),
        "seed_control": float((seeds.max(1) - seeds[:, best_seed]).mean()),
        "uniform_mixture": float(mixture.mean()),
        "mixture_minus_best_fixed": _interval(mixture, fixed),
        "best_fixed_minus_bm25": _interval(fixed, bm25),
        "worst_depth_minus_bm25": float(per_depth.mean(0).min() - bm25.mean()),
        "all_depth_ties": float((per_depth == per_depth[:, :1]).all(1).mean()),
        "depth_spearman": depth_spearman(tables.depth_scores(), tables.candidate_mask),
        "depth_js_divergence_pooled": depth_js_divergence(tables.observation),
        "routers": {},
    }
    for name, actions in routed.items():
        chosen = per_depth[rows, actions]
        out["routers"][name] = {
            "ndcg10": float(chosen.mean()),
            "minus_best_fixed": _interval(chosen, fixed),
            "usage": np.bincount(actions, minlength=tables.depth).tolist(),
        }
    return out


def task_breakdown(
    tables: Tables, groups: np.ndarray, best_fixed: int, routed: dict
) -> dict[str, Any]:
    """Per query group: NDCG@10 of BM25, the best fixed depth, the oracle and each router, and
    each router's depth usage (which query types it sends where)."""
    per_depth = tables.alignment
    bm25 = tables.ndcg(tables.bm25_scores)
    out = {}
    for group in sorted(set(groups.tolist())):
        rows = np.flatnonzero(groups == group)
        out[group] = {
            "queries": int(rows.size),
            "bm25": float(bm25[rows].mean()),
            "depths": per_depth[rows].mean(0).tolist(),
            "best_fixed": float(per_depth[rows, best_fixed].mean()),
            "oracle": float(per_depth[rows].max(1).mean()),
            "routers": {
                name: {
                    "ndcg10": float(per_depth[rows, actions[rows]].mean()),
                    "usage": np.bincount(actions[rows], minlength=tables.depth).tolist(),
                }
                for name, actions in routed.items()
            },
        }
    return out


def study_variant(
    preset: Preset,
    parts: dict[str, SplitInputs],
    seeds: dict[str, np.ndarray],
    nonmaw: MAWReranker,
    groups: dict,
) -> dict[str, Any]:
    """Train one variant's MAW encoder and measure it (``parts``: encoder/router/dev/test)."""
    started = time.perf_counter()
    maw = _train(*_model(preset, "maw", 0), parts["encoder"], parts["dev"], "maw")
    train_seconds = time.perf_counter() - started
    tables = {
        split: Tables(**scored_arrays(parts[split], maw, nonmaw))
        for split in ("router", "dev", "test")
    }
    probe = train_probe(tables["router"])
    ridge, alpha = ridge_router(tables["router"], tables["dev"])
    best_fixed = int(tables["dev"].alignment.mean(0).argmax())
    best_seed = int(seeds["dev"].mean(0).argmax())
    result: dict[str, Any] = {
        "levers": {k: getattr(preset.encoder, k) for k in NO_LEVERS},
        "train_seconds": train_seconds,
        "ridge_alpha": alpha,
    }
    for split in ("dev", "test"):
        table = tables[split]
        routed = {
            "probe": probe_actions(probe, table),
            "ridge_relevant_mass": ridge_actions(ridge, table),
            "joint_router": table.joint_router_logits.argmax(1),
        }
        result[split] = split_metrics(table, seeds[split], best_fixed, best_seed, routed)
        if groups.get(split) is not None:
            result[split]["tasks"] = task_breakdown(table, groups[split], best_fixed, routed)
    return result


def recall_at_k(dataset: str, preset: Preset, split: str) -> dict[str, Any]:
    """BM25 Recall@k and the NDCG@10 of a perfect rerank of the top k, for k in RECALL_DEPTHS
    (no encoder: where recall is low, no reranker can reach far)."""
    from maw_gym.retrieval import bm25_candidates

    data = sampled_split(dataset, split, preset.data)
    candidates = bm25_candidates(data, max(RECALL_DEPTHS))
    discounts = 1.0 / np.log2(np.arange(2, 12))
    out: dict[str, Any] = {}
    for k in RECALL_DEPTHS:
        recalls, ceilings = [], []
        for qid, judged in data.qrels.items():
            relevant = {doc for doc, grade in judged.items() if grade > 0}
            if not relevant:
                continue
            top = {doc for doc, _ in candidates.get(qid, [])[:k]}
            grades = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
            found = sorted((judged[d] for d in top & relevant), reverse=True)[:10]
            recalls.append(len(top & relevant) / len(relevant))
            ideal = float(np.dot(grades, discounts[: len(grades)]))
            ceilings.append(float(np.dot(found, discounts[: len(found)])) / ideal)
        out[str(k)] = {
            "recall": float(np.mean(recalls)),
            "ndcg10_ceiling": float(np.mean(ceilings)),
        }
    return out


def run_study(
    dataset: str,
    preset: Preset,
    variants: dict[str, dict[str, Any]],
    out: Path,
    command: str = "",
    worker: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Run every variant and write ``out`` (JSON, with the ``command`` that ran it). With
    ``worker=(i, w)`` only train (and cache) the study's models ``i, i+w, i+2w, …`` and return;
    a later run without ``worker`` then finds them all cached."""
    train = split_inputs(dataset, "train", preset.inputs)
    encoder_part, router_part = encoder_and_router_parts(train, preset.data.router_fraction)
    parts = {
        "encoder": encoder_part,
        "router": router_part,
        "dev": split_inputs(dataset, "dev", preset.inputs),
        "test": split_inputs(dataset, "test", preset.inputs),
    }
    if worker is not None:
        for name, architecture, config in study_models(preset, variants)[worker[0] :: worker[1]]:
            _train(architecture, config, parts["encoder"], parts["dev"], name)
        return {}
    groups = {split: task_labels(dataset, parts[split].query_ids) for split in ("dev", "test")}
    started = time.perf_counter()
    seeds, nonmaw = seed_control(preset, parts)
    study: dict[str, Any] = {
        "dataset": parts["dev"].dataset,
        "command": command,
        "preset": preset.to_dict(),
        "queries": {name: part.num_queries for name, part in parts.items()},
        "recall": {split: recall_at_k(dataset, preset, split) for split in ("dev", "test")},
        "seed_control_seconds": time.perf_counter() - started,
        "variants": {},
    }
    for name, levers in variants.items():
        variant_preset = preset.with_overrides(**levers)
        study["variants"][name] = study_variant(variant_preset, parts, seeds, nonmaw, groups)
        write_json(out, study)  # after each variant: a long study can be read while it runs
    return study
