"""Speed sections of ``benchmarks/gpu_check.py``: the benchmark's layers and the whole MinkUNet-18.

Every timed configuration is first checked against an fp32 reference on the
same device (the PyTorch path with torch's TF32 off); a wrong one is recorded
as ``fail`` and not timed. Figures per row:

* ``ms``: median wall time of one call (synchronised), ``tflops`` = real
  FLOPs / time (``2 * pairs * Cin * Cout`` per conv; forward+backward = 3x);
* ``frac_dense``: dense ``torch.matmul`` time for the same real FLOPs (same
  shapes for a layer; an ``[M, 128] x [128, 128]`` GEMM for a network) over
  ours, i.e. the fraction of dense-GEMM throughput we reach;
* ``map_ms`` and ``conv_per_map`` = ``ms / map_ms``: the conv's cost in
  units of building its kernel map.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import gpu_check_spconv as peer
import torch
from gpu_check_common import FAIL, NET_TOL, PASS, PRECISIONS, guarded_rows, rel_err, row, skipped, torch_matmul_tf32
from torchsparse_lite.kernels import sparse_conv_triton
from tqdm import tqdm

from torchsparse_lite.bench.layers import LayerSpec, build_map, make_case, model_layers
from torchsparse_lite.config import use_config
from torchsparse_lite.functional.conv import SparseConvFunction
from torchsparse_lite.grouping import GroupingConfig
from torchsparse_lite.models import MinkUNet
from torchsparse_lite.models.stats import count_macs
from torchsparse_lite.tensor import SparseTensor
from torchsparse_lite.utils.timing import measure

GROUPING_CONFIGS = {
    "separate": GroupingConfig("separate"),
    "fixed": GroupingConfig("fixed", group_size=4),
    "adaptive": GroupingConfig("adaptive"),
    "dense": GroupingConfig("dense"),
}


def ms(fn, device: torch.device, reps: int) -> float:
    """Median milliseconds of ``fn()`` (device synchronised around each call; one warm-up call on a GPU)."""
    return measure(fn, warmup=1 if device.type == "cuda" else 0, reps=reps, device=device).median * 1e3


def layer_specs(dry: bool) -> list[tuple[str, LayerSpec]]:
    """The representative layers of MinkUNet and SparseResNet-21 (the CPU layer benchmark's set)."""
    specs = [("minkunet", s) for s in model_layers("minkunet", representative=True)]
    specs += [("resnet", s) for s in model_layers("resnet", representative=True)]
    if not dry:
        return specs
    modes = {}  # one layer per mode, and the anisotropic one, with at most 16 channels
    for model, s in specs:
        modes.setdefault(s.mode, (model, s))
    aniso = [(m, s) for m, s in specs if len(set(s.kernel_size)) > 1]
    small = [*modes.values(), *aniso[:1]]
    return [(m, dataclasses.replace(s, cin=min(s.cin, 16), cout=min(s.cout, 16))) for m, s in small]


def dense_ms(m: int, k: int, n: int, precision: str, passes: str, device, reps: int) -> float:
    """``[m, k] @ [k, n]`` in the precision's dtype (and TF32 flag); ``fwdbwd`` adds both gradient GEMMs."""
    dtype, tf32 = PRECISIONS[precision]
    a = torch.randn(max(m, 1), k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    g = torch.randn(max(m, 1), n, device=device, dtype=dtype)

    def fwd():
        return a @ b

    def fwdbwd():
        return a @ b, g @ b.t(), a.t() @ g

    with torch_matmul_tf32(tf32):
        return ms(fwd if passes == "fwd" else fwdbwd, device, reps)


def _time_conv(case, precision: str, grouping: str, flow: str, device, reps: int) -> dict:
    """Forward and forward+backward milliseconds of our conv on ``case`` (output checked by the caller)."""
    dtype, tf32 = PRECISIONS[precision]
    f, w = case.feats.to(dtype), case.weight.to(dtype)
    cfg = GROUPING_CONFIGS[grouping]

    def fwd():
        with torch.no_grad():
            return sparse_conv_triton(f, w, case.kmap, cfg, dataflow=flow, allow_tf32=tf32)

    fg, wg = f.detach().requires_grad_(), w.detach().requires_grad_()
    grad = torch.ones(case.kmap.n_out, w.shape[2], device=device, dtype=dtype)

    def fwdbwd():
        out = sparse_conv_triton(fg, wg, case.kmap, cfg, dataflow=flow, allow_tf32=tf32)
        return torch.autograd.grad(out, (fg, wg), grad)

    return {"fwd": ms(fwd, device, reps), "fwdbwd": ms(fwdbwd, device, reps)}


def _layer_reference(case) -> torch.Tensor:
    with torch.no_grad(), torch_matmul_tf32(False):
        return SparseConvFunction.apply(case.feats.float(), case.weight.float(), case.kmap, 1 << 17)


def _map_ms(coords, spec, device, reps: int) -> dict:
    names = ("hash", "sort") if device.type == "cuda" else ("triton_hash", "triton_sort")
    return {n.removeprefix("triton_"): ms(lambda n=n: build_map(coords, spec, n), device, reps) for n in names}


def _conv_rows(case, base, precision, grouping, flow, ref, dense, map_ms, device, reps) -> list[dict]:
    dtype, tf32 = PRECISIONS[precision]
    fields = {**base, "impl": "ours", "precision": precision, "grouping": grouping, "dataflow": flow}
    with torch.no_grad():
        out = sparse_conv_triton(case.feats.to(dtype), case.weight.to(dtype), case.kmap, GROUPING_CONFIGS[grouping],
                                 dataflow=flow, allow_tf32=tf32)
    err = rel_err(out, ref)
    if err > NET_TOL[precision]:
        return [row("layers", base["layer"], FAIL, **fields, err=err, note="output differs: not timed")]
    t = _time_conv(case, precision, grouping, flow, device, reps)
    return [row("layers", base["layer"], PASS, **fields, err=err, **{"pass": p}, ms=t[p],
                tflops=base["flops"] * (3 if p == "fwdbwd" else 1) / (t[p] * 1e9), frac_dense=dense[p] / t[p],
                map_ms=map_ms, conv_per_map=t[p] / map_ms) for p in ("fwd", "fwdbwd")]


def layer_rows(workloads, device, precisions, groupings, flows, budget, reps: int, dry: bool) -> list[dict]:
    """Every (workload, layer, precision, grouping, dataflow): checked, then timed fwd and fwd+bwd; spconv too."""
    rows, specs = [], layer_specs(dry)
    for w in workloads:
        coords = w.coords.to(device)
        for i, (model, spec) in enumerate(tqdm(specs, desc=f"layers {w.name}", leave=False)):
            base = {"model": model, "layer": spec.label, "workload": w.name}
            if budget.left() <= 0:
                rows.append(skipped("layers", spec.label, **base))
                continue
            rows += guarded_rows("layers", spec.label, base, _layer, coords, model, spec, i, base, device,
                                 precisions, groupings, flows, budget, reps, dry)
    return rows


def _layer(coords, model, spec, i, base, device, precisions, groupings, flows, budget, reps, dry) -> list[dict]:
    """Rows of one layer on one workload: its map-building times, then every configuration and spconv."""
    case = make_case(coords, spec, device=device, seed=i)
    pairs = int(sum(case.kmap.counts))
    base = {**base, "n_in": case.kmap.n_in, "pairs": pairs, "flops": 2 * pairs * spec.cin * spec.cout}
    maps = _map_ms(coords, spec, device, reps)
    rows = [row("layers", spec.label, PASS, **base, impl="maps", map_ms_hash=maps["hash"], map_ms_sort=maps["sort"])]
    ref = _layer_reference(case)
    combos = [(g, f) for g in groupings for f in flows]
    for precision in [precisions[i % len(precisions)]] if dry else precisions:
        if budget.left() <= 0:
            rows.append(skipped("layers", spec.label, **base, precision=precision))
            continue
        dense = {p: dense_ms(pairs, spec.cin, spec.cout, precision, p, device, reps) for p in ("fwd", "fwdbwd")}
        for grouping, flow in [combos[(3 * i) % len(combos)]] if dry else combos:
            rows += guarded_rows("layers", spec.label, {**base, "precision": precision, "grouping": grouping,
                                 "dataflow": flow}, _conv_rows, case, base, precision, grouping, flow, ref, dense,
                                 maps["hash"], device, reps)
        rows += peer.layer_rows(case, spec, base, precision, ref, device, reps)
    return rows


def _net_reference(net, x) -> torch.Tensor:
    with torch.no_grad(), use_config(backend="torch"), torch_matmul_tf32(False):
        return net(x).float()


def network_rows(workloads, device, precisions, groupings, budget, reps: int, dry: bool) -> list[dict]:
    """MinkUNet-18 (cr 1.0): fwd and fwd+bwd, maps cached and maps included, per precision and grouping.

    Runs grouping by grouping (every workload and precision of one before the next), so a budget
    cut drops whole strategies late in the list, not the batched workload. A dry run executes the
    network on the PyTorch backend: through the interpreter its ~50 convs take minutes, and their
    kernels are the ones the conv and layer sections already run there.
    """
    backend = "torch" if dry else "triton"
    torch.manual_seed(0)
    net32 = MinkUNet(4, 19).to(device).eval()
    nets = {p: copy.deepcopy(net32).to(PRECISIONS[p][0]) for p in precisions}
    inputs = [_net_input(net32, w, device) for w in workloads]
    rows = []
    tasks = [(g, i, p) for g in (groupings[:1] if dry else groupings) for i in range(len(inputs)) for p in precisions]
    for grouping, i, precision in tqdm(tasks, desc="network", leave=False):
        feats, coords, ref, base = inputs[i]
        if budget.left() <= 0:
            rows.append(skipped("network", "minkunet18", **base, precision=precision, grouping=grouping))
            continue
        rows += guarded_rows("network", "minkunet18", {**base, "precision": precision, "grouping": grouping},
                             _net_rows, nets[precision], feats, coords, ref, base, precision, grouping, device, reps,
                             backend)
    for feats, coords, ref, base in inputs:
        for precision in precisions:
            if budget.left() > 0:
                rows += peer.network_rows(net32, feats, coords, ref, base, precision, device, reps)
    return rows


def _net_input(net32, w, device):
    """(feats, coords, fp32 reference logits, base row fields) of one workload."""
    coords = w.coords.to(device)
    feats = torch.randn(w.n, 4, generator=torch.Generator().manual_seed(0)).to(device)
    x32 = SparseTensor(feats, coords)
    with torch.no_grad(), use_config(backend="torch"):
        flops = 2 * count_macs(net32, x32)
    ref = _net_reference(net32, x32)
    return feats, coords, ref, {"model": "minkunet18", "workload": w.name, "n_in": w.n, "flops": flops}


def _net_passes(net, x: SparseTensor):
    def fwd():
        with torch.no_grad():
            return net(x)

    def fwd_maps():
        with torch.no_grad():
            return net(SparseTensor(x.feats, x.coords.clone(), validate=False))

    def fwdbwd():
        net.zero_grad(set_to_none=True)
        net(x).float().square().mean().backward()

    def fwdbwd_maps():
        net.zero_grad(set_to_none=True)
        net(SparseTensor(x.feats, x.coords.clone(), validate=False)).float().square().mean().backward()

    return {"fwd": fwd, "fwd+maps": fwd_maps, "fwdbwd": fwdbwd, "fwdbwd+maps": fwdbwd_maps}


def _net_rows(net, feats, coords, ref, base, precision, grouping, device, reps, backend) -> list[dict]:
    dtype, tf32 = PRECISIONS[precision]
    x = SparseTensor(feats.to(dtype), coords)
    fields = {**base, "impl": "ours", "backend": backend, "precision": precision, "grouping": grouping}
    with use_config(backend=backend, grouping=GROUPING_CONFIGS[grouping], tf32=tf32):
        with torch.no_grad():
            err = rel_err(net(x), ref)  # also builds and caches x's maps
        if not err <= NET_TOL[precision]:
            return [row("network", "minkunet18", FAIL, **fields, err=err, note="output differs: not timed")]
        t = {p: ms(fn, device, reps) for p, fn in _net_passes(net, x).items()}
    m = max(1, math.ceil(base["flops"] / (2 * 128 * 128)))
    dense = {p: dense_ms(m, 128, 128, precision, p, device, reps) for p in ("fwd", "fwdbwd")}
    out = []
    for p, v in t.items():
        kind = p.split("+")[0]
        map_ms = max(t[f"{kind}+maps"] - t[kind], 1e-6)
        out.append(row("network", "minkunet18", PASS, **fields, err=err, **{"pass": p}, ms=v,
                       tflops=base["flops"] * (3 if kind == "fwdbwd" else 1) / (v * 1e9), frac_dense=dense[kind] / v,
                       map_ms=map_ms, conv_per_map=t[kind] / map_ms))
    return out
