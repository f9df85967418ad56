"""Shared pieces of ``benchmarks/gpu_check.py``: precisions, tolerances, the time budget, poisoning, rows.

Every check result is one *row* (a flat dict) with at least ``section``,
``case`` and ``status``: ``"pass"``, ``"fail"`` (a wrong number, a crash) or
``"skip"`` (out of time budget, or not applicable on this machine, with a
``note`` saying why). ``check.json`` is the list of rows.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch

# name: (dtype, tf32). fp32 is full precision (FMA); tf32 is fp32 storage on TF32 tensor cores.
PRECISIONS = {
    "fp32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "fp16": (torch.float16, False),
    "bf16": (torch.bfloat16, False),
}
DRY_PRECISIONS = ("fp32", "fp16", "bf16")  # the interpreter computes "tf32" in fp32: nothing to check there
# Relative-norm error limits of a single conv against the float64 reference on the same rounded inputs:
# fp32 accumulates in fp32 (~1e-7 per term); TF32 rounds both operands to 10 mantissa bits (~5e-4);
# fp16 / bf16 results are rounded to 11 / 8 mantissa bits on the way out (~3e-4 / ~2e-3).
TOL = {"fp32": 1e-5, "tf32": 2e-3, "fp16": 1e-3, "bf16": 1e-2}
# A whole network compounds roundings over ~50 layers, and the speed sections' reference is fp32 on the GPU.
NET_TOL = {"fp32": 1e-4, "tf32": 2e-2, "fp16": 2e-2, "bf16": 1e-1}
GROUPINGS = ("separate", "fixed", "adaptive", "dense")
DATAFLOWS = ("atomic", "output_stationary")
PASS, FAIL, SKIP = "pass", "fail", "skip"


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """``||got - ref|| / ||ref||`` in float64 on the CPU (inf when ``got`` holds NaN/inf)."""
    g, r = got.detach().double().cpu(), ref.detach().double().cpu()
    if g.shape != r.shape:
        raise ValueError(f"shape {list(g.shape)} vs reference {list(r.shape)}")
    if not bool(torch.isfinite(g).all()):
        return float("inf")
    den = float(r.norm())
    return float((g - r).norm()) / (den if den > 0 else 1.0)


def row(section: str, case: str, status: str, **fields) -> dict:
    """One result row (``status`` is ``pass``, ``fail`` or ``skip``)."""
    if status not in (PASS, FAIL, SKIP):
        raise ValueError(f"status must be pass, fail or skip, got {status!r}")
    return {"section": section, "case": case, "status": status, **fields}


def guarded(section: str, case: str, fields: dict, fn: Callable[..., dict], *args) -> dict:
    """``fn(*args)``'s row, or a ``fail`` row naming the exception (a crash is a failed check, not a dead script)."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported in the row
        return row(section, case, FAIL, note=f"{type(exc).__name__}: {exc}"[:400], **fields)


def guarded_rows(section: str, case: str, fields: dict, fn: Callable[..., list[dict]], *args) -> list[dict]:
    """``fn(*args)``'s rows, or one ``fail`` row naming the exception."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported in the row
        return [row(section, case, FAIL, note=f"{type(exc).__name__}: {exc}"[:400], **fields)]


class Budget:
    """Wall-clock budget split over sections; time a section leaves unused flows to the next ones."""

    def __init__(self, total_s: float, shares: dict[str, float]) -> None:
        if total_s <= 0:
            raise ValueError(f"budget must be positive, got {total_s}")
        self.total, self.t0 = float(total_s), time.monotonic()
        norm = sum(shares.values())
        self.ends, acc = {}, 0.0
        for name, share in shares.items():
            acc += share / norm
            self.ends[name] = acc * self.total
        self.section = next(iter(shares))

    def enter(self, section: str) -> None:
        if section not in self.ends:
            raise ValueError(f"unknown section {section!r}; sections: {list(self.ends)}")
        self.section = section

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        """Seconds left for the current section."""
        return self.ends[self.section] - self.elapsed()


def skipped(section: str, case: str, **fields) -> dict:
    return row(section, case, SKIP, note="time budget", **fields)


def poison(device: torch.device, nbytes: int = 256 << 20) -> None:
    """Fill the CUDA caching allocator's free memory with NaN, so a kernel that leaves output unwritten shows.

    Cached free blocks are released first (else a new output could land on a
    previous run's *correct* result), then fresh blocks of the large pool and
    of the small pool (<= 1 MB allocations) are filled with NaN and freed
    again: the next run's outputs are carved out of them. CPU memory is not
    cached this way; there the call does nothing.
    """
    if device.type != "cuda":
        return
    with torch.cuda.device(device):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        big = torch.full((nbytes // 4,), float("nan"), device=device)
        small = [torch.full(((1 << 20) // 4,), float("nan"), device=device) for _ in range(32)]
        torch.cuda.synchronize()
        del big, small


@contextlib.contextmanager
def torch_matmul_tf32(enabled: bool) -> Iterator[None]:
    """Set torch's own TF32 flag for a dense reference matmul (restored afterwards)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
