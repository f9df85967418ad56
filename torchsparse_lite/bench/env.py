"""Machine and software description recorded with every benchmark result."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform

import torch


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo (Linux) or ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    """Human name of a device: the GPU model on CUDA, the CPU model otherwise."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return cpu_name()


def machine_info(device: torch.device | str = "cpu") -> dict:
    """Date, host, CPU/GPU, thread counts and package versions."""
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "device": str(torch.device(device)),
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "versions": {
            "torch": torch.__version__,
            "torchsparse_lite": _version("torchsparse_lite"),
            "triton": _version("triton"),
            "spconv": _version("spconv") or _version("spconv-cu120") or _version("spconv-cu118"),
            "numpy": _version("numpy"),
        },
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }
