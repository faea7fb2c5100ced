"""Where torch computes: the one helper behind every ``--device {auto,cpu,cuda}`` option.

``auto`` means CUDA when a GPU is visible, else CPU, so the same command uses a GPU where there
is one. Only the base encoder's forward pass runs under half-precision autocast on a GPU (its
states are stored float16 anyway); everything else stays float32 on every device, so results
differ between devices by float rounding only (tests/test_device.py compares them).
"""

from __future__ import annotations

import contextlib

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    if isinstance(name, torch.device):
        return name
    if name not in DEVICE_CHOICES:
        raise ValueError(f"device={name!r}: expected one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda': torch sees no CUDA GPU (torch.cuda.is_available() is False); "
            "use --device cpu or auto"
        )
    return torch.device(name)


def half_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on a GPU that has it (fp16 otherwise); nothing on CPU, which keeps
    float32 and so its results bit for bit."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)
