"""Correctness sections of ``benchmarks/gpu_check.py``: conv variants, maps, determinism, devices.

Every conv run is checked against a float64 CPU reference computed on the
same (rounded) inputs, with fresh random inputs per case and the CUDA
allocator poisoned with NaN before each run, for the forward output and both
gradients. Errors are relative Frobenius norms (see ``gpu_check_common.TOL``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from gpu_check_common import (
    DATAFLOWS,
    DRY_PRECISIONS,
    FAIL,
    GROUPINGS,
    PASS,
    PRECISIONS,
    TOL,
    guarded,
    poison,
    rel_err,
    row,
    skipped,
)
from torchsparse_lite.kernels import hash_index, sort_index, sparse_conv_triton
from tqdm import tqdm

from torchsparse_lite.functional.conv import SparseConvFunction
from torchsparse_lite.grouping import GroupingConfig
from torchsparse_lite.kmap import KernelMap, build_kernel_map

# name: kernel, stride, dilation, mode, cin, cout. The channels span the tile regimes: block_n 128 with a
# masked second tile (160, 130), unaligned channels (4, 24, 40), the 4-channel stem, and aligned ones.
VARIANTS = {
    "subm_k1": ((1, 1, 1), (1, 1, 1), (1, 1, 1), "submanifold", 64, 160),
    "subm_k3": ((3, 3, 3), (1, 1, 1), (1, 1, 1), "submanifold", 4, 32),
    "subm_k5": ((5, 5, 5), (1, 1, 1), (1, 1, 1), "submanifold", 16, 24),
    "strided": ((3, 3, 3), (2, 2, 2), (1, 1, 1), "conv", 48, 96),
    "transposed": ((2, 2, 2), (2, 2, 2), (1, 1, 1), "transposed", 96, 48),
    "dilation": ((3, 3, 3), (1, 1, 1), (2, 2, 2), "submanifold", 40, 40),
    "anisotropic": ((3, 1, 5), (2, 1, 2), (1, 1, 1), "conv", 128, 130),
}
GROUPING_CONFIGS = {
    "separate": GroupingConfig("separate"),
    "fixed": GroupingConfig("fixed", group_size=4),
    "adaptive": GroupingConfig("adaptive"),
    "dense": GroupingConfig("dense"),
}


def variant_map(coords: torch.Tensor, name: str, builder: str = "hash") -> KernelMap:
    """The map of variant ``name`` over ``coords`` (a transposed conv inverts the strided map of ``coords``)."""
    k, s, d, mode, _, _ = VARIANTS[name]
    if mode == "transposed":
        return build_kernel_map(coords, k, s, d, mode="conv", builder=builder).transpose()
    return build_kernel_map(coords, k, s, d, mode=mode, builder=builder)


def channels(name: str, dry: bool) -> tuple[int, int]:
    """(Cin, Cout) of a variant; a dry run caps them at 24 (the interpreter pays per channel tile)."""
    cin, cout = VARIANTS[name][4:]
    return (min(cin, 24), min(cout, 24)) if dry else (cin, cout)


def make_inputs(kmap: KernelMap, name: str, precision: str, seed: int, dry: bool = False):
    """Fresh seeded feats, weight and output gradient for one case, rounded to the precision's dtype (CPU)."""
    dtype = PRECISIONS[precision][0]
    cin, cout = channels(name, dry)
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(kmap.n_in, cin, generator=g)
    weight = torch.randn(kmap.volume, cin, cout, generator=g) / math.sqrt(kmap.volume * cin)
    grad = torch.randn(kmap.n_out, cout, generator=g)
    return feats.to(dtype), weight.to(dtype), grad.to(dtype)


def reference(kmap: KernelMap, feats, weight, grad) -> tuple[torch.Tensor, ...]:
    """(out, grad_feats, grad_weight) in float64 on the CPU, from the PyTorch path."""
    f = feats.double().cpu().requires_grad_()
    w = weight.double().cpu().requires_grad_()
    out = SparseConvFunction.apply(f, w, kmap.to("cpu"), 1 << 17)
    gf, gw = torch.autograd.grad(out, (f, w), grad.double().cpu())
    return out.detach(), gf, gw


def run_conv(kmap: KernelMap, feats, weight, grad, grouping: str, flow: str, tf32: bool, device) -> tuple:
    """One Triton forward + backward on ``device`` (outputs poisoned first): (out, grad_feats, grad_weight)."""
    poison(device)
    f = feats.to(device).requires_grad_()
    w = weight.to(device).requires_grad_()
    out = sparse_conv_triton(f, w, kmap, GROUPING_CONFIGS[grouping], dataflow=flow, allow_tf32=tf32)
    gf, gw = torch.autograd.grad(out, (f, w), grad.to(device))
    return out.detach(), gf, gw


