"""The leaderboard's PNGs: scores with CIs, learning curves, depth usage, P(GRPO > baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from maw_gym.cache import atomic_path
from maw_gym_leaderboard.policies import BOUNDS

#: Every PNG this module writes into the leaderboard's folder, by plot.
PLOT_FILES = {
    name: f"{name}.png"
    for name in (
        "scores",
        "learning_curves",
        "depth_usage",
        "probability_of_improvement",
        "performance_profile",
    )
}


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_scores(out: Path, rows: list[dict[str, Any]]) -> None:
    """Normalised score (seed CI) and NDCG@10 (query CI), one bar per policy; a hatched grey bar
    is a tie with best-fixed (paired CI over queries contains 0); bounds are dotted lines."""
    policies = [r for r in rows if not r["bound"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(policies) + 1.5), sharey=True)
    y = np.arange(len(policies))
    panels = (
        ("normalized_score", "normalized", "return", "normalised env score (random 0, oracle 1)"),
        ("ndcg@10", "ndcg", "ndcg", "NDCG@10 of the routed rerank"),
    )
    for ax, (key, stem, versus, title) in zip(axes, panels, strict=True):
        values = np.array([r.get(key, np.nan) for r in policies], dtype=float)
        err = np.array(
            [
                [
                    r.get(key, np.nan) - r.get(f"{stem}_ci_low", np.nan),
                    r.get(f"{stem}_ci_high", np.nan) - r.get(key, np.nan),
                ]
                for r in policies
            ],
            dtype=float,
        ).T
        tie = np.array([bool(r.get(f"{versus}_vs_best_fixed_tie")) for r in policies])
        for mask, style in (
            (~tie, {"color": "tab:blue", "alpha": 0.7}),
            (tie, {"color": "lightgrey", "hatch": "//", "label": "tie with best-fixed"}),
        ):
            shown = mask & np.isfinite(values)  # rerankers have no env score: no bar, not 0
            if shown.any():
                ax.barh(y[shown], values[shown], xerr=err[:, shown], capsize=3, **style)
        for r in rows:
            if key in r and (r["bound"] or r["policy"] in ("best-fixed", "BM25")):
                style = ":" if r["bound"] else "--"
                ax.axvline(r[key], linestyle=style, color="black" if r["bound"] else "tab:green")
                ax.text(r[key], -0.8, r["policy"], fontsize=7, rotation=90, va="bottom")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    axes[0].set_yticks(y, [r["policy"] for r in policies])
    axes[0].invert_yaxis()
    _save(fig, out / PLOT_FILES["scores"])


def plot_learning_curves(out: Path, curves: dict[str, list[list[dict[str, float]]]]) -> None:
    """Every learned policy's dev mean return during training, one line per seed."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = 0
    for color, (policy, runs) in zip(plt.cm.tab10.colors, curves.items(), strict=False):
        for seed, curve in enumerate(runs):
            if not curve:
                continue
            ax.plot(
                [p["env_steps"] for p in curve],
                [p["dev_return"] for p in curve],
                color=color,
                alpha=0.8,
                label=policy if seed == 0 else None,
            )
            drawn += 1
    ax.set_xlabel("env steps (supervised: labelled queries seen)")
    ax.set_ylabel("dev mean return (every dev query, deterministic)")
    ax.set_title("learning curves")
    if drawn:
        ax.legend(fontsize=7)
    _save(fig, out / PLOT_FILES["learning_curves"])


def plot_depth_usage(out: Path, results: dict[str, list[dict[str, Any]]]) -> None:
    """How often each policy picks each depth on the test split (mean over seeds)."""
    usage = {
        p: np.mean([r["depth_usage"] for r in runs], axis=0)
        for p, runs in results.items()
        if runs and "depth_usage" in runs[0]
    }
    if not usage:
        return
    cols = 4
    rows = int(np.ceil(len(usage) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), squeeze=False, sharey=True)
    for ax, (policy, share) in zip(axes.ravel(), usage.items(), strict=False):
        ax.bar(np.arange(len(share)), share, color="tab:purple")
        ax.set_title(policy, fontsize=9)
        ax.set_xticks(np.arange(len(share)))
    for ax in axes.ravel()[len(usage) :]:
        ax.axis("off")
    fig.suptitle("depth usage on test")
    _save(fig, out / PLOT_FILES["depth_usage"])


def plot_improvement(
    out: Path, results: dict[str, list[dict[str, Any]]], policy: str = "grpo"
) -> None:
    """rliable's probability of improvement of ``policy`` over every other policy (returns)."""
    from maw_gym.stats import probability_of_improvement

    if not results.get(policy) or "returns" not in results[policy][0]:
        return
    x = np.array([r["returns"] for r in results[policy]])
    others = [
        (p, np.array([r["returns"] for r in runs]))
        for p, runs in results.items()
        if p != policy and p not in BOUNDS and runs and "returns" in runs[0]
    ]
    estimates = [(p, *probability_of_improvement(x, y)) for p, y in others]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(estimates) + 1.2))
    y = np.arange(len(estimates))
    points = np.array([e[1] for e in estimates])
    err = np.array([[e[1] - e[2], e[3] - e[1]] for e in estimates]).T
    ax.errorbar(points, y, xerr=err, fmt="o", color="tab:orange", capsize=3)
    ax.axvline(0.5, color="grey", linestyle="--")
    ax.set_yticks(y, [e[0] for e in estimates])
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"P({policy} > X) over test queries, 95% CI")
    _save(fig, out / PLOT_FILES["probability_of_improvement"])


def plot_performance_profiles(out: Path, scores: dict[str, np.ndarray]) -> None:
    """rliable's performance profiles: the share of (seed, task) runs scoring above τ, with a
    95% CI band (stratified bootstrap), one line per policy."""
    import warnings

    from rliable import library as rly

    values = np.concatenate([s.ravel() for s in scores.values()])
    taus = np.linspace(min(values.min(), 0.0), max(values.max(), 1.0), 101)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # rliable's RandomState, as in stats.py
        profiles, bands = rly.create_performance_profile(scores, taus, reps=500)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for color, policy in zip(plt.cm.tab10.colors, scores, strict=False):
        ax.plot(taus, profiles[policy], color=color, label=policy)
        ax.fill_between(taus, *bands[policy], color=color, alpha=0.2)
    ax.set_xlabel("normalised score τ (random 0, oracle 1)")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.legend(fontsize=8)
    _save(fig, out / PLOT_FILES["performance_profile"])


def plot_all(
    out: Path,
    rows: list[dict[str, Any]],
    results: dict[str, list[dict[str, Any]]],
    curves: dict[str, list[list[dict[str, float]]]],
) -> None:
    plot_scores(out, rows)
    plot_learning_curves(out, curves)
    plot_depth_usage(out, results)
    plot_improvement(out, results)
