"""The --device helper, and CPU vs CUDA agreement (the latter needs a CUDA GPU)."""

from __future__ import annotations

import argparse

import pytest
import torch

from maw_gym.device import half_autocast, resolve_device
from maw_gym_leaderboard.command import add_device_argument

CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)


def test_auto_follows_cuda_availability_and_bad_names_are_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="device='cuda': torch sees no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match="device='gpu': expected one of auto, cpu, cuda"):
        resolve_device("gpu")


def test_cpu_autocast_changes_nothing_and_the_option_parses() -> None:
    x = torch.randn(4, 8)
    with half_autocast(torch.device("cpu")):
        y = x @ x.T
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, x @ x.T, rtol=0, atol=0)
    parser = argparse.ArgumentParser()
    add_device_argument(parser)
    assert parser.parse_args([]).device == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "tpu"])


@CUDA
def test_cuda_results_match_cpu_within_float_tolerance() -> None:
    """States (bf16/fp16 autocast on the GPU), the tables of a shard (float32) and a supervised
    router trained on each device agree within float tolerance."""
    import numpy as np

    from maw_gym.base_encoder import BaseEncoder
    from maw_gym.build import resolve_encoder
    from maw_gym.encoder.shards import scored_arrays
    from maw_gym.encoder.train import TrainedEncoder
    from maw_gym.pipeline import split_inputs
    from maw_gym.presets import get_preset
    from maw_gym.tables import Tables
    from maw_gym_agents.supervised import SupervisedConfig, train

    queries, docs = ["who built the ark", "a psalm of david"], ["noah built an ark", "psalm"]
    states = {
        device: BaseEncoder(max_length=16, device=device).compute_pairs(queries, docs)[0]
        for device in ("cpu", "cuda")
    }
    # Half-precision activations through 6 layers: a few hundredths on values of order 1.
    np.testing.assert_allclose(states["cuda"], states["cpu"], atol=0.1, rtol=0.05)
    preset = get_preset("smoke")
    inputs = split_inputs("nave-kjv", "dev", preset.inputs, rows=(0, 8), device="cpu")
    directory = resolve_encoder("nave-kjv", preset, device="cpu")
    models = {
        device: TrainedEncoder.load(directory, device=device).models for device in ("cpu", "cuda")
    }
    cpu, cuda = (
        scored_arrays(inputs, m["maw"], m["nonmaw_0"], m.get("stack")) for m in models.values()
    )
    for name, array in cpu.items():
        if array.dtype.kind == "f":
            np.testing.assert_allclose(cuda[name], array, atol=1e-4, rtol=1e-4, err_msg=name)
        else:  # ids, masks, judgments: not computed by torch
            np.testing.assert_array_equal(cuda[name], array, err_msg=name)
    tables = Tables.synthetic(num_queries=64, best_depth=1)
    logits = {
        device: train(
            "MAW/DepthSelection-v3",
            tables,
            SupervisedConfig(epochs=5, device=device),
            progress=False,
        )[0].depth_logits(tables.observation)
        for device in ("cpu", "cuda")
    }
    np.testing.assert_allclose(logits["cuda"], logits["cpu"], atol=1e-3)
