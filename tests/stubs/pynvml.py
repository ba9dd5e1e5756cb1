"""A stand-in for nvidia-ml-py's `pynvml`, first on PYTHONPATH in tests: it reports the machine that $FAKE_NVML
describes (JSON: {"driver": "535.104.05", "cuda": 12020, "gpus": [{"name": "Tesla T4", "uuid": "GPU-...",
"capability": [7, 5]}]}), so that a test can show the project GPUs that this machine's torch cannot use, through the
project's own code. Without $FAKE_NVML it answers as a machine without the NVML library does."""

from __future__ import annotations

import json
import os
from typing import Any


class NVMLError(Exception):
    pass


_machine: dict[str, Any] = {}


def nvmlInit() -> None:
    if "FAKE_NVML" not in os.environ:
        raise NVMLError("NVML Shared Library Not Found")
    _machine.update(json.loads(os.environ["FAKE_NVML"]))


def nvmlShutdown() -> None:
    pass


def nvmlSystemGetDriverVersion() -> str:
    return _machine["driver"]


def nvmlSystemGetCudaDriverVersion() -> int:
    return _machine["cuda"]


def nvmlDeviceGetCount() -> int:
    return len(_machine["gpus"])


def nvmlDeviceGetHandleByIndex(index: int) -> dict[str, Any]:
    return _machine["gpus"][index]


def nvmlDeviceGetUUID(handle: dict[str, Any]) -> str:
    return handle["uuid"]


def nvmlDeviceGetName(handle: dict[str, Any]) -> str:
    return handle["name"]


def nvmlDeviceGetCudaComputeCapability(handle: dict[str, Any]) -> tuple[int, int]:
    return tuple(handle["capability"])
