"""Device selection shared by every training and measurement routine."""

from __future__ import annotations

import torch

from batchscale.errors import InputError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without CUDA is an :class:`InputError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda was requested but CUDA is not available on this machine")
        return torch.device(name)
    raise InputError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
