"""Diagnostics of a trained MAW encoder: can routing over its depths matter at all?

All NDCG@10 figures are per query on the BM25 candidate list with the query's full ideal gains
(``maw_gym.tables.ndcg_at_10``, which matches beir on that list), averaged over queries:

- BM25, the NON-MAW twin, each fixed depth, the best fixed depth (chosen on dev), the per-query
  oracle depth, the joint router (argmax of the router trained in the loop), and the same MAW
  layer trained with random depths (``maw_random``) for comparison;
- **headroom** = oracle − best fixed depth on the split, against the **seed control**: the same
  oracle over the NON-MAW seeds minus the best of them (headroom no larger than the seed
  control is noise, not structure);
- **routability probe**: softmax regression on the flattened, standardised observation
  (D·H·P·P), trained on the train tables to predict the best depth (soft target: uniform over
  the tied-best depths; queries where every depth ties are left out), routing dev and test;
  its NDCG@10 minus the best fixed depth's with a paired bootstrap 95% CI over queries;
- **depth diversity**: the mean over queries and depth pairs of the Spearman correlation
  between two depths' candidate scores, and the mean pairwise Jensen-Shannon divergence between
  depth slices computed from the *pooled* observation (each pooled row normalised to a
  distribution over key bins; mean over rows, heads, queries) — a cheap proxy for the full
  slices' divergence.

PNGs: per-depth NDCG@10 bars with the oracle and controls, and one query's depth slices.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from maw_gym.build import get_tables
from maw_gym.cache import atomic_path
from maw_gym.encoder.reranker import score_split
from maw_gym.encoder.train import TrainedEncoder, control_models, train_encoder
from maw_gym.metrics import ndcg_at_10
from maw_gym.pipeline import SplitInputs, split_inputs
from maw_gym.presets import Preset
from maw_gym.stats import paired_difference
from maw_gym.tables import Tables


def _split_ndcg(inputs: SplitInputs, scores: np.ndarray) -> np.ndarray:
    """Per-query NDCG@10 of (N, C) scores, or (N, K, C) for K score sets -> (N, K)."""
    return ndcg_at_10(scores, inputs.relevance, inputs.ideal_gains, inputs.candidate_mask)


def _features(tables: Tables) -> np.ndarray:
    return tables.observation.reshape(tables.num_queries, -1).astype(np.float64)


def train_probe(
    tables: Tables, weight_decay: float = 1e-3, steps: int = 300, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Softmax regression observation -> best depth; returns (mean, std, weight, bias)."""
    features = _features(tables)
    mean, std = features.mean(0), features.std(0) + 1e-8
    best = tables.alignment == tables.alignment.max(1, keepdims=True)
    informative = ~best.all(1)
    target = best[informative] / best[informative].sum(1, keepdims=True)
    x = torch.tensor((features[informative] - mean) / std, dtype=torch.float32)
    y = torch.tensor(target, dtype=torch.float32)
    torch.manual_seed(seed)
    linear = torch.nn.Linear(x.shape[1], tables.depth)
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=weight_decay)
    for _ in range(steps):
        loss = -(y * torch.log_softmax(linear(x), -1)).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return mean, std, linear.weight.detach().numpy().T, linear.bias.detach().numpy()


def probe_actions(probe: tuple[np.ndarray, ...], tables: Tables) -> np.ndarray:
    mean, std, weight, bias = probe
    return (((_features(tables) - mean) / std) @ weight + bias).argmax(1)


def depth_spearman(depth_scores: np.ndarray, mask: np.ndarray) -> float:
    """Mean Spearman correlation between depths' candidate scores over queries and pairs."""
    values = []
    for scores, real in zip(depth_scores, mask, strict=True):
        if real.sum() < 3:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):  # constant rows -> NaN, dropped
            rho = np.corrcoef(rankdata(scores[:, real], axis=1))
        upper = rho[np.triu_indices(rho.shape[0], k=1)]
        values.extend(upper[np.isfinite(upper)].tolist())
    return float(np.mean(values)) if values else float("nan")


