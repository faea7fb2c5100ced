"""Tables artifacts: export → import elsewhere → identical episodes; tampered files refused."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import maw_gym  # noqa: F401  (registers the envs)
from maw_gym.artifacts import (
    ARTIFACT_MANIFEST,
    export_artifact,
    install_artifact,
    read_artifact,
    tables_fingerprint,
)
from maw_gym.tables import Tables
from maw_gym_leaderboard.cli import main

ENV = "MAW/DepthSelection-v3"


@pytest.fixture
def splits() -> dict[str, Tables]:
    return {
        split: Tables.synthetic(num_queries=12, seed=seed, layers=True)
        for seed, split in enumerate(("train", "dev", "test"))
    }


@pytest.fixture
def artifact(splits, tmp_path) -> Path:
    path = tmp_path / "bench.tar"
    export_artifact(splits, {"maw_gym_version": "test", "preset": {"name": "synthetic"}}, path)
    return path


def _rewrite(source: Path, target: Path, change) -> None:
    """Copy the tar ``source`` to ``target``, passing each (name, bytes) through ``change``,
    which returns a list of (name, bytes) to write instead."""
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        for member in old.getmembers():
            data = old.extractfile(member).read()
            for name, payload in change(member.name, data):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                new.addfile(info, io.BytesIO(payload))


def _play(tables, seed: int = 0) -> tuple[list, list]:
    env = gym.make(ENV, tables=tables, split="test")
    observations, rewards = [], []
    obs, _ = env.reset(seed=seed)
    for action in (0, 3, 1, 2, 2, 0):
        observations.append(obs)
        obs, reward, *_ = env.step(action)
        rewards.append(reward)
        obs, _ = env.reset()
    return observations, rewards


def test_round_trip_gives_identical_observations_and_rewards(
    splits, artifact, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("MAW_GYM_CACHE", str(tmp_path / "elsewhere"))
    installed, manifest = install_artifact(artifact)
    assert installed.is_relative_to(tmp_path / "elsewhere")
    expected = _play(splits["test"])
    for source in (installed, str(artifact)):  # the installed directory and the file itself
        observations, rewards = _play(source)
        np.testing.assert_array_equal(np.array(observations), np.array(expected[0]))
        assert rewards == expected[1]
    _, loaded = read_artifact(artifact)
    for split, tables in splits.items():
        assert tables_fingerprint(loaded[split]) == tables_fingerprint(tables)
        assert manifest["splits"][split]["fingerprint"] == tables_fingerprint(tables)
    assert install_artifact(artifact)[0] == installed  # a second import reuses it


def test_fingerprint_changes_with_one_value(splits) -> None:
    tables = splits["test"]
    before = tables_fingerprint(tables)
    tables.score_parts[3, 1, 0, 2] += 1e-3
    assert tables_fingerprint(tables) != before


def test_tampered_array_is_refused(artifact, tmp_path) -> None:
    def flip(name: str, data: bytes):
        if name == "test/score_parts.npy":
            data = data[:-1] + bytes([data[-1] ^ 1])
        return [(name, data)]

    tampered = tmp_path / "tampered.tar"
    _rewrite(artifact, tampered, flip)
    with pytest.raises(ValueError, match=r"test/score_parts.npy: sha256 differs"):
        read_artifact(tampered)


def test_consistently_rehashed_tampering_is_caught_by_the_fingerprint(artifact, tmp_path) -> None:
    # Change an array AND its sha256 in the manifest: the split's fingerprint still differs.
    import hashlib

    changed = {}

    def forge(name: str, data: bytes):
        if name == "test/score_base.npy":
            array = np.load(io.BytesIO(data))
            array[0, 0] += 1.0
            buffer = io.BytesIO()
            np.save(buffer, array)
            changed["sha"] = hashlib.sha256(buffer.getvalue()).hexdigest()
            return [(name, buffer.getvalue())]
        return [(name, data)]

    first = tmp_path / "first.tar"
    _rewrite(artifact, first, forge)

    def fix_manifest(name: str, data: bytes):
        if name == ARTIFACT_MANIFEST:
            manifest = json.loads(data)
            manifest["splits"]["test"]["fields"]["score_base"]["sha256"] = changed["sha"]
            data = json.dumps(manifest).encode()
        return [(name, data)]

    forged = tmp_path / "forged.tar"
    _rewrite(first, forged, fix_manifest)
    with pytest.raises(ValueError, match="split 'test': tables fingerprint differs"):
        read_artifact(forged)


def test_path_traversal_member_is_refused_and_nothing_written(artifact, tmp_path) -> None:
    def add_escape(name: str, data: bytes):
        return (
            [(name, data), ("../escaped.npy", data)]
            if name == ARTIFACT_MANIFEST
            else [(name, data)]
        )

    evil = tmp_path / "sub" / "evil.tar"
    evil.parent.mkdir()
    _rewrite(artifact, evil, add_escape)
    with pytest.raises(ValueError, match=r"member '\.\./escaped\.npy'"):
        read_artifact(evil)
    assert not (tmp_path / "escaped.npy").exists()


class _Payload:
    """Unpickling this runs ``Path(marker).touch()``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("declared", ["|O", "<f4"])
