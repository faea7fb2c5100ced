"""Sharded tables builds: shards read as one split, resume from finished shards, and a Ray build
(2 workers, one killed mid-shard) equals the single-process CPU build bit for bit."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from maw_gym import pipeline
from maw_gym.build import build_tables, resolve_encoder
from maw_gym.encoder import shards
from maw_gym.pipeline import ShardedRows, split_inputs
from maw_gym.presets import get_preset

PRESET = get_preset("smoke")


@pytest.fixture(scope="module")
def encoder_dir():
    return resolve_encoder("nave-kjv", PRESET, device="cpu")


def test_sharded_rows_index_like_the_concatenation() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 3, 2)) for n in (4, 1, 5)]
    joined, rows = np.concatenate(parts), ShardedRows(parts)
    assert rows.shape == joined.shape and len(rows) == 10
    for key in (np.array([9, 0, 4, 4, 5]), slice(2, 7), 7, (np.array([3, 6]), 1), (8, 0)):
        np.testing.assert_array_equal(rows[key], joined[key])


def test_split_states_are_its_shards_states(monkeypatch) -> None:
    """Training reads the whole split, a tables shard its rows: the same states, bit for bit."""
    monkeypatch.setattr(pipeline, "SHARD_QUERIES", 16)
    whole = split_inputs("nave-kjv", "train", PRESET.inputs)  # 48 queries: 3 shards
    assert isinstance(whole.states, ShardedRows) and len(whole.states.parts) == 3
    part = split_inputs("nave-kjv", "train", PRESET.inputs, rows=(16, 32))
    np.testing.assert_array_equal(part.states, whole.states[np.arange(16, 32)])
    np.testing.assert_array_equal(part.query_ids, whole.query_ids[16:32])
    np.testing.assert_array_equal(part.relevance, whole.relevance[16:32])


def test_finished_shards_are_reused_and_damaged_ones_recomputed(
    encoder_dir, tmp_path, monkeypatch
) -> None:
    first = build_tables(
        "nave-kjv",
        "dev",
        PRESET.inputs,
        encoder_dir,
        device="cpu",
        shard_queries=8,
        shard_dir=tmp_path,
    )
    files = sorted(tmp_path.glob("rows-*.npz"))
    assert [f.name for f in files] == [
        "rows-000000000-000000008.npz",
        "rows-000000008-000000016.npz",
        "rows-000000016-000000024.npz",
    ]
    files[0].unlink()
    files[2].write_bytes(files[2].read_bytes()[:100])
    computed = []
    real = shards.compute_shard
    monkeypatch.setattr(shards, "compute_shard", lambda job: computed.append(job.rows) or real(job))
    again = build_tables(
        "nave-kjv",
        "dev",
        PRESET.inputs,
        encoder_dir,
        device="cpu",
        shard_queries=8,
        shard_dir=tmp_path,
    )
    assert computed == [(0, 8), (16, 24)]
    for name, array in first.arrays().items():
        np.testing.assert_array_equal(getattr(again, name), array, err_msg=name)


def _kill_first_shard_worker(cache: Path, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Ray worker seen running ``compute_shard`` for this test's cache."""
    marker = f"MAW_GYM_CACHE={cache}\0".encode()
    while not stop.is_set():
        for proc in Path("/proc").iterdir():
            try:
                running = (proc / "cmdline").read_bytes().startswith(b"ray::compute_shard")
                if running and marker in (proc / "environ").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
                    killed.append(int(proc.name))
                    return
            except (OSError, ValueError):  # not a process, gone, or not ours
                continue
        time.sleep(0.05)


@pytest.fixture
def one_thread():
    """One torch thread per shard, so the 2-CPU head runs 2 shards at once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.ray
def test_ray_build_with_a_killed_worker_equals_the_local_build(
    ray_head, one_thread, encoder_dir, tmp_path, monkeypatch
) -> None:
    """Each build computes its states from scratch in its own cache (Ray workers get theirs
    through the runtime env), so the states stage is compared as well as the tables stage.
    Without equal thread counts (``ShardJob.threads``) nonmaw_scores differed in a last bit."""
    build = {"device": "cpu", "shard_queries": 8}
    monkeypatch.setenv("MAW_GYM_CACHE", str(tmp_path / "local-cache"))
    local = build_tables(
        "nave-kjv", "dev", PRESET.inputs, encoder_dir, shard_dir=tmp_path / "local", **build
    )
    ray_cache = tmp_path / "ray-cache"
    monkeypatch.setenv("MAW_GYM_CACHE", str(ray_cache))
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_shard_worker, args=(ray_cache, killed, stop))
    killer.start()
    try:
        remote = build_tables(
            "nave-kjv",
            "dev",
            PRESET.inputs,
            encoder_dir,
            ray_address=ray_head,
            shard_dir=tmp_path / "ray",
            **build,
        )
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1, "no worker was caught running a shard"
    assert remote.meta["shards"] == 3 and remote.meta["ray_address"] == ray_head
    for name, array in local.arrays().items():
        np.testing.assert_array_equal(getattr(remote, name), array, err_msg=name)


@pytest.mark.parametrize("value", ["127.0.0.1", "head:port", ":6379"])
def test_a_malformed_ray_address_exits_2_before_any_work(value, capsys) -> None:
    from maw_gym_leaderboard.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["tables", "build", "--ray-address", value])
    assert exit_info.value.code == 2
    assert f"argument --ray-address: {value!r}: expected local, auto or HOST:PORT" in (
        capsys.readouterr().err
    )
