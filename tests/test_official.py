"""The official benchmarks shipped in the package (issue 19): pinned by the env version, loaded
verified without training anything, a tampered file refused."""

from __future__ import annotations

import dataclasses
import json
import lzma
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import maw_gym
from maw_gym import official
from maw_gym.artifacts import artifact_id, export_artifact, read_artifact
from maw_gym.build import ensure_tables
from maw_gym.presets import get_preset
from maw_gym.specs import SPLITS
from maw_gym.tables import Tables


def test_env_ids_carry_the_official_version_and_the_history_is_append_only() -> None:
    assert maw_gym.env_ids() and all(
        env.endswith(f"-v{official.ENV_VERSION}") for env in maw_gym.env_ids()
    )
    assert max(official.HISTORY) == official.ENV_VERSION
    ids = [b.artifact for benchmarks in official.HISTORY.values() for b in benchmarks]
    assert len(ids) == len(set(ids)), "a published artifact id reappears under another version"
    assert all(old.endswith("-v2") for old in maw_gym.SAME_EPISODES)


@pytest.mark.parametrize("benchmark", official.HISTORY[official.ENV_VERSION], ids=str)
def test_each_shipped_artifact_is_the_pinned_one(benchmark: official.OfficialBenchmark) -> None:
    """The packaged file verifies (every array's sha256) and its manifest hashes to the id the
    env version pins: changing the tables without a new version fails here."""
    manifest, splits = read_artifact(benchmark.path)
    assert artifact_id(manifest) == benchmark.artifact
    assert set(splits) == set(SPLITS)
    assert manifest["preset"]["name"] == benchmark.preset
    assert benchmark.path.stat().st_size < 15_000_000  # the package stays small


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> official.OfficialBenchmark:
    """A tiny official benchmark for (nave-kjv, smoke), shipped from a temporary folder."""
    splits = {split: Tables.synthetic(num_queries=12, seed=i) for i, split in enumerate(SPLITS)}
    for split, tables in splits.items():
        tables.meta = {"dataset": "nave-kjv", "split": split}
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    manifest = export_artifact(
        splits, {"preset": {"name": "smoke"}}, folder / "nave-kjv-smoke.tar.xz"
    )
    benchmark = official.OfficialBenchmark("nave-kjv", "smoke", artifact_id(manifest))
    monkeypatch.setattr(official, "BENCHMARKS_DIR", folder)
    monkeypatch.setattr(official, "OFFICIAL", {("nave-kjv", "smoke"): benchmark})
    monkeypatch.setitem(official.HISTORY, official.ENV_VERSION, (benchmark,))
    monkeypatch.setenv("MAW_GYM_CACHE", str(tmp_path / "cache"))
    return benchmark