def conv_plan(dry: bool) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(variant, precision, [(dataflow, grouping)]) to run: everything, or in a dry run a covering subset.

    The dry subset runs each variant once and still reaches every precision, dataflow and grouping.
    """
    if not dry:
        pairs = [(f, g) for f in DATAFLOWS for g in GROUPINGS]
        return [(v, p, pairs) for v in VARIANTS for p in PRECISIONS]
    return [(v, DRY_PRECISIONS[i % len(DRY_PRECISIONS)], [(DATAFLOWS[i % 2], GROUPINGS[i % len(GROUPINGS)])])
            for i, v in enumerate(VARIANTS)]


def _conv_case(name, precision, flow, grouping, inputs, ref, device) -> dict:
    kmap, feats, weight, grad = inputs
    got = run_conv(kmap, feats, weight, grad, grouping, flow, PRECISIONS[precision][1], device)
    errs = [rel_err(a, b) for a, b in zip(got, ref)]
    tol = TOL[precision]
    ok = all(e <= tol for e in errs)
    return row("conv", name, PASS if ok else FAIL, precision=precision, dataflow=flow, grouping=grouping,
               err_out=errs[0], err_grad_feats=errs[1], err_grad_weight=errs[2], tol=tol)


def check_convs(coords: torch.Tensor, device: torch.device, budget, dry: bool) -> list[dict]:
    """Every conv variant x precision x dataflow x grouping, forward and both gradients."""
    rows, plan = [], conv_plan(dry)
    total = sum(len(pairs) for _, _, pairs in plan)
    maps: dict[str, KernelMap] = {}
    with tqdm(total=total, desc="conv correctness", leave=False) as bar:
        for seed, (name, precision, pairs) in enumerate(plan):
            if name not in maps:
                maps[name] = variant_map(coords, name)
            kmap_cpu = maps[name]
            kmap = kmap_cpu.to(device)
            feats, weight, grad = make_inputs(kmap_cpu, name, precision, seed, dry)
            ref = reference(kmap_cpu, feats, weight, grad) if budget.left() > 0 else None
            for flow, grouping in pairs:
                bar.update()
                fields = {"precision": precision, "dataflow": flow, "grouping": grouping}
                if ref is None or budget.left() <= 0:
                    rows.append(skipped("conv", name, **fields))
                    continue
                rows.append(guarded("conv", name, fields, _conv_case, name, precision, flow, grouping,
                                    (kmap, feats, weight, grad), ref, device))
    if not dry and device.type == "cuda":
        rows.append(_tf32_engaged(rows))
    return rows


def _tf32_engaged(rows: list[dict]) -> dict:
    """TF32 must really round: its errors sit well above fp32's, or the setting did not reach the kernels."""
    tf = [r["err_out"] for r in rows if r.get("precision") == "tf32" and "err_out" in r]
    fp = [r["err_out"] for r in rows if r.get("precision") == "fp32" and "err_out" in r]
    if not tf or not fp:
        return row("conv", "tf32 engaged", FAIL, note="no tf32 / fp32 rows to compare")
    ok = min(tf) > 10 * max(fp)
    return row("conv", "tf32 engaged", PASS if ok else FAIL, precision="tf32", min_tf32_err=min(tf),
               max_fp32_err=max(fp), note="smallest TF32 error vs largest fp32 error (must be 10x apart)")


@contextlib.contextmanager
def count_launches(kernels) -> Iterator[list[int]]:
    """Count ``kernel[grid](...)`` calls of ``kernels`` in the block (``kernel.run`` is wrapped, then restored)."""
    calls: list[int] = []
    saved = [(k, "run" in vars(k), k.run) for k in kernels]

    def counting(original):
        def run(*args, **kwargs):
            calls.append(1)
            return original(*args, **kwargs)
        return run

    for k, _, original in saved:
        k.run = counting(original)
    try:
        yield calls
    finally:
        for k, had_own, original in saved:
            if had_own:
                k.run = original
            else:
                del k.run


def _map_row(coords, name, builder, device) -> dict:
    ref = variant_map(coords, name, "hash")
    kernels = (hash_index.hash_insert_kernel, hash_index.hash_query_kernel) if builder == "hash" else (
        sort_index.sorted_query_kernel,)
    on_cpu = device.type == "cpu"  # the interpreter: name the Triton index explicitly
    with count_launches(kernels) as calls:
        got = variant_map(coords.to(device), name, f"triton_{builder}" if on_cpu else builder).to("cpu")
    same = (got.counts == ref.counts and torch.equal(got.in_idx, ref.in_idx) and torch.equal(got.out_idx, ref.out_idx)
            and torch.equal(got.out_coords, ref.out_coords))
    ok = same and (len(calls) > 0 or ref.volume == 1)  # a 1x1x1 submanifold map is the identity: no lookups
    note = "" if ok else ("no Triton launch" if same else "map differs from the CPU map")
    return row("maps", name, PASS if ok else FAIL, builder=f"triton_{builder}", launches=len(calls),
               pairs=int(sum(ref.counts)), note=note)


