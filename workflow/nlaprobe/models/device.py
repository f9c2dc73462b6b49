"""The one device resolver of the package (models, ridge fits).

inputs -> outputs: a device name (`auto`, `cpu`, `cuda`, `cuda:<i>`, or a torch.device) -> a
torch.device. `auto` is CUDA when a GPU is visible at run time, else the CPU (the config itself
never probes devices); a CUDA device without a GPU, or any other name, is a DeviceError (a
ConfigError and a ValueError) naming the device and the valid ones.
"""

from __future__ import annotations

import torch

from nlaprobe.errors import DeviceError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device) -> torch.device:
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} requested but no CUDA GPU is available")
        return torch.device(name)
    raise DeviceError(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")
