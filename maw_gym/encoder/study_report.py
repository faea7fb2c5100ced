"""``docs/depth-study.md`` and its PNG, generated from the depth study's JSON files only.

Nothing here is typed by hand: every figure comes from ``maw-gym encoder study`` output
(``maw_gym.encoder.study``), and the page names the commands that produced it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROUTERS = ("probe", "ridge_relevant_mass", "joint_router")


def _ci(interval: dict[str, float]) -> str:
    mark = "**" if interval["low"] > 0 or interval["high"] < 0 else ""
    return f"{mark}{interval['mean']:+.4f} [{interval['low']:+.4f}, {interval['high']:+.4f}]{mark}"


def _ratio(split: dict[str, Any]) -> str:
    control = split["seed_control"]
    return f"{split['headroom'] / control:.1f}×" if control > 0 else "n/a"


def _levels_table(study: dict[str, Any]) -> list[str]:
    lines = [
        "| variant | split | BM25 | NON-MAW | best fixed (depth) | best fixed − BM25 "
        "| worst depth − BM25 | oracle | headroom | seed control | ratio "
        "| uniform mixture − best fixed | Spearman | JS | all-depth ties |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, variant in study["variants"].items():
        for split in ("dev", "test"):
            s = variant[split]
            lines.append(
                f"| {name} | {split} | {s['bm25']:.4f} | {s['nonmaw']:.4f} "
                f"| {s['best_fixed']:.4f} ({s['best_fixed_depth']}) "
                f"| {_ci(s['best_fixed_minus_bm25'])} "
                f"| {s['worst_depth_minus_bm25']:+.4f} | {s['oracle']:.4f} "
                f"| {s['headroom']:+.4f} | {s['seed_control']:+.4f} | {_ratio(s)} "
                f"| {_ci(s['mixture_minus_best_fixed'])} | {s['depth_spearman']:.3f} "
                f"| {s['depth_js_divergence_pooled']:.4f} | {s['all_depth_ties']:.0%} |"
            )
    return lines


def _routers_table(study: dict[str, Any]) -> list[str]:
    lines = [
        "| variant | split | " + " | ".join(f"{r} − best fixed" for r in ROUTERS) + " |",
        "|---|---|" + "---|" * len(ROUTERS),
    ]
    for name, variant in study["variants"].items():
        for split in ("dev", "test"):
            routers = variant[split]["routers"]
            cells = " | ".join(_ci(routers[r]["minus_best_fixed"]) for r in ROUTERS)
            lines.append(f"| {name} | {split} | {cells} |")
    return lines


def _tasks_table(study: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, variant in study["variants"].items():
        tasks = variant["test"].get("tasks")
        if not tasks:
            continue
        lines += [
            f"\n**{name}**, test, per task (depth usage: queries sent to depth 0, 1, …):\n",
            "| task | queries | BM25 | best fixed | oracle | ridge router | ridge usage "
            "| probe usage | joint router usage |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for task, t in tasks.items():
            ridge, probe = t["routers"]["ridge_relevant_mass"], t["routers"]["probe"]
            joint = t["routers"]["joint_router"]
            lines.append(
                f"| {task} | {t['queries']} | {t['bm25']:.4f} | {t['best_fixed']:.4f} "
                f"| {t['oracle']:.4f} | {ridge['ndcg10']:.4f} | {ridge['usage']} "
                f"| {probe['usage']} | {joint['usage']} |"
            )
    return lines


def dev_choice(study: dict[str, Any]) -> tuple[str, float, str]:
    """The variant the defaults should use, from **dev** figures only: among variants whose
    every fixed depth reaches BM25 − 0.005 on dev (no crippled depth), the one with the highest
    dev NDCG@10 of its best policy (best fixed depth, or a router whose dev gain over it has a
    CI above 0). Returns (variant, its dev NDCG@10, the policy)."""
    best: tuple[str, float, str] | None = None
    for name, variant in study["variants"].items():
        dev = variant["dev"]
        if dev["worst_depth_minus_bm25"] < -0.005:
            continue
        value, policy = dev["best_fixed"], f"best fixed depth {dev['best_fixed_depth']}"
        for router, figures in dev["routers"].items():
            if figures["minus_best_fixed"]["low"] > 0 and figures["ndcg10"] > value:
                value, policy = figures["ndcg10"], router
        if best is None or value > best[1]:
            best = (name, value, policy)
    return best if best is not None else ("none", float("nan"), "every variant cripples a depth")


def preset_label(preset: dict[str, Any]) -> str:
    """``quick`` or ``quick, semantic=True``: the preset and the fields a study overrode."""
    from maw_gym.presets import get_preset

    named = get_preset(preset["name"]).to_dict()
    changed = [f"{k}={v}" for k, v in preset.items() if k in named and named[k] != v]
    return ", ".join([f"`{preset['name']}`", *changed])


def dataset_section(study: dict[str, Any]) -> list[str]:
    """One dataset's tables (markdown lines)."""
    queries = ", ".join(f"{k} {v}" for k, v in study["queries"].items())
    lines = [
        f"## {study['dataset']} (preset {preset_label(study['preset'])})",
        "",
        f"Produced by `{study['command']}`. Queries: {queries}.",
        "",
        "BM25 Recall@k and the NDCG@10 of a perfect rerank of the top k (no encoder):",
        "",
        "| k | dev recall | dev ceiling | test recall | test ceiling |",
        "|---|---|---|---|---|",
    ]
    for k, dev in study["recall"]["dev"].items():
        test = study["recall"]["test"][k]
        lines.append(
            f"| {k} | {dev['recall']:.3f} | {dev['ndcg10_ceiling']:.3f} "
            f"| {test['recall']:.3f} | {test['ndcg10_ceiling']:.3f} |"
        )
    lines += ["", "NDCG@10 levels and depth diversity:", "", *_levels_table(study)]
    lines += ["", "Learned routers (trained on router-train, chosen on dev):", ""]
    lines += [*_routers_table(study), *_tasks_table(study), ""]
    name, value, policy = dev_choice(study)
    lines += [
        f"Dev-only choice (`dev_choice`): **{name}** (dev NDCG@10 {value:.4f} with {policy}).",
        "",
    ]
    return lines