def depth_js_divergence(observation: np.ndarray) -> float:
    """Mean pairwise Jensen-Shannon divergence (nats) between depth slices of the pooled
    observation (N, D, H, P, P): rows normalised over key bins."""
    rows = observation / np.maximum(observation.sum(-1, keepdims=True), 1e-12)
    values = []
    for a, b in itertools.combinations(range(rows.shape[1]), 2):
        p, q = rows[:, a], rows[:, b]
        m = (p + q) / 2
        kl_pm = np.where(p > 0, p * np.log(np.maximum(p, 1e-12) / np.maximum(m, 1e-12)), 0)
        kl_qm = np.where(q > 0, q * np.log(np.maximum(q, 1e-12) / np.maximum(m, 1e-12)), 0)
        values.append(float((0.5 * (kl_pm + kl_qm)).sum(-1).mean()))
    return float(np.mean(values)) if values else 0.0


def _interval(triple: tuple[float, float, float]) -> dict[str, float]:
    return {"mean": triple[0], "low": triple[1], "high": triple[2]}


def encoder_report(
    dataset: str, preset: Preset, encoder_dir: Path, out: Path | None = None
) -> dict[str, Any]:
    """Every diagnostic of the module docstring, on dev and test; PNGs into ``out`` if given.
    The controls (``maw_random``, NON-MAW seeds) are trained here on first use, in their own
    cached encoder directory (``maw_gym.encoder.train.control_models``)."""
    encoder = TrainedEncoder.load(encoder_dir)
    models = control_models(preset.encoder, preset.inputs, preset.controls)
    controls = TrainedEncoder.load(train_encoder(dataset, preset.inputs, preset.encoder, models))
    seed_models = [encoder.models["nonmaw_0"], *(controls.models[n] for n in controls.nonmaw_names)]
    train_tables = get_tables(dataset, "train", preset.inputs, encoder_dir)
    probe = train_probe(train_tables)
    report: dict[str, Any] = {
        "dataset": dataset,
        "preset": preset.name,
        "encoder": str(encoder_dir),
        "encoder_hash": encoder.content_hash,
        "training": {
            k: {"dev_ndcg10": v["dev_ndcg10"], "epochs": v["epochs"]}
            for k, v in encoder.config["metrics"].items()
        },
        "timings": encoder.config.get("timings", {}),
    }
    best_fixed = None
    for split in ("dev", "test"):
        tables = get_tables(dataset, split, preset.inputs, encoder_dir)
        inputs = split_inputs(dataset, split, preset.inputs)
        per_depth = tables.alignment  # (N, D)
        depth_means = per_depth.mean(0)
        if best_fixed is None:  # chosen on dev, applied to both splits
            best_fixed = int(depth_means.argmax())
        rows = np.arange(tables.num_queries)
        router = per_depth[rows, tables.joint_router_logits.argmax(1)]
        probe_ndcg = per_depth[rows, probe_actions(probe, tables)]
        seeds = np.stack(
            [score_split(model, inputs).depth_scores()[:, 0] for model in seed_models], axis=1
        )  # (N, K, C)
        seed_ndcg = _split_ndcg(inputs, seeds)  # (N, K)
        random_scores = score_split(controls.models["maw_random"], inputs).depth_scores()
        random_ndcg = _split_ndcg(inputs, random_scores)
        fixed = per_depth[:, best_fixed]
        report[split] = {
            "queries": tables.num_queries,
            "queries_all_depths_tie": int((per_depth == per_depth[:, :1]).all(1).sum()),
            "bm25": float(tables.ndcg(tables.bm25_scores).mean()),
            "nonmaw": float(tables.ndcg(tables.nonmaw_scores).mean()),
            "depths": depth_means.tolist(),
            "best_fixed_depth": best_fixed,
            "best_fixed": float(fixed.mean()),
            "oracle": float(per_depth.max(1).mean()),
            "joint_router": float(router.mean()),
            "joint_router_usage": np.bincount(
                tables.joint_router_logits.argmax(1), minlength=tables.depth
            ).tolist(),
            "headroom": float(per_depth.max(1).mean() - depth_means.max()),
            "seed_control": float(seed_ndcg.max(1).mean() - seed_ndcg.mean(0).max()),
            "nonmaw_seeds": seed_ndcg.mean(0).tolist(),
            "random_depth_training": {
                "depths": random_ndcg.mean(0).tolist(),
                "headroom": float(random_ndcg.max(1).mean() - random_ndcg.mean(0).max()),
                "spearman": depth_spearman(random_scores, inputs.candidate_mask),
            },
            "router_minus_best_fixed": _interval(paired_difference(router, fixed)),
            "probe": float(probe_ndcg.mean()),
            "probe_minus_best_fixed": _interval(paired_difference(probe_ndcg, fixed)),
            "maw_best_fixed_minus_bm25": _interval(
                paired_difference(fixed, tables.ndcg(tables.bm25_scores))
            ),
            "depth_spearman": depth_spearman(tables.depth_scores(), tables.candidate_mask),
            "depth_js_divergence_pooled": depth_js_divergence(tables.observation),
        }
        if out is not None and split == "test":
            plot_depth_bars(report[split], Path(out) / "depth_ndcg_test.png")
            plot_depth_slices(encoder, inputs, Path(out) / "depth_slices_test.png")
    return report