def check_maps(coords: torch.Tensor, device: torch.device, budget, dry: bool) -> list[dict]:
    """Triton hash and sort maps of every variant equal the CPU (PyTorch) maps, and the kernels really ran.

    (A dry run alternates the two builders over the variants.)
    """
    rows = []
    for i, name in enumerate(tqdm(VARIANTS, desc="maps", leave=False)):
        for builder in [("hash", "sort")[i % 2]] if dry else ("hash", "sort"):
            if budget.left() <= 0:
                rows.append(skipped("maps", name, builder=f"triton_{builder}"))
                continue
            rows.append(guarded("maps", name, {"builder": f"triton_{builder}"}, _map_row, coords, name, builder,
                                device))
    return rows


def _determinism_row(coords, name, precision, device, dry) -> dict:
    kmap_cpu = variant_map(coords, name)
    kmap = kmap_cpu.to(device)
    feats, weight, grad = make_inputs(kmap_cpu, name, precision, 99, dry)
    runs = [run_conv(kmap, feats, weight, grad, "fixed", "output_stationary", PRECISIONS[precision][1], device)
            for _ in range(3)]
    same = all(torch.equal(a, b) for later in runs[1:] for a, b in zip(runs[0], later))
    return row("determinism", name, PASS if same else FAIL, precision=precision, dataflow="output_stationary",
               grouping="fixed", runs=3, note="" if same else "outputs differ bitwise between runs")


def check_determinism(coords: torch.Tensor, device: torch.device, budget, dry: bool) -> list[dict]:
    """output_stationary (no atomics) gives bit-identical outputs and gradients over 3 runs."""
    cases = [("subm_k3", "fp32"), ("strided", "bf16"), ("transposed", "fp16")]
    rows = []
    for name, precision in tqdm(cases[:1] if dry else cases, desc="determinism", leave=False):
        if budget.left() <= 0:
            rows.append(skipped("determinism", name, precision=precision))
            continue
        rows.append(guarded("determinism", name, {"precision": precision}, _determinism_row, coords, name,
                            precision, device, dry))
    return rows


def _device_row(coords, device, current, dry=False) -> dict:
    """The conv on ``device`` while ``current`` is the current device, on a side stream of ``device``."""
    name, precision = "strided", "fp32"
    kmap_cpu = variant_map(coords, name)
    feats, weight, grad = make_inputs(kmap_cpu, name, precision, 7, dry)
    ref = reference(kmap_cpu, feats, weight, grad)
    # The stream context makes its device current, so it is entered first and the guard second:
    # inside, ``current`` is the current device while ``device``'s current stream is a side stream.
    stream = torch.cuda.stream(torch.cuda.Stream(device)) if device.type == "cuda" else contextlib.nullcontext()
    guard = torch.cuda.device(current) if device.type == "cuda" else contextlib.nullcontext()
    with stream, guard:
        kmap = variant_map(coords.to(device), name, "hash" if device.type == "cuda" else "triton_hash")
        got = run_conv(kmap, feats, weight, grad, "fixed", "atomic", False, device)
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()
    errs = [rel_err(a, b) for a, b in zip(got, ref)]
    ok = all(e <= TOL[precision] for e in errs)
    return row("devices", str(device), PASS if ok else FAIL, precision=precision, current_device=str(current),
               err_out=errs[0], err_grad_feats=errs[1], err_grad_weight=errs[2], tol=TOL[precision])


def check_devices(coords: torch.Tensor, device: torch.device, budget, dry: bool) -> tuple[list[dict], str]:
    """Tensors on every GPU but the first, launched while GPU 0 is current: right answers, right device.

    Returns the rows and a one-line note (with one GPU there is nothing to cross, and no row).
    """
    if device.type != "cuda":  # dry run: the same path on the CPU (no current device to cross)
        return [guarded("devices", "cpu", {}, _device_row, coords, device, None, dry)], "CPU dry run: path only"
    n = torch.cuda.device_count()
    if n < 2:
        return [], f"{n} GPU: the cross-device guard check needs 2 or more"
    rows = [guarded("devices", f"cuda:{d}", {}, _device_row, coords, torch.device("cuda", d), 0)
            for d in range(1, n) if budget.left() > 0]
    return rows, f"{n} GPUs: tensors on cuda:1..{n - 1} launched with cuda:0 current"
