"""Issue 2: every sparse conv variant equals the dense reference, forward and backward.

For each variant the sparse layer runs on a :class:`SparseTensor`; the same
weight runs through ``F.conv3d`` / ``F.conv_transpose3d`` on the densified grid
and is read back at the sparse outputs. Gradients of the features and of the
weight are compared with the dense autograd. Tolerance: 1e-4 absolute and
relative (float32).

Output sets: for the spconv rule (strided and generative convs) and for a
generative transposed conv, the sparse outputs are exactly the dense positions
whose receptive field holds an active input, so the dense output is zero
everywhere else. Minkowski down-sampling keeps ``unique(c // s)`` (a subset),
submanifold keeps the inputs, a transposed conv with a cached map returns the
finer coordinates it came from.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import dense_conv, dense_weight, random_coords

import torchsparse_lite as tsl
from torchsparse_lite import SparseTensor, sparse_quantize
from torchsparse_lite import nn as snn
from torchsparse_lite.kmap import padding, triple

TOL = {"atol": 1e-4, "rtol": 1e-4}
KERNELS = [1, 2, 3, 5, (1, 3, 3)]
DILATIONS = [1, 2]
STRIDES = [2, (1, 2, 2)]


@dataclass(frozen=True)
class Case:
    """One conv variant: ``variant`` in subm, conv (spconv rule), mink, tcached, tgen."""

    variant: str
    kernel: int | tuple[int, int, int]
    stride: int | tuple[int, int, int]
    dilation: int
    cin: int = 3
    cout: int = 4
    batch: int = 2

    @property
    def id(self) -> str:
        return f"{self.variant}-k{self.kernel}-s{self.stride}-d{self.dilation}-c{self.cin}x{self.cout}-b{self.batch}"


def _cases() -> list[Case]:
    out: list[Case] = []
    i = 0
    for k in KERNELS:
        for d in DILATIONS:
            # channel counts and batch sizes vary across the grid
            cin, cout, batch = [(1, 2, 1), (3, 4, 2), (4, 1, 3), (2, 5, 2)][i % 4]
            i += 1
            out.append(Case("subm", k, 1, d, cin, cout, batch))
            out.append(Case("conv", k, 1, d, cin, cout, batch))  # generative, submanifold=False
            for s in STRIDES:
                out.append(Case("conv", k, s, d, cout, cin, batch))
                out.append(Case("mink", k, s, d, cin, cout, batch))
                out.append(Case("tcached", k, s, d, cin, cout, batch))
                out.append(Case("tgen", k, s, d, cout, cin, batch))
    return out


CASES = _cases()


def indicator_support(
    coords: torch.Tensor, ext: list[int], batch: int, case: Case, transposed: bool
) -> torch.Tensor:
    """[B, X', Y', Z'] bool: dense outputs whose receptive field holds an active input."""
    ks, st, dl = triple(case.kernel, "k"), triple(case.stride, "s"), triple(case.dilation, "d")
    grid = torch.zeros((batch, 1, *ext), dtype=torch.float64)
    c = coords.long()
    grid[c[:, 0], 0, c[:, 1], c[:, 2], c[:, 3]] = 1.0
    w = torch.ones((1, 1, *ks), dtype=torch.float64)
    pad = padding(ks, dl)
    if transposed:
        out = F.conv_transpose3d(grid, w, stride=st, padding=pad, dilation=dl)
    else:
        out = F.conv3d(grid, w, stride=st, padding=pad, dilation=dl)
    return out[:, 0] > 0.5


def run_case(case: Case, coords: torch.Tensor, builder: str = "hash", seed: int = 0) -> None:
    """Run one variant on ``coords`` and compare forward, backward and output set with the dense reference."""
    g = torch.Generator().manual_seed(seed)
    ks, st, dl = triple(case.kernel, "k"), triple(case.stride, "s"), triple(case.dilation, "d")
    transposed = case.variant in ("tcached", "tgen")
    n = coords.shape[0]
    with tsl.use_config(kmap_builder=builder, downsample_mode="minkowski" if case.variant == "mink" else "spconv"):
        if case.variant == "tcached":
            fine = SparseTensor(torch.randn(n, case.cin, generator=g), coords)
            down = snn.Conv3d(case.cin, case.cin, ks, st, dl)
            x_in = down(fine).detach()
            x_in = x_in.replace(torch.randn(len(x_in), case.cin, generator=g))
        elif case.variant == "tgen":
            x_in = SparseTensor(torch.randn(n, case.cin, generator=g), coords, stride=st)
        else:
            x_in = SparseTensor(torch.randn(n, case.cin, generator=g), coords)
        feats = x_in.feats.clone().requires_grad_(True)
        x = x_in.replace(feats)
        layer = snn.Conv3d(
            case.cin, case.cout, ks, st, dl, transposed=transposed, submanifold=case.variant == "subm",
            generative=case.variant == "tgen",
        )
        weight = layer.weight
        y = layer(x)
    if case.variant == "tcached":
        assert torch.equal(y.coords, coords), "transposed conv must return the original finer coordinates in order"
        assert y.stride == (1, 1, 1)
    if case.variant == "subm":
        assert y.coords is x.coords
    if case.variant == "mink":
        s = torch.tensor(st)
        expect = torch.unique(torch.cat([coords[:, :1], coords[:, 1:] // s], 1), dim=0)
        assert torch.equal(torch.unique(y.coords, dim=0), expect)
    assert torch.unique(y.coords, dim=0).shape[0] == len(y), "outputs must be unique"

    if len(x_in) == 0:  # e.g. a k=1 s=2 down conv of odd coords has no outputs: the way back gives zeros
        assert bool((y.feats == 0).all())
        return
    # forward + backward, dense
    feats_d = x_in.feats.clone().requires_grad_(True)
    weight_d = weight.detach().clone().requires_grad_(True)
    # samples with no coarse voxel left (a cached transposed conv still returns their fine coords) get zeros
    keep = y.coords[:, 0].long() < x_in.batch_size
    ref_part, ref_full = dense_conv(
        x_in.replace(feats_d), weight_d, ks, st, dl, y.coords[keep], transposed=transposed
    )
    ref_at = ref_part.new_zeros(y.feats.shape).index_put((torch.nonzero(keep).squeeze(1),), ref_part)
    torch.testing.assert_close(y.feats, ref_at, **TOL)
    r = torch.randn(y.feats.shape, generator=g)
    (y.feats * r).sum().backward()
    (ref_at * r).sum().backward()
    torch.testing.assert_close(feats.grad, feats_d.grad, **TOL)
    torch.testing.assert_close(weight.grad, weight_d.grad, **TOL)

    # output sets
    support = indicator_support(x_in.coords, _ext(x_in), x_in.batch_size, case, transposed)
    assert support.shape == ref_full[:, 0].shape
    active = torch.zeros_like(support)
    oc = y.coords[keep].long()
    inside = (oc[:, 1:] < torch.tensor(support.shape[1:])).all(1)
    assert bool(inside.all()), "sparse outputs fall outside the dense grid: enlarge the reference margin"
    active[oc[:, 0], oc[:, 1], oc[:, 2], oc[:, 3]] = True
    # every sparse output has an active input in its receptive field (Minkowski
    # down-sampling keeps unique(c // s) and a cached transposed conv returns every
    # finer input, even where the window misses every active input) ...
    if case.variant in ("subm", "conv", "tgen"):
        assert bool(support[active].all())
    # ... and the dense output is exactly zero wherever no sparse output exists
    off = ref_full.detach().permute(0, 2, 3, 4, 1)[~active]
    if case.variant in ("conv", "tgen"):
        assert torch.equal(active, support), "spconv rule: outputs must be exactly the dense support"
        assert bool((off == 0).all())


def _ext(x: SparseTensor, margin: int = 8) -> list[int]:
    """Grid extent used by ``reference.dense_conv`` (max coordinate + margin)."""
    return [int(v) + margin for v in x.coords[:, 1:].amax(0)]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_conv_matches_dense_random(case: Case) -> None:
    seed = zlib.crc32(case.id.encode())
    coords = random_coords(120, 9, case.batch, torch.Generator().manual_seed(seed))
    run_case(case, coords, builder=("hash", "sort")[seed % 2], seed=seed)


@pytest.mark.parametrize("variant", ["subm", "conv", "tcached", "tgen"])
def test_conv_single_point(variant: str) -> None:
    coords = torch.tensor([[0, 3, 4, 5]], dtype=torch.int32)
    run_case(Case(variant, 3, 1 if variant == "subm" else 2, 1, 2, 3, 1), coords)


def test_conv_dense_cube() -> None:
    """A fully occupied 6^3 cube: submanifold conv equals the dense conv at every voxel."""
    r = torch.arange(6)
    xyz = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.long), xyz], 1).to(torch.int32)
    for variant, s in [("subm", 1), ("conv", 2), ("tcached", 2)]:
        run_case(Case(variant, 3, s, 1, 2, 2, 1), coords)


# --------------------------------------------------------------- real scans
SCANS = {
    "semantickitti": ("semantickitti/000000.bin", 4),
    "kitti": ("kitti/000008.bin", 4),
    "nuscenes": ("nuscenes/lidar_top_1532402927647951.bin", 5),
}
REAL_CASES = [
    Case("subm", 3, 1, 1, 2, 3, 1),
    Case("conv", 3, 2, 1, 2, 3, 1),
    Case("conv", 2, 2, 1, 2, 3, 1),
    Case("mink", 2, 2, 1, 2, 3, 1),
    Case("tcached", 3, 2, 1, 2, 3, 1),
    Case("tgen", 2, 2, 1, 2, 2, 1),
    Case("subm", (1, 3, 3), 1, 2, 2, 2, 1),
]


def scan_crop(rel: str, cols: int, voxel: float = 0.2, half: float = 6.0) -> torch.Tensor:
    """Voxel coordinates [M, 4] (batch 0) of a ``2*half`` m square crop around the first point's ring."""
    from conftest import data_file  # noqa: PLC0415 - skips the test when the scan is absent

    pts = np.fromfile(data_file(rel), dtype=np.float32).reshape(-1, cols)[:, :3]
    centre = np.array([8.0, 0.0]) if "kitti/" in rel else np.array([0.0, 0.0])
    keep = (np.abs(pts[:, 0] - centre[0]) < half) & (np.abs(pts[:, 1] - centre[1]) < half)
    q = sparse_quantize(pts[keep], voxel)
    return torch.cat([torch.zeros(len(q.coords), 1, dtype=torch.int32), q.coords], 1)


@pytest.mark.parametrize("scan", sorted(SCANS))
def test_conv_matches_dense_real_scan(scan: str) -> None:
    rel, cols = SCANS[scan]
    coords = scan_crop(rel, cols)
    assert len(coords) > 500
    for i, case in enumerate(REAL_CASES):
        run_case(case, coords, builder=("hash", "sort")[i % 2], seed=i)


def test_dense_weight_layout() -> None:
    """The reference's weight conversion puts W[k] at the tap whose offset is kernel_offsets()[k]."""
    from torchsparse_lite.kmap import kernel_offsets  # noqa: PLC0415

    ks = (2, 3, 1)
    w = torch.arange(6, dtype=torch.float32).reshape(6, 1, 1)
    dw = dense_weight(w, ks)
    offs = kernel_offsets(ks, (1, 1, 1))
    pad = padding(ks, (1, 1, 1))
    for k, o in enumerate(offs.tolist()):
        assert dw[0, 0, o[0] + pad[0], o[1] + pad[1], o[2] + pad[2]] == k