def plot_study(studies: list[dict[str, Any]], path: Path) -> None:
    """Per dataset: test headroom vs seed control per variant, and routers' gains with CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(studies), 2, figsize=(12, 3.6 * len(studies)), squeeze=False)
    for row, study in enumerate(studies):
        names = list(study["variants"])
        tests = [study["variants"][n]["test"] for n in names]
        left, right = axes[row]
        x = range(len(names))
        left.bar([i - 0.2 for i in x], [t["headroom"] for t in tests], 0.4, label="oracle − best")
        left.bar([i + 0.2 for i in x], [t["seed_control"] for t in tests], 0.4, label="seed ctrl")
        left.set_xticks(list(x), names, fontsize=8)
        label = preset_label(study["preset"]).replace("`", "")
        left.set_title(f"{study['dataset']} ({label}): test headroom vs seed control", fontsize=9)
        left.legend(fontsize=7)
        for j, router in enumerate(ROUTERS):
            gains = [t["routers"][router]["minus_best_fixed"] for t in tests]
            mean = [g["mean"] for g in gains]
            err = [[g["mean"] - g["low"] for g in gains], [g["high"] - g["mean"] for g in gains]]
            right.errorbar([i + 0.15 * (j - 1) for i in x], mean, yerr=err, fmt="o", label=router)
        right.axhline(0, color="black", linewidth=0.8)
        right.set_xticks(list(x), names, fontsize=8)
        right.set_title("test NDCG@10 gain over best fixed depth (95% CI)", fontsize=9)
        right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(studies: list[dict[str, Any]], markdown: Path, png: Path) -> None:
    """Write the study page and its PNG from the studies' JSON."""
    lines = [
        "# Depth study",
        "",
        "Generated by `maw-gym encoder study-render` from the JSON of the commands named below;"
        " do not edit by hand. Bold: a paired bootstrap 95% CI that excludes 0. Headroom:"
        " per-query oracle over depths − best fixed depth (chosen on dev); seed control: the"
        " same over as many NON-MAW seeds as depths. Routers learn on router-train (train"
        " queries the encoder never saw).",
        "",
        f"![depth study]({png.name})",
        "",
    ]
    for study in studies:
        lines += dataset_section(study)
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text("\n".join(lines))
    plot_study(studies, png)
