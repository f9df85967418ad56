"""Timing primitives: warm-up, repetitions, median and inter-quartile range.

Every timed callable runs ``warmup`` times untimed, then ``reps`` times timed.
On CUDA the device is synchronised around each repetition (or timed with
CUDA events), so the numbers are wall time of finished work, not of launches.
The clock is injectable so the statistics can be tested on a fake timer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Summary of repeated measurements, all in seconds.

    Attributes:
        median: median of the samples.
        q1, q3: first and third quartiles (linear interpolation, numpy's default).
        iqr: ``q3 - q1``.
        min: fastest sample.
        samples: the raw samples in run order.
    """

    median: float
    q1: float
    q3: float
    iqr: float
    min: float
    samples: tuple[float, ...]

    def as_dict(self) -> dict:
        return asdict(self)


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Quantile ``q`` in [0, 1] of already sorted values, interpolating linearly between ranks."""
    if not sorted_values:
        raise ValueError("quantile: need at least one value")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile: q must be in [0, 1], got {q}")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo] * (1.0 - frac) + sorted_values[hi] * frac)


def summarize(samples: Sequence[float]) -> Timing:
    """Median, quartiles, IQR and minimum of ``samples`` (seconds)."""
    if len(samples) == 0:
        raise ValueError("summarize: samples is empty; run at least one repetition")
    s = sorted(float(v) for v in samples)
    q1, med, q3 = quantile(s, 0.25), quantile(s, 0.5), quantile(s, 0.75)
    return Timing(median=med, q1=q1, q3=q3, iqr=q3 - q1, min=s[0], samples=tuple(float(v) for v in samples))


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 1,
    reps: int = 5,
    device: torch.device | str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``reps`` timed ones.

    Args:
        fn: the work to time; its result is discarded.
        warmup: untimed calls first (compilation, caches, allocator).
        reps: timed calls (>= 1).
        device: when a CUDA device, each repetition is bracketed by
            ``torch.cuda.synchronize`` so queued kernels are counted.
        clock: seconds-returning clock (injectable for tests).

    Returns:
        The :class:`Timing` of the ``reps`` samples.
    """
    return measure_clocks(lambda _: fn(), warmup=warmup, reps=reps, device=device, clocks=(clock,))[0]


def measure_clocks(
    fn: Callable[[object], object],
    *,
    setup: Callable[[], object] = lambda: None,
    warmup: int = 1,
    reps: int = 5,
    device: torch.device | str | None = None,
    clocks: Sequence[Callable[[], float]] = (time.perf_counter,),
) -> tuple[Timing, ...]:
    """Time ``fn(setup())`` on several clocks at once; ``setup`` runs untimed before every call.

    The model-latency reports read wall time and process CPU time
    (``time.process_time``, which on a shared CPU counts only this process's
    work) of the same calls, and rebuild their input (e.g. an empty map
    cache) in ``setup`` so that only the forward pass is timed.

    Returns:
        One :class:`Timing` per clock, in the order of ``clocks``.
    """
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if not clocks:
        raise ValueError("clocks must hold at least one clock")
    dev = torch.device(device) if isinstance(device, str) else device
    for _ in range(warmup):
        fn(setup())
    _sync(dev)
    samples: list[list[float]] = [[] for _ in clocks]
    for _ in range(reps):
        arg = setup()
        _sync(dev)
        starts = [c() for c in clocks]
        fn(arg)
        _sync(dev)
        for out, c, t0 in zip(samples, clocks, starts):
            out.append(c() - t0)
    return tuple(summarize(s) for s in samples)


def measure_cuda_events(fn: Callable[[], object], *, warmup: int = 3, reps: int = 10) -> Timing:
    """Time ``fn()`` on the current CUDA stream with CUDA events (GPU only)."""
    if not torch.cuda.is_available():
        raise RuntimeError("measure_cuda_events needs CUDA; use measure() on the CPU")
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3)
    return summarize(samples)
