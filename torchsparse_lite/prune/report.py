"""Size, cost and speed of a (pruned) model: parameters, MACs, measured latency; JSON + PNG output."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from ..models.stats import count_macs, count_parameters
from ..tensor import SparseTensor
from ..utils.timing import measure_clocks


def fresh_input(x: SparseTensor, device: torch.device | str | None = None) -> SparseTensor:
    """Same features and coordinates with an empty kernel-map cache (so maps are rebuilt)."""
    dev = torch.device(device) if device is not None else x.device
    return SparseTensor(x.feats.to(dev), x.coords.to(dev), x.stride, spatial_range=x.spatial_range, validate=False)


def measure_latency(
    model: nn.Module, x: SparseTensor, repeats: int = 5, warmup: int = 1, include_maps: bool = True
) -> dict[str, float]:
    """Wall time and process CPU time (ms) of ``model(x)`` in eval mode without gradients, on ``x``'s device.

    Args:
        include_maps: rebuild the kernel maps every run (end-to-end); False reuses
            one cache so only the convolutions are timed.

    Returns:
        ``median_ms`` / ``min_ms`` (wall clock) and ``median_cpu_ms`` / ``min_cpu_ms``
        (``time.process_time``: on a CPU shared with other jobs it counts only this
        process's work, so it is far less noisy than the wall clock; with one torch
        thread it is the single-core latency).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    was = model.training
    model.eval()
    shared = fresh_input(x)
    try:
        with torch.no_grad():
            wall, cpu = measure_clocks(
                model, setup=(lambda: fresh_input(x)) if include_maps else (lambda: shared), warmup=warmup,
                reps=repeats, device=x.device, clocks=(time.perf_counter, time.process_time),
            )  # fmt: skip
    finally:
        model.train(was)
    return {"median_ms": wall.median * 1e3, "min_ms": wall.min * 1e3, "median_cpu_ms": cpu.median * 1e3,
            "min_cpu_ms": cpu.min * 1e3, "repeats": repeats}  # fmt: skip


def model_summary(model: nn.Module, x: SparseTensor) -> dict[str, int]:
    """Parameters and MACs (conv + linear, :mod:`torchsparse_lite.models.stats` conventions) on ``x``."""
    return {"parameters": count_parameters(model), "macs": count_macs(model, fresh_input(x))}


def compare_latency(
    models: dict[str, nn.Module], x: SparseTensor, repeats: int = 5, include_maps: bool = True
) -> dict[str, dict[str, float]]:
    """Time several models on the same input in one run, interleaved round by round to share CPU noise.

    Returns:
        ``{name: {"median_ms", "min_ms", "median_cpu_ms", "min_cpu_ms", "repeats"}}`` (see :func:`measure_latency`).
    """
    runs: dict[str, list[dict]] = {k: [] for k in models}
    for _ in range(repeats):
        for name, m in models.items():
            runs[name].append(measure_latency(m, x, 1, warmup=0 if runs[name] else 1, include_maps=include_maps))
    out = {}
    for name, rs in runs.items():
        wall, cpu = [r["median_ms"] for r in rs], [r["median_cpu_ms"] for r in rs]
        out[name] = {"median_ms": statistics.median(wall), "min_ms": min(wall), "median_cpu_ms": statistics.median(cpu),
                     "min_cpu_ms": min(cpu), "repeats": repeats}  # fmt: skip
    return out


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON (tensors become lists), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def default(o: object) -> object:
        if isinstance(o, torch.Tensor):
            return o.tolist()
        raise TypeError(f"cannot serialise {type(o).__name__}")

    path.write_text(json.dumps(data, indent=2, default=default))
    return path


def plot_report(report: dict, path: str | Path) -> Path:
    """PNG: kept channels per group (before/after) and before/after bars of params, MACs, latency, metric."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    path = Path(path)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1.4]})
    kept = report.get("kept_channels", {})
    names = list(kept)
    a1.bar(range(len(names)), [kept[n][0] for n in names], color="#cccccc", label="before")
    a1.bar(range(len(names)), [kept[n][1] for n in names], color="#1f77b4", label="after")
    a1.set_xticks(range(len(names)))
    a1.set_xticklabels(names, rotation=90, fontsize=5)
    a1.set_ylabel("channels")
    a1.set_title("channels per group")
    a1.legend()
    b, a = report.get("before", {}), report.get("after", {})
    keys = [k for k in ("parameters", "macs", "cpu_latency_ms", "gpu_latency_ms", "metric") if k in b and k in a]
    rel = [a[k] / b[k] if b[k] else float("nan") for k in keys]
    a2.bar(keys, rel)
    a2.axhline(1.0, color="k", lw=0.8)
    a2.set_ylabel("after / before")
    a2.tick_params(axis="x", rotation=45, labelsize=7)
    for i, r in enumerate(rel):
        a2.text(i, r, f"{r:.2f}", ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
