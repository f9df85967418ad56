"""Triton sparse-conv kernels against the PyTorch reference (interpreter on CPU, or a GPU).

Tolerances (relative to the reference's largest magnitude): fp32 1e-4, fp16
1e-2, bf16 5e-2 (bf16 keeps 8 mantissa bits; the reference runs in fp32 on
the same rounded inputs). Forward, input gradient and weight gradient are
all checked, for every grouping strategy and both dataflows.
"""

from __future__ import annotations

import functools

import pytest
import torch
from reference import random_coords
from torchsparse_lite.kernels import TileConfig, launch_groups, sparse_conv_triton, triton_work

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
    with use_config(deterministic=True):  # the engine setting, read once by sparse_conv's plan
        runs = []
        for _ in range(2):
            out = sparse_conv(feats, weight, kmap, backend="triton", grouping="dense")
            runs.append((out, *torch.autograd.grad(out.sum(), (feats, weight))))
        for a, b in zip(*runs):
            assert torch.equal(a, b)
        with pytest.raises(ValueError, match="deterministic"):
            sparse_conv(feats, weight, kmap, backend="triton", grouping="dense", dataflow="atomic")
    with pytest.raises(ValueError, match="deterministic"):  # the explicit-argument launcher
        sparse_conv_triton(feats, weight, kmap, "dense", dataflow="atomic", deterministic=True)


