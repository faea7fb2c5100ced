"""``docs/depth-study.md`` and its PNG, generated from the depth study's JSON files only.

Nothing here is typed by hand: every figure comes from ``maw-gym encoder study`` output
(``maw_gym_leaderboard.study.study``), and the page names the commands that produced it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maw_gym.cache import atomic_path

ROUTERS = ("probe", "ridge_relevant_mass", "joint_router")


def _ci(interval: dict[str, float]) -> str:
    mark = "**" if interval["low"] > 0 or interval["high"] < 0 else ""
    return f"{mark}{interval['mean']:+.4f} [{interval['low']:+.4f}, {interval['high']:+.4f}]{mark}"


def _ratio(split: dict[str, Any]) -> str:
    ratio = _headroom_ratio(split)
    return f"{ratio:.1f}×" if ratio != float("inf") else "n/a"


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


def per_task_depths(variant: dict[str, Any]) -> dict[str, int]:
    """Each task's best depth on **dev**: the router that knows every query's task exactly
    and nothing else (the most a router reading only the query type can do)."""
    dev = variant["dev"]["tasks"]
    return {
        task: max(range(len(t["depths"])), key=t["depths"].__getitem__) for task, t in dev.items()
    }


def per_task_gain(tasks: dict[str, Any], chosen: dict[str, int]) -> float:
    """Mean NDCG@10 gain over the best fixed depth of routing each query to its task's depth
    (tasks without a dev choice keep the best fixed depth)."""
    total = sum(t["queries"] for t in tasks.values())
    return sum(
        t["queries"] * (t["depths"][chosen[task]] - t["best_fixed"])
        for task, t in tasks.items()
        if task in chosen
    ) / max(total, 1)


def _tasks_table(study: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, variant in study["variants"].items():
        tasks = variant["test"].get("tasks")
        if not tasks:
            continue
        chosen = per_task_depths(variant)
        lines += [
            f"\n**{name}**, test, per task (depth usage: queries sent to depth 0, 1, …; "
            "task depth: the task's best depth on dev, a router given every query's task):\n",
            "| task | queries | BM25 | best fixed | oracle | task depth | ridge router "
            "| ridge usage | probe usage | joint router usage |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for task, t in tasks.items():
            ridge, probe = t["routers"]["ridge_relevant_mass"], t["routers"]["probe"]
            joint = t["routers"]["joint_router"]
            by_task = f"{t['depths'][chosen[task]]:.4f} ({chosen[task]})" if task in chosen else "–"
            lines.append(
                f"| {task} | {t['queries']} | {t['bm25']:.4f} | {t['best_fixed']:.4f} "
                f"| {t['oracle']:.4f} | {by_task} | {ridge['ndcg10']:.4f} | {ridge['usage']} "
                f"| {probe['usage']} | {joint['usage']} |"
            )
        lines.append(
            "\nTask depths − best fixed, test (a mean over queries, no CI): "
            f"{per_task_gain(tasks, chosen):+.4f}."
        )
    return lines


def dev_choice(studies: list[dict[str, Any]]) -> tuple[str, dict[str, Any] | None]:
    """The encoder the defaults should use, from **dev** figures only, over every variant of
    one dataset's studies (each study a preset and its overrides):

    1. no crippled depth: every fixed depth reaches BM25 − 0.005 NDCG@10;
    2. a reranker worth routing: the best fixed depth beats BM25 (paired 95% CI above 0);
    3. the most routing headroom: the largest (oracle − best fixed) / seed control.

    Why not simply the best dev NDCG@10: that prefers encoders whose depths are
    interchangeable (every router then ties by construction), and differences of 0.001 are
    noise. Returns (a label such as ``experts with `quick`, semantic=True``, the chosen
    variant's dev figures), or ``("none", None)`` when no variant passes 1 and 2."""
    best: tuple[str, dict[str, Any]] | None = None
    for study in studies:
        for name, variant in study["variants"].items():
            dev = variant["dev"]
            if dev["worst_depth_minus_bm25"] < -0.005 or dev["best_fixed_minus_bm25"]["low"] <= 0:
                continue
            if best is None or _headroom_ratio(dev) > _headroom_ratio(best[1]):
                best = (f"{name} with {preset_label(study['preset'])}", dev)
    return best if best is not None else ("none", None)


def _headroom_ratio(split: dict[str, Any]) -> float:
    control = split["seed_control"]
    return split["headroom"] / control if control > 0 else float("inf")


def choice_lines(studies: list[dict[str, Any]]) -> list[str]:
    """The dev-only choice over one dataset's studies (markdown lines)."""
    label, dev = dev_choice(studies)
    if dev is None:
        return ["Dev-only choice (`dev_choice`): **none** (no variant passes its gates).", ""]
    gain = dev["best_fixed_minus_bm25"]
    return [
        f"Dev-only choice over the {len(studies)} studies above (`dev_choice`: no crippled "
        "depth, best fixed depth above BM25 with a CI excluding 0, then the most headroom over "
        f"the seed control): **{label}**; on dev, best fixed depth {dev['best_fixed_depth']} "
        f"at {dev['best_fixed']:.4f}, {_ci(gain)} over BM25, headroom {_ratio(dev)} the seed "
        "control.",
        "",
    ]


def flat_preset(preset: dict[str, Any]) -> dict[str, Any]:
    """A preset's fields as one flat dict, from ``Preset.to_dict()`` (stage -> fields) or from
    a study recorded before the stage specs (already flat)."""
    flat: dict[str, Any] = {}
    for key, value in preset.items():
        flat.update(value if isinstance(value, dict) else {key: value})
    return flat


def preset_changes(preset: dict[str, Any]) -> dict[str, Any]:
    """Where a study's preset differs from today's preset of that name, variant levers aside
    (a field missing from the study's JSON predates it: its default)."""
    from dataclasses import MISSING, fields

    from maw_gym.presets import get_preset
    from maw_gym.specs import STAGE_SPECS
    from maw_gym_leaderboard.study.study import NO_LEVERS  # each variant sets these itself

    named = flat_preset(get_preset(preset["name"]).to_dict())
    defaults = {
        f.name: f.default
        for spec in STAGE_SPECS.values()
        for f in fields(spec)
        if f.default is not MISSING
    }
    recorded = flat_preset(preset)
    studied = {k: recorded.get(k, defaults.get(k, v)) for k, v in named.items()}
    return {k: v for k, v in studied.items() if named[k] != v and k not in NO_LEVERS}


def preset_label(preset: dict[str, Any]) -> str:
    """``quick`` or ``quick, semantic=True``: the preset and :func:`preset_changes`."""
    changed = [f"{k}={v}" for k, v in preset_changes(preset).items()]
    return ", ".join([f"`{preset['name']}`", *changed])


def reproduce_command(study: dict[str, Any]) -> str:
    """The study's command, with ``--set`` for every field where today's preset differs and
    the command does not say so (a preset's defaults may have changed since it ran)."""
    command = study["command"]
    for key, value in preset_changes(study["preset"]).items():
        if f"--set {key}=" not in command:
            command += f" --set {key}={str(value).lower()}"
    return command


def _today(study: dict[str, Any]) -> str:
    again = reproduce_command(study)
    return "" if again == study["command"] else f"; with today's presets `{again}`"


def dataset_section(study: dict[str, Any]) -> list[str]:
    """One dataset's tables (markdown lines)."""
    queries = ", ".join(f"{k} {v}" for k, v in study["queries"].items())
    lines = [
        f"## {study['dataset']} (preset {preset_label(study['preset'])})",
        "",
        f"Produced by `{study['command']}`{_today(study)}. Queries: {queries}.",
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
    return [*lines, *_routers_table(study), *_tasks_table(study), ""]


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
        for offset, split in ((-0.2, "dev"), (0.2, "test")):
            ratios = [_headroom_ratio(study["variants"][n][split]) for n in names]
            ratios = [r if r != float("inf") else float("nan") for r in ratios]  # no control
            left.bar([i + offset for i in x], ratios, 0.4, label=split)
        left.axhline(1, color="grey", linestyle=":", linewidth=1, label="seed control")
        left.axhline(3, color="black", linestyle="--", linewidth=1, label="issue 14's goal")
        left.set_xticks(list(x), names, fontsize=8)
        label = preset_label(study["preset"]).replace("`", "")
        left.set_title(
            f"{Path(study['dataset']).name} ({label}): (oracle − best fixed) / seed control",
            fontsize=9,
        )
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
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
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
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for study in studies:
        by_dataset.setdefault(study["dataset"], []).append(study)
    for same_dataset in by_dataset.values():
        for study in same_dataset:
            lines += dataset_section(study)
        lines += choice_lines(same_dataset)
    with atomic_path(markdown) as tmp:
        tmp.write_text("\n".join(lines))
    plot_study(studies, png)
