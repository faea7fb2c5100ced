"""The router-train split and the depth study's measurements (synthetic tables, tiny data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from maw_gym.groups import task_labels
from maw_gym.pipeline import router_queries
from maw_gym.tables import Tables
from maw_gym_leaderboard.study.study import split_metrics, task_breakdown


def test_router_queries_are_a_fixed_disjoint_share_whatever_the_order() -> None:
    ids = np.array([f"q{i}" for i in range(30)])
    held = router_queries(ids, 1 / 3)
    assert held.sum() == 10
    shuffled = np.random.default_rng(0).permutation(30)
    np.testing.assert_array_equal(router_queries(ids[shuffled], 1 / 3), held[shuffled])
    # A larger share keeps the smaller one's queries (one hash order).
    assert (router_queries(ids, 0.5) | ~held).all()
    with pytest.raises(ValueError, match="router_fraction must be in"):
        router_queries(ids, 1.0)


def _tables() -> Tables:
    """Two queries, D=2: depth 0 ranks query 0's relevant candidate first, depth 1 query 1's."""
    tables = Tables.synthetic(num_queries=2, depth=2, heads=1, pool=1, candidates=2)
    tables.relevance[:] = [[1, 0], [1, 0]]
    tables.candidate_mask[:] = True
    tables.ideal_gains[:] = 0
    tables.ideal_gains[:, 0] = 1
    tables.score_base[:] = 0
    tables.score_parts[:] = 0
    tables.score_parts[0, 0, 0] = [1, 0]
    tables.score_parts[0, 1, 0] = [0, 1]
    tables.score_parts[1, 0, 0] = [0, 1]
    tables.score_parts[1, 1, 0] = [1, 0]
    tables.bm25_scores[:] = [[0, 1], [0, 1]]
    return Tables(
        **{f: getattr(tables, f) for f in Tables.__dataclass_fields__ if f != "alignment"}
    )


def test_split_metrics_by_hand() -> None:
    tables = _tables()
    second = 1 / np.log2(3)
    seeds = np.array([[1.0, second], [second, second]])  # (N, K) NON-MAW seeds' NDCG@10
    routed = {"oracle-like": np.array([0, 1]), "always-1": np.array([1, 1])}
    metrics = split_metrics(tables, seeds, best_fixed=0, best_seed=0, routed=routed)
    assert metrics["depths"] == pytest.approx([(1 + second) / 2] * 2)
    assert metrics["oracle"] == pytest.approx(1.0)
    assert metrics["headroom"] == pytest.approx(1 - (1 + second) / 2)
    assert metrics["seed_control"] == pytest.approx((1 + second) / 2 - (1 + second) / 2)
    assert metrics["bm25"] == pytest.approx(second)
    assert metrics["all_depth_ties"] == 0.0
    # The uniform mixture ties every candidate: BM25 order (candidate 0 first) wins the tie.
    assert metrics["uniform_mixture"] == pytest.approx(1.0)
    assert metrics["routers"]["oracle-like"]["ndcg10"] == pytest.approx(1.0)
    assert metrics["routers"]["always-1"]["usage"] == [0, 2]
    groups = task_breakdown(tables, np.array(["a", "b"]), 0, routed)
    assert groups["b"]["routers"]["oracle-like"] == {"ndcg10": pytest.approx(1.0), "usage": [0, 1]}
    assert groups["b"]["best_fixed"] == pytest.approx(second)


def test_task_labels_read_metadata_task_or_none(tmp_path: Path) -> None:
    rows = [{"_id": "1", "text": "a", "metadata": {"task": "web"}}, {"_id": "2", "text": "b"}]
    (tmp_path / "corpus.jsonl").write_text("")
    (tmp_path / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert task_labels(str(tmp_path), np.array(["2", "1"])).tolist() == ["?", "web"]
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "1", "text": "a"}))
    assert task_labels(str(tmp_path), np.array(["1"])) is None


def test_study_cli_refuses_unknown_variants_and_missing_json(tmp_path: Path, capsys) -> None:
    from maw_gym_leaderboard.cli import main

    out = str(tmp_path / "s.json")
    assert main(["encoder", "study", "--variants", "experts,nope", "--out", out]) == 2
    assert "--variants: unknown ['nope']" in capsys.readouterr().err
    assert main(["encoder", "study-render", str(tmp_path / "none.json")]) == 2
    assert "none.json: no such study JSON" in capsys.readouterr().err
    assert main(["encoder", "study", "--worker", "3/3", "--out", out]) == 2
    assert "--worker '3/3': expected I/W" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


def test_study_models_are_the_seed_control_then_one_encoder_per_variant() -> None:
    from maw_gym.presets import get_preset
    from maw_gym_leaderboard.study.study import VARIANTS, study_models

    preset = get_preset("smoke")
    depth = preset.encoder.depth
    models = study_models(preset, VARIANTS)
    names = [name for name, _, _ in models]
    assert names == [f"nonmaw {k}" for k in range(depth)] + [f"maw {v}" for v in VARIANTS]
    assert [config.seed for _, _, config in models[:depth]] == list(range(depth))
    sinkhorn = models[-1]
    assert sinkhorn[1].depth_heads and sinkhorn[2].specialisation == "sinkhorn"
    # A variant is the same encoder under every preset: quick's own levers do not leak in.
    quick = {name: model for name, model, _ in study_models(get_preset("quick"), VARIANTS)}
    assert get_preset("quick").encoder.depth_heads
    assert not quick["maw shared-head"].depth_heads
    assert quick["maw shared-head"].temperature_spread == 0.0
    assert quick["maw experts-local"].locality == 0.5


@pytest.mark.slow
def test_study_runs_on_another_beir_folder_and_renders(tmp_path: Path) -> None:
    """kjv-tasks (not nave-kjv, with query tasks) through the study and the page, tiny."""
    from maw_gym.presets import get_preset
    from maw_gym_leaderboard.study.render import render
    from maw_gym_leaderboard.study.study import VARIANTS, run_study

    preset = get_preset("smoke").with_overrides(depth=2, epochs=1, semantic=True)
    variants = {"experts-local": VARIANTS["experts-local"]}
    study = run_study("kjv-tasks", preset, variants, tmp_path / "s.json", "cmd")
    test = study["variants"]["experts-local"]["test"]
    assert set(test["tasks"]) <= {"nave", "web", "rv1909"}
    assert sum(t["queries"] for t in test["tasks"].values()) == study["queries"]["test"]
    render([json.loads((tmp_path / "s.json").read_text())], tmp_path / "p.md", tmp_path / "p.png")
    page = (tmp_path / "p.md").read_text()
    assert "Produced by `cmd`" in page
    assert "(preset `smoke`, semantic=True, depth=2, epochs=1)" in page
    assert all(f"| {task} | {t['queries']} |" in page for task, t in test["tasks"].items())
    assert (tmp_path / "p.png").stat().st_size > 0


def test_dev_choice_gates_then_takes_the_most_headroom_across_studies() -> None:
    from maw_gym_leaderboard.study.render import dev_choice

    def variant(worst: float, low: float, headroom: float) -> dict:
        return {
            "dev": {
                "best_fixed": 0.3,
                "best_fixed_depth": 2,
                "worst_depth_minus_bm25": worst,
                "best_fixed_minus_bm25": {"mean": 0.01, "low": low, "high": 0.02},
                "headroom": headroom,
                "seed_control": 0.01,
            }
        }

    plain = {"name": "smoke"}  # a study from before the semantic lever: its default, False
    semantic = {"name": "smoke", "semantic": True}
    studies = [
        {"preset": plain, "variants": {"crippled": variant(-0.01, 0.001, 0.05)}},
        {
            "preset": semantic,
            "variants": {
                "ties-bm25": variant(0.0, -0.001, 0.04),  # its CI over BM25 contains 0
                "flat": variant(0.0, 0.002, 0.005),
                "experts": variant(0.0, 0.001, 0.02),
            },
        },
    ]
    label, dev = dev_choice(studies)
    assert label == "experts with `smoke`, semantic=True" and dev["headroom"] == 0.02
    studies[1]["variants"].pop("experts")
    assert dev_choice(studies)[0] == "flat with `smoke`, semantic=True"
    studies[1]["variants"].pop("flat")
    assert dev_choice(studies) == ("none", None)


def test_reproduce_command_adds_what_todays_preset_changed() -> None:
    from maw_gym.presets import get_preset
    from maw_gym_leaderboard.study.render import flat_preset, preset_label, reproduce_command

    old = flat_preset(get_preset("quick").to_dict())  # studies recorded a flat preset then
    del old["semantic"]  # a study from before the lever: it ran without it
    old.update(epochs=2, depth_heads=False)  # depth_heads is a variant lever: not a change
    study = {"command": "maw-gym encoder study --preset quick --set epochs=2", "preset": old}
    assert preset_label(old) == "`quick`, semantic=False, epochs=2"
    assert reproduce_command(study) == study["command"] + " --set semantic=false"
    study["preset"] = get_preset("quick").with_overrides(epochs=2).to_dict()  # stage specs
    assert reproduce_command(study) == study["command"]


def test_per_task_depths_are_chosen_on_dev_and_scored_on_test() -> None:
    from maw_gym_leaderboard.study.render import per_task_depths, per_task_gain

    variant = {
        "dev": {"tasks": {"a": {"depths": [0.1, 0.3]}, "b": {"depths": [0.5, 0.2]}}},
        "test": {
            "tasks": {
                "a": {"queries": 3, "depths": [0.2, 0.1], "best_fixed": 0.2},  # dev picks 1
                "b": {"queries": 1, "depths": [0.6, 0.9], "best_fixed": 0.9},  # dev picks 0
                "c": {"queries": 4, "depths": [0.0, 0.0], "best_fixed": 0.0},  # not on dev
            }
        },
    }
    chosen = per_task_depths(variant)
    assert chosen == {"a": 1, "b": 0}
    # (3·(0.1 − 0.2) + 1·(0.6 − 0.9)) / 8 queries
    assert per_task_gain(variant["test"]["tasks"], chosen) == pytest.approx(-0.075)