def test_crafted_pickle_payload_is_refused_without_running(
    artifact, tmp_path, declared: str
) -> None:
    # A pickled object array replaces a field, with the manifest's sha256 and shape updated to
    # match it: declared as an object dtype it is refused before parsing, declared as float32
    # it reaches np.load(allow_pickle=False), which refuses it. Either way nothing runs.
    import hashlib

    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    payload = np.empty(12, dtype=object)
    payload[0] = _Payload(marker)
    np.save(buffer, payload, allow_pickle=True)
    data = buffer.getvalue()

    def inject(name: str, original: bytes):
        if name == "test/score_base.npy":
            return [(name, data)]
        if name == ARTIFACT_MANIFEST:
            manifest = json.loads(original)
            field = manifest["splits"]["test"]["fields"]["score_base"]
            field.update(sha256=hashlib.sha256(data).hexdigest(), dtype=declared)
            field["shape"] = [12] if declared == "|O" else [(len(data) - 128) // 4]
            return [(name, json.dumps(manifest).encode())]
        return [(name, original)]

    evil = tmp_path / "pickle.tar"
    _rewrite(artifact, evil, inject)
    with pytest.raises(ValueError, match="score_base"):
        read_artifact(evil)
    assert not marker.exists()


def test_cli_export_refused_import_and_split_choice(artifact, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.tar"
    _rewrite(artifact, bad, lambda n, d: [(n, d[:-1] + b"\x00" if n.endswith(".npy") else d)])
    assert main(["tables", "import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "sha256 differs" in err and "Traceback" not in err
    assert main(["tables", "import", str(tmp_path / "missing.tar")]) == 2
    with pytest.raises(ValueError, match="no split 'valid'"):
        gym.make(ENV, tables=str(artifact), split="valid")


def test_cli_exports_the_smoke_benchmark_with_its_provenance(tmp_path, monkeypatch) -> None:
    from maw_gym.build import ensure_tables

    monkeypatch.chdir(tmp_path)  # a relative OUT, as the README writes it
    assert main(["tables", "export", "--preset", "smoke", "smoke.tar"]) == 0
    manifest, loaded = read_artifact(tmp_path / "smoke.tar")
    test = ensure_tables("nave-kjv", "test", "smoke")
    assert manifest["splits"]["test"]["fingerprint"] == tables_fingerprint(test)
    assert manifest["encoder"]["hash"] == test.meta["encoder_hash"]
    assert manifest["preset"]["name"] == "smoke" and manifest["maw_gym_version"]
    assert sorted(loaded) == ["dev", "test", "train"]
