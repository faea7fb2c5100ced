"""The leaderboard's PNGs: closed gaps with CIs, learning curves, depth usage, P(GRPO > X),
and the ground-truth tier's dose-response figure (closed gap against ρ)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from maw_gym.cache import atomic_path
from maw_gym_leaderboard.policies import BOUNDS, GAP_REFERENCES

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


#: The two closed gaps the plots show: (row key, tie key, axis label).
GAP_PANELS = (
    ("closed_gap_return", "return_vs_best_fixed", "closed gap on return"),
    ("closed_gap_ndcg", "ndcg_vs_best_fixed", "closed gap on NDCG@10"),
)
#: Closed gaps of bad policies reach −10 and beyond on a task with little headroom: linear in
#: [−1, 1], logarithmic outside, so that 0 (best-fixed) and 1 (oracle) stay readable.
GAP_AXIS = {"value": "symlog", "linthresh": 1.0}


def _errors(rows: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Points and (2, n) error-bar lengths of ``key``; an unbounded side (a resample without
    gap, :func:`maw_gym.stats.closed_gap`) is drawn to the panel's edge."""
    points = np.array([r.get(key, np.nan) for r in rows], dtype=float)
    low = np.array([r.get(f"{key}_ci_low", np.nan) for r in rows], dtype=float)
    high = np.array([r.get(f"{key}_ci_high", np.nan) for r in rows], dtype=float)
    finite = np.concatenate([points, low, high])
    finite = finite[np.isfinite(finite)]
    edge = (finite.min(initial=0.0) - 1.0, finite.max(initial=1.0) + 1.0)
    low, high = np.clip(low, *edge), np.clip(high, *edge)
    return points, np.vstack([points - low, high - points])


def plot_scores(out: Path, rows: list[dict[str, Any]]) -> None:
    """Closed gap on return and on NDCG@10 with the CI over test queries, one bar per policy
    and ceiling (ceilings in orange); a hatched grey bar is a tie with that metric's
    best-fixed (paired CI contains 0); 0 is best-fixed and 1 the oracle (dotted lines)."""
    shown = [r for r in rows if r["kind"] != "bound"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(shown) + 1.5), sharey=True)
    y = np.arange(len(shown))
    ceiling = np.array([r["kind"] == "ceiling" for r in shown])
    for ax, (key, versus, title) in zip(axes, GAP_PANELS, strict=True):
        values, err = _errors(shown, key)
        tie = np.array([bool(r.get(f"{versus}_tie")) for r in shown])
        for mask, style in (
            (~tie & ~ceiling, {"color": "tab:blue", "alpha": 0.7}),
            (~tie & ceiling, {"color": "tab:orange", "alpha": 0.8, "label": "ceiling"}),
            (tie, {"color": "lightgrey", "hatch": "//", "label": "tie with best-fixed"}),
        ):
            drawn = mask & np.isfinite(values)  # rerankers have no env return: no bar, not 0
            if drawn.any():
                ax.barh(y[drawn], values[drawn], xerr=err[:, drawn], capsize=3, **style)
        for x, label in ((0.0, "best-fixed"), (1.0, "oracle")):
            ax.axvline(x, linestyle=":", color="black")
            ax.text(x, len(shown) - 0.4, label, fontsize=7, rotation=90, va="top")
        ax.set_xscale(GAP_AXIS["value"], linthresh=GAP_AXIS["linthresh"])
        ax.set_title(f"{title} (95% CI over test queries)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    axes[0].set_yticks(y, [r["policy"] for r in shown])
    axes[0].invert_yaxis()
    _save(fig, out / PLOT_FILES["scores"])


def plot_dose_response(
    path: Path, rows_by_rho: Mapping[float, list[dict[str, Any]]], metric: str = "return"
) -> None:
    """Closed gap on ``metric`` (``return`` or ``ndcg``) against the ground-truth tier's dial
    ρ, one line with 95% CIs per policy and ceiling (dashed), from one leaderboard's rows per
    ρ (``summarise``'s output). Bounds and the best-fixed reference (0 by definition) are the
    dotted lines at 1 and 0. Written to ``path``."""
    key, _, label = next(panel for panel in GAP_PANELS if panel[0] == f"closed_gap_{metric}")
    rhos = sorted(rows_by_rho)
    names = dict.fromkeys(
        r["policy"]
        for rho in rhos
        for r in rows_by_rho[rho]
        if r["kind"] != "bound" and key in r and r["policy"] != GAP_REFERENCES[metric][0]
    )
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for color, policy in zip(itertools.cycle(plt.cm.tab20.colors), names, strict=False):
        series = [
            (rho, row)
            for rho in rhos
            for row in rows_by_rho[rho]
            if row["policy"] == policy and key in row
        ]
        points, err = _errors([row for _, row in series], key)
        ceiling = series[0][1]["kind"] == "ceiling"
        ax.errorbar(
            [rho for rho, _ in series],
            points,
            yerr=err,
            color=color,
            linestyle="--" if ceiling else "-",
            marker="s" if ceiling else "o",
            capsize=3,
            label=policy,
        )
    for level in (0.0, 1.0):
        ax.axhline(level, linestyle=":", color="black")
    ax.set_yscale(GAP_AXIS["value"], linthresh=GAP_AXIS["linthresh"])
    ax.set_xlabel("ρ: share of each depth's training queries from other groups")
    ax.set_ylabel(f"{label} (95% CI over test queries)")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, Path(path))


def plot_learning_curves(out: Path, curves: dict[str, list[list[dict[str, float]]]]) -> None:
    """Every learned policy's dev mean return during training, one line per seed; a circle
    marks the point whose policy the agent kept (checkpoint selection on dev)."""
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
            for point in (p for p in curve if p.get("selected")):
                ax.plot(point["env_steps"], point["dev_return"], "o", mfc="none", color=color, ms=8)
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
