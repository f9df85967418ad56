"""Triton sparse-conv kernels against the PyTorch reference (interpreter on CPU, or a GPU).

Tolerances (relative to the reference's largest magnitude): fp32 1e-4, fp16
1e-2, bf16 5e-2 (bf16 keeps 8 mantissa bits; the reference runs in fp32 on
the same rounded inputs). Forward, input gradient and weight gradient are
all checked, for every grouping strategy and both dataflows.
"""

from __future__ import annotations

import pytest
import torch
from torchsparse_lite.kernels import TileConfig, launch_groups, sparse_conv_triton, triton_work

from tests.reference import random_coords
from torchsparse_lite import use_config
from torchsparse_lite.functional.conv import SparseConvFunction, sparse_conv
from torchsparse_lite.grouping import GroupingConfig, plan_groups
from torchsparse_lite.kmap import KernelMap, build_kernel_map

pytestmark = pytest.mark.triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
# adaptive with a low threshold so that both "alone" and grouped maps occur at these sizes
GROUPINGS = {
    "separate": GroupingConfig("separate"),
    "fixed": GroupingConfig("fixed", group_size=4),
    "adaptive": GroupingConfig("adaptive", epsilon=0.3, threshold=12),
    "dense": GroupingConfig("dense"),
}


def _kmap(kind: str) -> KernelMap:
    g = torch.Generator().manual_seed(1)
    if kind == "single":  # one voxel: only the centre tap of a submanifold conv has a pair
        return build_kernel_map(torch.tensor([[0, 3, 3, 3]], dtype=torch.int32), (3, 3, 3)).to(DEVICE)
    if kind == "line":  # points along x only: most offsets of a 3x3x3 kernel have empty maps
        x = torch.arange(0, 24, 2, dtype=torch.int32)
        coords = torch.stack([torch.zeros_like(x), x, torch.zeros_like(x), torch.zeros_like(x)], 1)
        return build_kernel_map(coords, (3, 3, 3), (2, 2, 2), mode="conv").to(DEVICE)
    coords = random_coords(60, 6, batch=2, generator=g)
    if kind == "submanifold":
        return build_kernel_map(coords, (3, 3, 3), mode="submanifold").to(DEVICE)
    return build_kernel_map(coords, (3, 3, 3), (2, 2, 2), mode="conv").to(DEVICE)


def _reference(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, grad: torch.Tensor):
    f = feats.detach().float().cpu().requires_grad_()
    w = weight.detach().float().cpu().requires_grad_()
    out = SparseConvFunction.apply(f, w, kmap.to("cpu"), 1 << 17)
    gf, gw = torch.autograd.grad(out, (f, w), grad.float().cpu())
    return out.detach(), gf, gw


def _check(feats, weight, kmap, grouping, dtype=torch.float32, **kw) -> None:
    feats = feats.to(DEVICE, dtype).requires_grad_()
    weight = weight.to(DEVICE, dtype).requires_grad_()
    out = sparse_conv_triton(feats, weight, kmap, grouping, **kw)
    assert out.dtype == dtype and out.shape == (kmap.n_out, weight.shape[2])
    grad = torch.randn(out.shape).to(DEVICE, dtype)
    gf, gw = torch.autograd.grad(out, (feats, weight), grad)
    for got, ref in zip((out, gf, gw), _reference(feats, weight, kmap, grad)):
        scale = max(ref.abs().max().item(), 1e-6)
        err = (got.float().cpu() - ref).abs().max().item() / scale
        assert err <= TOL[dtype], f"relative error {err:.2e} > {TOL[dtype]:.0e}"


@pytest.mark.parametrize("kind,cin,cout", [("submanifold", 3, 20), ("conv", 33, 16)])
@pytest.mark.parametrize(
    "strategy,dataflow",
    [(s, "atomic") for s in GROUPINGS] + [("separate", "output_stationary"), ("adaptive", "output_stationary")],
)
def test_fp32_matches_reference(kind: str, cin: int, cout: int, strategy: str, dataflow: str) -> None:
    kmap = _kmap(kind)
    feats, weight = torch.randn(kmap.n_in, cin), torch.randn(kmap.volume, cin, cout)
    _check(feats, weight, kmap, GROUPINGS[strategy], dataflow=dataflow)


@pytest.mark.slow
@pytest.mark.parametrize("cin,cout", [(3, 20), (33, 16), (16, 33)])
@pytest.mark.parametrize("kind", ["submanifold", "conv", "line"])
@pytest.mark.parametrize("strategy", list(GROUPINGS))
@pytest.mark.parametrize("dataflow", ["atomic", "output_stationary"])
def test_fp32_full_sweep(kind: str, cin: int, cout: int, strategy: str, dataflow: str) -> None:
    kmap = _kmap(kind)
    feats, weight = torch.randn(kmap.n_in, cin), torch.randn(kmap.volume, cin, cout)
    _check(feats, weight, kmap, GROUPINGS[strategy], dataflow=dataflow)


@pytest.mark.parametrize("dataflow", ["atomic", "output_stationary"])
def test_small_tiles_exercise_every_loop(dataflow: str) -> None:
    """16-wide tiles: several row, channel and reduction tiles, and a split weight gradient."""
    kmap = _kmap("submanifold")
    tiles = TileConfig(block_m=16, block_n=16, block_k=16, split_rows=16)
    feats, weight = torch.randn(kmap.n_in, 33), torch.randn(kmap.volume, 33, 20)
    _check(feats, weight, kmap, GROUPINGS["dense"], dataflow=dataflow, tiles=tiles)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dataflow", ["atomic", "output_stationary"])