def test_official_tables_load_without_training_and_equal_the_shipped_arrays(
    shipped: official.OfficialBenchmark, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an encoder was trained for an official benchmark")

    monkeypatch.setattr("maw_gym.build.train_encoder", refuse)
    _, expected = read_artifact(shipped.path)
    for split in SPLITS:
        tables = ensure_tables("nave-kjv", split, "smoke")
        np.testing.assert_array_equal(tables.score_parts, expected[split].score_parts)
    env = gym.make("MAW/DepthSelection-v3", preset="smoke", split="test")
    assert env.unwrapped.tables.num_queries == 12
    # another preset, overrides or an encoder of one's own are not the official benchmark
    with pytest.raises(AssertionError, match="encoder was trained"):
        ensure_tables("nave-kjv", "test", get_preset("smoke").with_overrides(epochs=1))
    with pytest.raises(AssertionError, match="encoder was trained"):
        ensure_tables("nave-kjv", "test", "smoke", rebuild=True)


def test_a_tampered_official_file_is_refused_and_runs_nothing(
    shipped: official.OfficialBenchmark, tmp_path: Path
) -> None:
    """Changing one array (and its hash in the manifest, as an attacker would) gives another
    manifest, so another artifact id than the one the env version pins."""
    import io
    import json
    import tarfile

    raw = lzma.decompress(shipped.path.read_bytes())
    members = {}
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        for member in archive.getmembers():
            members[member.name] = archive.extractfile(member).read()  # type: ignore[union-attr]
    manifest = json.loads(members["benchmark.json"])
    manifest["splits"]["test"]["meta"]["note"] = "changed"
    members["benchmark.json"] = json.dumps(manifest).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    shipped.path.write_bytes(lzma.compress(buffer.getvalue()))
    with pytest.raises(ValueError, match=r"is not the expected .*\(not the official"):
        ensure_tables("nave-kjv", "test", "smoke")
    from maw_gym.cache import cache_dir

    assert list(cache_dir("benchmarks").iterdir()) == []  # nothing of it was installed


def test_a_damaged_installed_copy_is_reinstalled(shipped: official.OfficialBenchmark) -> None:
    from maw_gym.cache import cache_dir

    first = ensure_tables("nave-kjv", "dev", "smoke")
    folder = cache_dir("benchmarks") / f"nave-kjv-smoke-{shipped.artifact}"
    (folder / "benchmark.json").write_text("{}")
    again = ensure_tables("nave-kjv", "dev", "smoke")
    np.testing.assert_array_equal(again.observation, first.observation)


def test_a_missing_official_file_names_it(shipped: official.OfficialBenchmark) -> None:
    shipped.path.unlink()
    with pytest.raises(FileNotFoundError, match=r"nave-kjv-smoke\.tar\.xz: the official"):
        ensure_tables("nave-kjv", "test", "smoke")


def test_reproduce_rebuilds_in_a_cache_of_its_own_and_reports_each_difference(
    shipped: official.OfficialBenchmark, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from maw_gym.cache import cache_root
    from maw_gym_leaderboard import reproduce as module

    _, expected = read_artifact(shipped.path)
    caches: list[Path] = []
    changed: list[float] = []

    def rebuild(dataset: str, split: str, preset: object, rebuild: bool) -> Tables:
        assert rebuild
        caches.append(cache_root())
        tables = expected[split]
        if split == "test":  # query 0's depths reversed: its scores, so its best depth, change
            parts = tables.score_parts.copy()
            parts[0] = parts[0][::-1]
            tables = dataclasses.replace(tables, score_parts=parts)
            changed.append(
                float(tables.alignment[0].argmax() != expected[split].alignment[0].argmax())
            )
        return tables

    monkeypatch.setattr(module, "ensure_tables", rebuild)
    report = module.reproduce("nave-kjv", get_preset("smoke"), tmp_path / "scratch")
    assert caches == [tmp_path / "scratch"] * len(SPLITS)  # never the user's cache
    assert cache_root() == tmp_path / "cache"  # restored afterwards
    assert report["splits"]["train"]["bitwise_equal"]
    test = report["splits"]["test"]
    assert not test["bitwise_equal"] and test["fields"]["score_parts"] > 0
    assert test["fields"]["query_ids"] == "equal"
    assert test["best_depth_changed_by_ndcg10"] == pytest.approx(changed[0] / 12)


def test_validate_replays_a_run_on_the_official_tables_it_names(
    shipped: official.OfficialBenchmark, tmp_path: Path
) -> None:
    """A run on the shipped tables names their id in config.json; validate loads those, not
    the publisher's encoder path (absent elsewhere, and a rebuild if present)."""
    from maw_gym.artifacts import tables_fingerprint
    from maw_gym.cache import write_json
    from maw_gym_leaderboard.submissions import run_tables

    run = tmp_path / "run"
    run.mkdir()
    config = {"dataset": "nave-kjv", "test_tables": {"encoder": "/nowhere/encoder"}}
    write_json(run / "config.json", {**config, "official_tables": shipped.artifact})
    _, expected = read_artifact(shipped.path)
    assert tables_fingerprint(run_tables(run, None)) == tables_fingerprint(expected["test"])
    write_json(run / "config.json", {**config, "official_tables": "0123456789abcdef"})
    with pytest.raises(FileNotFoundError, match="0123456789abcdef are not shipped"):
        run_tables(run, None)


def test_the_leaderboard_says_first_which_tables_it_ranks_on(tmp_path: Path, capsys) -> None:
    from maw_gym_leaderboard.cli import main

    argv = ["leaderboard", "--preset", "smoke", "--policies", "BM25", "--out", str(tmp_path)]
    assert main(argv) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "tables of nave-kjv at smoke built here (no official tables" in first
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["official_tables"] is None
