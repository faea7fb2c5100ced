"""The --device helper, and CPU vs CUDA agreement (the latter needs a CUDA GPU)."""

from __future__ import annotations

import argparse

import pytest
import torch

from maw_gym.device import add_device_argument, half_autocast, resolve_device

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