def test_double_backward() -> None:
    """The PyTorch path is twice differentiable (gradgradcheck, float64); Triton refuses rather than return zeros."""
    kmap = _kmap("conv").to("cpu")
    feats = torch.randn(kmap.n_in, 2, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(kmap.volume, 2, 3, dtype=torch.float64, requires_grad=True)
    for grouping in ("separate", "dense"):
        conv = functools.partial(sparse_conv, kmap=kmap, backend="torch", grouping=grouping)
        assert torch.autograd.gradgradcheck(conv, (feats, weight))
    out = sparse_conv_triton(feats.float().to(DEVICE), weight.float().to(DEVICE), kmap.to(DEVICE), GROUPINGS["dense"])
    (gf,) = torch.autograd.grad(out.square().sum(), feats, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|marked with @once_differentiable"):
        gf.sum().backward()


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


def _record(monkeypatch: pytest.MonkeyPatch, kernel, seen: list) -> None:
    """Patch ``kernel.run`` to note (kernel name, current launch device, PRECISION) before each launch."""
    from torchsparse_lite.kernels.device import launch_device  # noqa: PLC0415

    original = kernel.run

    def run(*args, **kwargs):
        seen.append((kernel.__name__, launch_device(), kwargs.get("PRECISION")))
        return original(*args, **kwargs)

    monkeypatch.setattr(kernel, "run", run)


def _conv_kernels():
    from torchsparse_lite.kernels import gather_gemm_scatter, implicit_gemm, weight_grad  # noqa: PLC0415

    return (gather_gemm_scatter.gather_gemm_scatter_kernel, implicit_gemm.implicit_gemm_kernel,
            weight_grad.weight_grad_kernel)


@pytest.mark.parametrize("dataflow", ["atomic", "output_stationary"])
def test_every_launch_runs_under_the_tensors_device(monkeypatch: pytest.MonkeyPatch, dataflow: str) -> None:
    seen: list = []
    for kernel in _conv_kernels():
        _record(monkeypatch, kernel, seen)
    kmap = _kmap("conv")
    feats = torch.randn(kmap.n_in, 8, device=DEVICE, requires_grad=True)
    weight = torch.randn(kmap.volume, 8, 8, device=DEVICE, requires_grad=True)
    out = sparse_conv_triton(feats, weight, kmap, "fixed", dataflow=dataflow)
    out.sum().backward()
    names = {name for name, _, _ in seen}
    assert "weight_grad_kernel" in names and len(names) == 2
    assert all(dev == feats.device for _, dev, _ in seen)


def test_on_device_makes_the_tensors_gpu_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """``on_device`` enters ``torch.cuda.device(<the tensors' device>)`` and refuses mixed devices."""
    from types import SimpleNamespace  # noqa: PLC0415

    from torchsparse_lite.kernels import on_device  # noqa: PLC0415
    from torchsparse_lite.kernels.device import launch_device  # noqa: PLC0415

    entered = []

    class FakeGuard:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "device", FakeGuard)
    gpu1 = SimpleNamespace(device=torch.device("cuda", 1))
    with on_device(feats=gpu1, weight=gpu1):
        assert launch_device() == torch.device("cuda", 1)
    assert entered == [torch.device("cuda", 1)] and launch_device() is None
    with pytest.raises(ValueError, match="weight is on cuda:0 but feats on cuda:1"):
        with on_device(feats=gpu1, weight=SimpleNamespace(device=torch.device("cuda", 0))):
            pass
    with on_device(feats=torch.zeros(1)):  # CPU tensors (the interpreter): no CUDA guard at all
        assert launch_device() == torch.device("cpu")
    assert len(entered) == 1


def test_tf32_is_an_engine_setting_not_torchs_global_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list = []
    for kernel in _conv_kernels():
        _record(monkeypatch, kernel, seen)
    kmap = _kmap("conv")
    feats, weight = torch.randn(kmap.n_in, 8, device=DEVICE), torch.randn(kmap.volume, 8, 8, device=DEVICE)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    sparse_conv_triton(feats, weight, kmap, "dense")
    sparse_conv(feats, weight, kmap, backend="triton", grouping="dense")
    assert seen and {p for _, _, p in seen} == {"ieee"}, "the default (tf32=False) must not follow torch's flag"
    seen.clear()
    with use_config(tf32=True):
        sparse_conv(feats, weight, kmap, backend="triton", grouping="dense")
        sparse_conv(feats.half(), weight.half(), kmap, backend="triton", grouping="dense")  # never for half
    assert [p for _, _, p in seen] == ["tf32", "ieee"]
    seen.clear()
    sparse_conv(feats, weight, kmap, backend="triton", grouping="dense", tf32=True)
    assert [p for _, _, p in seen] == ["tf32"]
    with pytest.raises(TypeError, match="tf32"):
        use_config(tf32="yes").__enter__()
    with pytest.raises(TypeError, match="allow_tf32"):
        sparse_conv_triton(feats, weight, kmap, "dense", allow_tf32=1)


@pytest.mark.parametrize(
    "dtype,tf32,dataflow",
    [(torch.float32, False, "atomic"), (torch.float32, True, "output_stationary"), (torch.bfloat16, False, "atomic")],
)
def test_gpu_default_tiles(dtype: torch.dtype, tf32: bool, dataflow: str) -> None:
    """The GPU's default tiles (block_n / block_k at their caps, split weight gradient) give the same numbers.

    Cout 130 spans two or three channel tiles (the last masked), Cin 70 two or
    more reduction steps, and the 4200 pairs of a 1x1x1 conv exceed
    ``split_rows`` (4096), so the weight gradient is summed over two partial
    slices. (The interpreter computes TF32 and bf16 products in fp32: their
    rounding is checked on a GPU by ``benchmarks/gpu_check.py``.)
    """
    from torchsparse_lite.kernels import default_tiles, precision_name  # noqa: PLC0415
    from torchsparse_lite.kernels.tiles import GPU_CAPS  # noqa: PLC0415

    x = torch.arange(4200, dtype=torch.int32)
    coords = torch.stack([torch.zeros_like(x), x % 70, x // 70, torch.zeros_like(x)], 1)
    kmap = build_kernel_map(coords, (1, 1, 1), mode="submanifold").to(DEVICE)
    tiles = default_tiles(70, 130, False, dtype, tf32)
    assert (tiles.block_n, tiles.block_k) == GPU_CAPS[precision_name(dtype, tf32)] and tiles.block_n < 130
    assert tiles.split_rows == 4096 < max(kmap.counts)
    feats, weight = torch.randn(kmap.n_in, 70), torch.randn(kmap.volume, 70, 130) * 0.2
    _check(feats, weight, kmap, "separate", dtype=dtype, dataflow=dataflow, tiles=tiles, allow_tf32=tf32)


def test_default_tiles_per_precision() -> None:
    from torchsparse_lite.kernels import default_tiles  # noqa: PLC0415

    wide = {p: default_tiles(256, 256, False, *dt) for p, dt in
            {"fp32": (torch.float32, False), "tf32": (torch.float32, True), "bf16": (torch.bfloat16, False)}.items()}
    assert (wide["fp32"].block_n, wide["fp32"].block_k, wide["fp32"].num_warps) == (64, 16, 4)
    assert (wide["tf32"].block_n, wide["tf32"].block_k, wide["tf32"].num_warps) == (128, 32, 8)
    assert (wide["bf16"].block_n, wide["bf16"].block_k, wide["bf16"].num_warps) == (128, 64, 8)
    assert default_tiles(3, 20, False, torch.float16).block_n == 32
    with pytest.raises(ValueError, match="cin"):
        default_tiles(0, 16, False)
    with pytest.raises(TypeError, match="dtype"):
        default_tiles(16, 16, False, torch.float64)
    with pytest.raises(ValueError, match="num_warps"):
        TileConfig(num_warps=3)


@pytest.mark.parametrize("dataflow", ["atomic", "output_stationary"])
def test_launch_data_is_uploaded_once_per_map_and_plan(monkeypatch: pytest.MonkeyPatch, dataflow: str) -> None:
    from torchsparse_lite.kernels import conv  # noqa: PLC0415

    built: list[str] = []
    for name in ("_atomic_descriptors", "_offset_lists", "neighbour_table"):
        real = getattr(conv, name)
        monkeypatch.setattr(conv, name, lambda *a, _r=real, _n=name: built.append(_n) or _r(*a))
    kmap = _kmap("conv")
    feats = torch.randn(kmap.n_in, 3, device=DEVICE, requires_grad=True)
    weight = torch.randn(kmap.volume, 3, 8, device=DEVICE, requires_grad=True)
    runs = []
    for _ in range(3):
        out = sparse_conv(feats, weight, kmap, backend="triton", grouping="fixed", dataflow=dataflow)
        runs.append((out, *torch.autograd.grad(out.sum(), (feats, weight))))
    expected = ["_atomic_descriptors"] if dataflow == "atomic" else ["_offset_lists", "neighbour_table"]
    if dataflow == "output_stationary":
        expected.append("neighbour_table")  # the backward pass's table (transposed map), also built once
    assert sorted(built) == sorted(expected), built
    for a, b in zip(runs[0], runs[2]):
        torch.testing.assert_close(a, b)