def test_half_precision_matches_reference(dtype: torch.dtype, dataflow: str) -> None:
    kmap = _kmap("submanifold")  # symmetric: the adaptive plan folds k with K-1-k
    cfg = GroupingConfig("adaptive", epsilon=0.5, threshold=1 << 30)
    assert plan_groups(kmap.counts, cfg, kmap.identity_offset, kmap.symmetric).folded
    feats, weight = torch.randn(kmap.n_in, 20), torch.randn(kmap.volume, 20, 16) * 0.3
    _check(feats, weight, kmap, cfg, dtype=dtype, dataflow=dataflow)


@pytest.mark.parametrize("strategy", list(GROUPINGS))
def test_empty_offsets(strategy: str) -> None:
    kmap = _kmap("line")
    assert 0 in kmap.counts and sum(kmap.counts) > 0
    feats, weight = torch.randn(kmap.n_in, 3), torch.randn(kmap.volume, 3, 20)
    _check(feats, weight, kmap, GROUPINGS[strategy], dataflow="atomic")
    if strategy == "dense":
        _check(feats, weight, kmap, GROUPINGS[strategy], dataflow="output_stationary")
        single = _kmap("single")
        assert sum(single.counts) == 1
        for flow in ("atomic", "output_stationary"):
            _check(torch.randn(1, 3), torch.randn(27, 3, 20), single, GROUPINGS[strategy], dataflow=flow)


def test_tf32_switch_runs() -> None:
    kmap = _kmap("conv")
    feats, weight = torch.randn(kmap.n_in, 16), torch.randn(kmap.volume, 16, 16)
    _check(feats, weight, kmap, "dense", dataflow="atomic", allow_tf32=False)
    if DEVICE == "cuda":  # TF32 keeps 10 mantissa bits: check loosely
        out = sparse_conv_triton(feats.cuda(), weight.cuda(), kmap, "dense", allow_tf32=True)
        ref = SparseConvFunction.apply(feats, weight, kmap.to("cpu"), 1 << 17)
        assert torch.allclose(out.cpu(), ref, rtol=1e-2, atol=1e-2 * ref.abs().max().item())


def test_deterministic_mode_is_bit_reproducible_and_refuses_atomics() -> None:
    kmap = _kmap("submanifold")
    feats = torch.randn(kmap.n_in, 16, device=DEVICE, requires_grad=True)
    weight = torch.randn(kmap.volume, 16, 16, device=DEVICE, requires_grad=True)
    with use_config(deterministic=True):
        runs = []
        for _ in range(2):
            out = sparse_conv_triton(feats, weight, kmap, "dense")
            runs.append((out, *torch.autograd.grad(out.sum(), (feats, weight))))
        for a, b in zip(*runs):
            assert torch.equal(a, b)
        with pytest.raises(ValueError, match="deterministic"):
            sparse_conv_triton(feats, weight, kmap, "dense", dataflow="atomic")


def test_dispatcher_forces_triton_and_matches_torch() -> None:
    kmap = _kmap("conv").to("cpu")
    feats, weight = torch.randn(kmap.n_in, 3), torch.randn(kmap.volume, 3, 20)
    ref = sparse_conv(feats, weight, kmap, backend="torch")
    if DEVICE == "cpu":
        got = sparse_conv(feats, weight, kmap, backend="triton", grouping="dense")
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    else:
        got = sparse_conv(feats.cuda(), weight.cuda(), kmap.to("cuda"), grouping="dense")  # auto -> Triton
        assert torch.allclose(got.cpu(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_bad_arguments() -> None:
    kmap = _kmap("conv")
    feats, weight = torch.randn(kmap.n_in, 3, device=DEVICE), torch.randn(kmap.volume, 3, 4, device=DEVICE)
    with pytest.raises(ValueError, match="dataflow"):
        sparse_conv_triton(feats, weight, kmap, dataflow="weird")
    with pytest.raises(TypeError, match="float32"):
        sparse_conv_triton(feats.double(), weight.double(), kmap)
    with pytest.raises(ValueError, match="grouping strategy"):
        sparse_conv_triton(feats, weight, kmap, "sometimes")
    with pytest.raises(ValueError, match="power of two"):
        TileConfig(block_m=24)


def test_work_report() -> None:
    kmap = _kmap("submanifold")
    tiles = TileConfig(block_m=16, block_n=16, block_k=16, split_rows=16)
    real = 2 * sum(kmap.counts) * 3 * 20
    for name, cfg in GROUPINGS.items():
        plan = plan_groups(kmap.counts, cfg, kmap.identity_offset, kmap.symmetric)
        for flow in ("atomic", "output_stationary"):
            w = triton_work(kmap, plan, flow, tiles, 3, 20)
            assert w.real_flops == real and w.padded_flops >= real, (name, flow)
            assert w.launches == len(launch_groups(plan)) == plan.launches
    sep = plan_groups(kmap.counts, GROUPINGS["separate"], kmap.identity_offset, kmap.symmetric)
    assert sep.launches == sum(1 for c in kmap.counts if c)
