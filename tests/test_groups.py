"""The ground-truth tier's groups: task labels, clustering, expert depths and loss weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_reranker import DEPTH, HEAD_DIM, HEADS, HIDDEN, POOL, fake_inputs

from maw_gym.data import write_beir_folder
from maw_gym.encoder.reranker import (
    MAWReranker,
    QueryBatch,
    RerankerConfig,
    TrainConfig,
    depth_candidate_scores,
    per_query_listwise,
    training_step,
)
from maw_gym.groups import (
    QueryGroups,
    expert_depths,
    group_loss_weights,
    kmeans,
    nearest_centroid,
    spec_groups,
    specialisation_matrix,
    task_groups,
    task_labels,
)
from maw_gym.presets import get_preset
from maw_gym.specs import EncoderSpec, parse_group_source, spec_dict


def test_expert_depths_interleave_and_refuse_more_groups_than_depths() -> None:
    assert expert_depths(3, 8) == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert expert_depths(2, 2) == [[0], [1]]
    with pytest.raises(ValueError, match="3 query groups need at least as many depths"):
        expert_depths(3, 2)
    with pytest.raises(ValueError, match="depth=2"):
        get_preset("smoke").with_overrides(depth=2, specialisation="groups", groups="cluster:3")


def test_loss_weights_by_hand() -> None:
    # G = 2, D = 3: group 0 owns depths 0 and 2, group 1 owns depth 1.
    index = np.array([0, 1])
    np.testing.assert_allclose(
        group_loss_weights(index, 2, 3, 0.0), [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]]
    )
    np.testing.assert_allclose(group_loss_weights(index, 2, 3, 1.0), np.full((2, 3), 1 / 3))
    quarter = group_loss_weights(index, 2, 3, 0.25)
    np.testing.assert_allclose(quarter[0], [0.75 * 0.5 + 0.25 / 3, 0.25 / 3, 0.75 * 0.5 + 0.25 / 3])
    np.testing.assert_allclose(quarter.sum(1), 1.0)
    with pytest.raises(ValueError, match="group_mix must lie in"):
        group_loss_weights(index, 2, 3, 1.5)


@pytest.mark.parametrize(
    ("mix", "weights"),
    [
        # query 0 in group 0 (depths 0, 2 of D=4 with G=2), query 1 in group 1 (depths 1, 3)
        (0.0, [[0.5, 0.0, 0.5, 0.0], [0.0, 0.5, 0.0, 0.5]]),
        (1.0, [[0.25] * 4, [0.25] * 4]),
    ],
)
def test_group_training_step_weights_each_depths_loss_by_hand(
    mix: float, weights: list[list[float]]
) -> None:
    inputs = fake_inputs(n=2, c=4)
    inputs = dataclasses.replace(inputs, groups=QueryGroups(("a", "b"), np.array([0, 1])))
    torch.manual_seed(0)
    model = MAWReranker(RerankerConfig(HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL, router=False))
    batch = QueryBatch.from_inputs(inputs, np.arange(2))
    config = TrainConfig(specialisation="groups", group_mix=mix)
    loss, _ = training_step(model, batch, config, True, torch.Generator().manual_seed(0))
    scores = depth_candidate_scores(model, batch)
    losses = per_query_listwise(scores, batch.relevance, batch.candidate_mask)  # (2, D)
    expected = (torch.tensor(weights) * losses).sum(1).mean()
    torch.testing.assert_close(loss, expected)
    # Warm-up (not yet specialising) trains every depth alike, whatever the mix.
    warm, _ = training_step(model, batch, config, False, torch.Generator().manual_seed(0))
    torch.testing.assert_close(warm, losses.mean())


def test_group_training_needs_inputs_with_groups() -> None:
    model = MAWReranker(RerankerConfig(HIDDEN, HEADS, DEPTH, HEAD_DIM, POOL, router=False))
    batch = QueryBatch.from_inputs(fake_inputs(n=2, c=4), np.arange(2))
    with pytest.raises(ValueError, match="needs training inputs with query groups"):
        training_step(
            model,
            batch,
            TrainConfig(specialisation="groups"),
            True,
            torch.Generator().manual_seed(0),
        )


def test_groups_follow_subsets_and_key_models() -> None:
    inputs = fake_inputs(n=4, c=3)
    grouped = dataclasses.replace(inputs, groups=QueryGroups(("a", "b"), np.array([1, 0, 1, 0])))
    part = grouped.subset(np.array([2, 3]), "part")
    assert part.groups is not None and part.groups.index.tolist() == [1, 0]
    assert part.groups.labels().tolist() == ["b", "a"]
    # A model trained on groups depends on them: another grouping is another cache key.
    regrouped = dataclasses.replace(inputs, groups=QueryGroups(("a", "b"), np.array([0, 0, 1, 1])))
    keys = {x.model_key() for x in (inputs, grouped, regrouped)}
    assert len(keys) == 3


def _labelled_folder(root: Path) -> Path:
    """A tiny BEIR folder whose queries carry metadata.task (two tasks, three splits)."""
    corpus = {
        f"d{i}": {"text": f"verse {i} about {'sheep' if i % 2 else 'water'}"} for i in range(12)
    }
    queries, qrels, metadata = {}, {}, {}
    for split, count in {"train": 6, "dev": 4, "test": 4}.items():
        qrels[split] = {}
        for i in range(count):
            qid = f"{split}{i}"
            task = "sheep" if i % 2 else "water"
            queries[qid] = f"where is the {task}"
            qrels[split][qid] = {f"d{i}": 1}
            metadata[qid] = {"task": task}
    return write_beir_folder(root, corpus, queries, qrels, query_metadata=metadata)


def test_task_groups_read_metadata_task(tmp_path: Path) -> None:
    folder = _labelled_folder(tmp_path / "beir")
    preset = get_preset("smoke").with_overrides(specialisation="groups", groups="task")
    ids = np.array(["test1", "dev0", "train3"])
    groups = spec_groups(str(folder), preset.inputs, preset.encoder, ids)
    assert groups.names == ("sheep", "water")
    assert groups.labels().tolist() == ["sheep", "water", "sheep"]
    # The old study's reader: "?" for an unlabelled query, None for a folder without labels.
    rows = [{"_id": "1", "text": "a", "metadata": {"task": "web"}}, {"_id": "2", "text": "b"}]
    (tmp_path / "corpus.jsonl").write_text("")
    (tmp_path / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert task_labels(str(tmp_path), np.array(["2", "1"])).tolist() == ["?", "web"]
    with pytest.raises(ValueError, match="query '2' has task '\\?'"):
        task_groups(str(tmp_path), np.array(["1", "2"]), ("web",))
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "1", "text": "a"}))
    assert task_labels(str(tmp_path), np.array(["1"])) is None
    with pytest.raises(ValueError, match="no query has metadata"):
        task_groups(str(tmp_path), np.array(["1"]), ())


def test_kmeans_finds_separated_clusters_deterministically() -> None:
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = np.repeat(np.arange(3), 20)
    points = centres[truth] + rng.normal(scale=0.5, size=(60, 2))
    found = kmeans(points, 3)
    np.testing.assert_array_equal(found, kmeans(points, 3))  # same seed, same centroids
    labels = nearest_centroid(points, found)
    # The partition is the true one (cluster numbers may be permuted).
    assert len({(t, label) for t, label in zip(truth, labels, strict=True)}) == 3
    with pytest.raises(ValueError, match="cannot make 3 clusters"):
        kmeans(points[:2], 3)


def test_cluster_groups_split_query_types_the_same_way_every_time(tmp_path: Path) -> None:
    """k-means of the base encoder's embeddings of the train queries: the two query texts of
    the folder are two clusters, and dev/test queries join the cluster of their text."""
    folder = _labelled_folder(tmp_path / "beir")
    preset = get_preset("smoke").with_overrides(specialisation="groups", groups="cluster:2")
    ids = np.array(["train0", "train1", "dev2", "dev3", "test0"])
    groups = spec_groups(str(folder), preset.inputs, preset.encoder, ids)
    again = spec_groups(str(folder), preset.inputs, preset.encoder, ids)
    np.testing.assert_array_equal(groups.index, again.index)
    assert groups.names == ("cluster0", "cluster1")
    water, sheep = groups.index[0], groups.index[1]
    assert water != sheep
    assert groups.index.tolist() == [water, sheep, water, sheep, water]


def test_group_source_names() -> None:
    assert parse_group_source("task") is None
    assert parse_group_source("cluster:4") == 4
    for bad in ("cluster:1", "cluster:x", "tasks"):
        with pytest.raises(ValueError, match="expected 'task' or 'cluster:K'"):
            parse_group_source(bad)
    with pytest.raises(ValueError, match="set specialisation=groups together with"):
        get_preset("smoke").with_overrides(groups="task")


def test_specialisation_matrix_by_hand() -> None:
    # G = 2, D = 2: depth 0 is group 0's expert, depth 1 group 1's.
    per_depth = np.array([[1.0, 0.5], [0.8, 0.4], [0.2, 0.6], [0.0, 0.0]])
    groups = QueryGroups(("a", "b"), np.array([0, 0, 1, 1]))
    matrix = specialisation_matrix(per_depth, groups)
    assert matrix["a"]["depths"] == pytest.approx([0.9, 0.45])
    assert matrix["a"]["own_minus_other"]["mean"] == pytest.approx(0.45)
    assert matrix["a"]["own_minus_other"]["low"] == pytest.approx(0.4)  # both queries > 0
    assert matrix["b"]["own_minus_other"]["mean"] == pytest.approx(0.2)
    assert matrix["b"]["best_own_minus_best_other"] == pytest.approx(0.2)


@pytest.mark.slow
def test_the_tier_runs_unchanged_on_another_labelled_beir_folder(tmp_path: Path) -> None:
    """Nothing in the tier is specific to kjv-tasks: a tiny folder with metadata.task goes
    through encoder training, tables, matrix, seed control, ceilings and controls at every ρ,
    and the tier preset's encoder is the pipeline's (one cache entry per ρ)."""
    from maw_gym_leaderboard.study.tier import run_tier, summary_lines

    folder = _labelled_folder(tmp_path / "beir")
    out = tmp_path / "tier.json"
    env = "MAW/DepthSelection-v3"
    result = run_tier(str(folder), get_preset("smoke"), "task", (0.0, 1.0), out, env)
    assert json.loads(out.read_text())["mixes"].keys() == {"0.0", "1.0"}
    assert result["groups"]["names"] == ["sheep", "water"]
    for figures in result["mixes"].values():
        matrix = figures["test"]["matrix"]
        assert matrix["sheep"]["own_depths"] == [0, 2] and matrix["water"]["queries"] == 2
        assert {"ceiling-ridge-ndcg", "ceiling-mlp-ndcg", "random", "hash"} <= set(
            figures["test"]["policies"]
        )
        assert figures["test"]["seed_control"] >= 0.0
        assert 0.0 <= figures["group_probe_accuracy"]["test"] <= 1.0
    recorded = result["mixes"]["0.0"]["preset"]["encoder"]
    assert (recorded["specialisation"], recorded["group_mix"]) == ("groups", 0.0)
    hashes = {figures["encoder_hash"] for figures in result["mixes"].values()}
    assert len(hashes) == 2  # ρ trains another encoder
    assert len(summary_lines(result)) == 2


@pytest.mark.slow
def test_the_pipeline_encoder_trains_its_depths_on_groups(tmp_path: Path) -> None:
    """``maw-gym encoder train`` with a tier preset reads the groups (so the leaderboard's
    tables of a tier preset come from expert depths), and ρ is part of the encoder's key."""
    from maw_gym.encoder.train import encoder_config, table_models, train_encoder

    folder = str(_labelled_folder(tmp_path / "beir"))
    preset = get_preset("smoke").with_overrides(
        layers=1, seed_controls=1, specialisation="groups", groups="task", group_mix=0.0
    )
    directory = train_encoder(folder, preset.inputs, preset.encoder, out=tmp_path / "encoder")
    config = json.loads((directory / "config.json").read_text())
    train = config["metrics"]["maw"]["train_config"]
    assert (train["specialisation"], train["group_mix"]) == ("groups", 0.0)

    def key_config(p):
        return encoder_config(folder, p.inputs, p.encoder, table_models(p.encoder, p.inputs))

    assert key_config(preset.with_overrides(group_mix=1.0)) != key_config(preset)


