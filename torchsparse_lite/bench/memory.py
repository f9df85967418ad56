"""Peak memory of a call: CUDA ``max_memory_allocated`` on GPU, the profiler's tensor-memory peak on CPU.

On the CPU PyTorch keeps no allocator statistics, so the call runs once under
``torch.profiler`` with ``profile_memory=True``: every op's own allocations
(``self_cpu_memory_usage``, positive) and every free (negative) are replayed
in time order and the running total's maximum is the peak of tensor memory
the call held above its starting level. It counts PyTorch tensors only (not
Python objects or a peer's own C++ buffers outside PyTorch's allocator).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def cpu_peak_tensor_bytes(fn: Callable[[], object]) -> int:
    """Run ``fn()`` under the profiler and return its peak of live tensor bytes above the start."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    running = peak = 0
    for e in events:
        running += e.self_cpu_memory_usage
        peak = max(peak, running)
    return int(peak)


def peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> tuple[int | None, str]:
    """Run ``fn()`` once and return (peak bytes above the starting level, method name)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        fn()
        torch.cuda.synchronize(dev)
        return int(torch.cuda.max_memory_allocated(dev) - base), "cuda_max_memory_allocated"
    return cpu_peak_tensor_bytes(fn), "cpu_profiler_peak_tensor_bytes"