def plot_depth_bars(split_report: dict[str, Any], path: Path) -> None:
    """Per-depth NDCG@10 bars with horizontal lines for BM25, NON-MAW, oracle and controls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = split_report["depths"]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(range(len(depths)), depths, color="tab:blue", label="MAW, fixed depth")
    lines = {
        "BM25": (split_report["bm25"], "black"),
        "NON-MAW": (split_report["nonmaw"], "tab:gray"),
        "oracle depth": (split_report["oracle"], "tab:green"),
        "joint router": (split_report["joint_router"], "tab:orange"),
        "probe router": (split_report["probe"], "tab:purple"),
        "NON-MAW seed oracle": (
            max(split_report["nonmaw_seeds"]) + split_report["seed_control"],
            "tab:red",
        ),
    }
    for label, (value, color) in lines.items():
        ax.axhline(value, color=color, linestyle="--", linewidth=1, label=f"{label} {value:.4f}")
    low = min([*depths, *(v for v, _ in lines.values())])
    ax.set_ylim(low * 0.95, None)
    ax.set_xlabel("depth")
    ax.set_ylabel("NDCG@10 (test)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)


def plot_depth_slices(
    encoder: TrainedEncoder, inputs: SplitInputs, path: Path, head: int = 0
) -> None:
    """Head ``head``'s attention for every depth on the top BM25 pair of the first query with a
    relevant candidate (valid tokens only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    query = int(np.flatnonzero(inputs.has_relevant())[0]) if inputs.has_relevant().any() else 0
    valid = inputs.token_mask[query, 0]
    x = torch.from_numpy(inputs.states[query, 0][None].astype(np.float32))
    mask = torch.from_numpy(valid[None])
    layer = encoder.models["maw"].layers[0]
    with torch.no_grad():
        attention = layer.depth_attention(x, mask)[0, head].numpy()  # (D, L, L)
    n = int(valid.sum())
    depth = attention.shape[0]
    cols = min(depth, 4)
    rows = (depth + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for d, ax in enumerate(axes.flat):
        if d < depth:
            ax.imshow(attention[d, :n, :n], cmap="viridis")
            ax.set_title(f"depth {d}", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"query {inputs.query_ids[query]}, head {head}: attention per depth")
    fig.tight_layout()
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