#: Encoder and tables keys of quick and smoke on nave-kjv at main f11b05a, before the tier
#: (``encoder_key``, and ``tables_key`` of train, dev, test for an encoder whose content hash
#: is "pinned"): the tier's fields must not enter them while they are at their defaults.
PRE_TIER_KEYS = {
    "quick": ("8c2c9d0293ca7f38", ("c2adc8b960b49a77", "8fe0cc7b3ad0d267", "949d80ec221d59e2")),
    "smoke": ("04c69a79090f8251", ("098ec469f29589bb", "2016f5f6cc6edce1", "322ff812c926aa9a")),
}


@pytest.mark.parametrize("name", sorted(PRE_TIER_KEYS))
def test_settings_without_groups_keep_their_pre_tier_cache_keys(name: str) -> None:
    """The tier's fields do nothing without groups, so they stay out of every cache key that
    existed before them: encoders, tables (and the depth study's models) are not rebuilt."""
    from maw_gym.build import tables_key
    from maw_gym.encoder.train import encoder_config, encoder_key, table_models

    preset = get_preset(name)
    config = encoder_config(
        "nave-kjv", preset.inputs, preset.encoder, table_models(preset.encoder, preset.inputs)
    )
    encoder = {**config, "content_hash": "pinned"}
    tables = tuple(
        tables_key("nave-kjv", split, preset.inputs, encoder) for split in ("train", "dev", "test")
    )
    assert (encoder_key(config), tables) == PRE_TIER_KEYS[name]
    # The default specialisation's key dicts are those of specs without the tier's fields.
    spec = preset.encoder
    assert "groups" not in spec_dict(spec) and "group_mix" not in spec_dict(spec)
    assert spec_dict(spec) == {
        f.name: getattr(spec, f.name)
        for f in dataclasses.fields(EncoderSpec)
        if f.name not in ("groups", "group_mix")
    }
    for _, train in table_models(spec, preset.inputs).values():
        assert "group_mix" not in spec_dict(train)
    assert "group_mix" not in config["models"]["maw"]["train"]


def test_tier_fields_enter_the_keys_where_set() -> None:
    tier = get_preset("quick").with_overrides(specialisation="groups", groups="task")
    assert tier.to_dict()["encoder"]["groups"] == "task"
    assert "group_mix" not in tier.to_dict()["encoder"]  # ρ = 1 is its default
    assert spec_dict(TrainConfig(specialisation="groups", group_mix=0.5))["group_mix"] == 0.5
    assert spec_dict(tier.with_overrides(group_mix=0.0).encoder)["group_mix"] == 0.0
    with pytest.raises(ValueError, match="needs specialisation=groups"):
        get_preset("quick").with_overrides(group_mix=0.5)
    with pytest.raises(ValueError, match="expected a value in"):
        tier.with_overrides(group_mix=1.5)
