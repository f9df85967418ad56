"""Issue 11: spconv-style networks run unmodified on ``torchsparse_lite.compat.spconv`` and match spconv 2.3.8.

The model code (``test_compat_spconv_netdefs.py``, written as user code:
``import spconv.pytorch as spconv``) is loaded twice: with the real spconv and
under ``torchsparse_lite.compat.spconv.install()``. The compat model loads the spconv model's ``state_dict`` strictly;
every sparse layer's output (forward hooks) and the end result are compared
(same output indices, features within 1e-5), on the real KITTI frame (voxelized
by each library's ``PointToVoxel``) and on a synthetic scan. spconv runs
single-threaded (its CPU build is only correct so); ours must give identical
outputs on two threads. Gradients (spconv has no CPU backward) are checked
with ``torch.autograd.gradcheck`` in float64, and the biased submanifold convs
(which spconv's CPU build refuses in eval mode) against the dense conv.

``benchmarks/bench_compat_spconv.py`` times its ``SecondBackbone``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torchsparse_lite.datasets.synthetic import generate_scan

import torchsparse_lite.compat.spconv as cp

HAS_SPCONV = importlib.util.find_spec("spconv") is not None
needs_spconv = pytest.mark.skipif(not HAS_SPCONV, reason="spconv is not installed")
KITTI_VOXEL = ([0.05, 0.05, 0.1], [0.0, -40.0, -3.0, 70.4, 40.0, 1.0])  # SECOND's KITTI grid: [40, 1600, 1408] zyx


NETDEFS = Path(__file__).with_name("test_compat_spconv_netdefs.py")


def load_netdefs(compat: bool):
    """The model module executed with the real spconv, or under ``install()`` (then ``spconv`` is the compat layer)."""
    name = f"spconv_netdefs_{'compat' if compat else 'spconv'}"
    spec = importlib.util.spec_from_file_location(name, NETDEFS)
    module = importlib.util.module_from_spec(spec)
    if compat:
        cp.install()
    try:
        spec.loader.exec_module(module)
    finally:
        if compat:
            cp.uninstall()
    assert (module.spconv is cp) == compat
    return module


OURS = load_netdefs(compat=True)


# ------------------------------------------------------------------ helpers
def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (eval mode), conv biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.3, 0.3, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
            elif getattr(m, "bias", None) is not None and hasattr(m, "indice_key"):
                m.bias.uniform_(-0.3, 0.3, generator=g)
    return model.eval()


def spconv_eval(model: nn.Module, sp) -> nn.Module:
    """Eval mode, except spconv's convs: its CPU build refuses a bias in eval and adds it identically in training."""
    model.eval()
    for m in model.modules():
        if isinstance(m, sp.conv.SparseConvolution):
            m.train()
    return model


def twin_models(sp, name: str, *args, **kwargs):
    """(spconv model, our model with the spconv model's state_dict loaded strictly)."""
    theirs = randomize(getattr(load_netdefs(compat=False), name)(*args, **kwargs), seed=1)
    ours = getattr(OURS, name)(*args, **kwargs).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours


def record(model: nn.Module, leaf_types: tuple) -> tuple[dict, list]:
    """Forward hooks storing every sparse layer's output (indices, features) by module name."""
    outputs, handles = {}, []
    for name, m in model.named_modules():
        if isinstance(m, leaf_types):
            hook = lambda mod, inp, out, name=name: outputs.__setitem__(name, (out.indices, out.features))  # noqa: E731
            handles.append(m.register_forward_hook(hook))
    return outputs, handles


def leaf_types(lib) -> tuple:
    return (lib.conv.SparseConvolution, lib.SparseMaxPool3d)


def aligned(theirs: tuple, ours: tuple) -> torch.Tensor:
    """spconv's features in our row order; asserts equal index sets (strided outputs' row orders differ)."""
    pos = {tuple(r): i for i, r in enumerate(theirs[0].tolist())}
    rows = [tuple(r) for r in ours[0].tolist()]
    assert len(rows) == len(pos) and set(rows) == set(pos), f"index sets differ: {len(pos)} vs {len(rows)}"
    return theirs[1][torch.tensor([pos[r] for r in rows], dtype=torch.long)]


def compare_layers(theirs: dict, ours: dict) -> int:
    """Every recorded layer: equal index sets and features within 1e-5; returns the number of layers."""
    assert list(theirs) == list(ours) and ours
    for name in ours:
        ref = aligned(theirs[name], ours[name])
        err = (ref - ours[name][1]).abs().max().item() if ref.numel() else 0.0
        assert err < 1e-5, f"layer {name}: max abs error {err}"
    return len(ours)


def voxelize(points: np.ndarray, generator_cls, vsize, crange, max_voxels=40000):
    """(mean-of-points features [M, 4], indices [M, 4] (batch, z, y, x), grid zyx) with a library's PointToVoxel."""
    gen = generator_cls(vsize, crange, 4, max_voxels, 5)
    voxels, coords, num = gen(torch.from_numpy(points))
    feats = voxels.sum(1) / num[:, None].to(voxels.dtype)
    return feats, torch.cat([torch.zeros_like(coords[:, :1]), coords], 1), list(gen.grid_size)


@pytest.fixture(scope="module")
def sp():
    return pytest.importorskip("spconv.pytorch")


@pytest.fixture(scope="module")
def synthetic_points() -> np.ndarray:
    pts = generate_scan(3, num_beams=32, num_azimuth=900).points
    return pts[(np.abs(pts[:, 0]) < 30) & (np.abs(pts[:, 1]) < 30)]


def inputs(sp, points: np.ndarray, vsize, crange):
    """Voxelize with both libraries' PointToVoxel (they must agree exactly); returns ours."""
    from spconv.pytorch.utils import PointToVoxel  # noqa: PLC0415 - optional peer

    theirs = voxelize(points, PointToVoxel, vsize, crange)
    ours = voxelize(points, cp.utils.PointToVoxel, vsize, crange)
    assert all(torch.equal(a, b) for a, b in zip(theirs[:2], ours[:2])) and theirs[2] == ours[2]
    return ours


SYNTH_VOXEL = ([0.2, 0.2, 0.1], [-30.0, -30.0, -3.0, 30.0, 30.0, 1.0])  # grid [40, 300, 300] zyx


# ------------------------------------------------------------------- tests
@needs_spconv
@pytest.mark.parametrize("source", ["kitti", "synthetic"])
def test_second_backbone_matches_spconv(sp, source, request):
    points = request.getfixturevalue("kitti_points" if source == "kitti" else "synthetic_points")
    vsize, crange = KITTI_VOXEL if source == "kitti" else SYNTH_VOXEL
    feats, coords, grid = inputs(sp, points, vsize, crange)
    theirs, ours = twin_models(sp, "SecondBackbone", 4, grid)
    rec_s, hs = record(theirs, leaf_types(sp))
    rec_o, ho = record(ours, leaf_types(cp))
    with torch.no_grad():
        bev_s = spconv_eval(theirs, sp)(feats, coords, 1)
        bev_o = ours(feats, coords, 1)
        assert compare_layers(rec_s, rec_o) == 9
        assert (
            bev_o.shape == bev_s.shape
            and bev_o.shape[1] % 128 == 0
            and bev_o.shape[2:] == (-(-grid[1] // 8), -(-grid[2] // 8))
        )
        assert bev_o.abs().max() > 0.1 and (bev_o - bev_s).abs().max().item() < 1e-5
    for h in hs + ho:
        h.remove()


@needs_spconv
@pytest.mark.parametrize("bias", [False, True])
def test_residual_backbone_matches_spconv(sp, bias, kitti_points):
    feats, coords, grid = inputs(sp, kitti_points, [0.1, 0.1, 0.2], KITTI_VOXEL[1])
    theirs, ours = twin_models(sp, "ResBackbone", 4, bias=bias)
    rec_s, _ = record(theirs, leaf_types(sp))
    rec_o, _ = record(ours, leaf_types(cp))
    shape = [grid[0] + 1, *grid[1:]]
    with torch.no_grad():
        # bias-free: spconv entirely in eval; biased: spconv's convs in training mode (its CPU eval refuses a bias)
        ys = (spconv_eval(theirs, sp) if bias else theirs.eval())(sp.SparseConvTensor(feats, coords, shape, 1))
        yo = ours(cp.SparseConvTensor(feats, coords, shape, 1))
        assert compare_layers(rec_s, rec_o) == 11
        assert (aligned((ys.indices, ys.features), (yo.indices, yo.features)) - yo.features).abs().max() < 1e-5


@needs_spconv
@pytest.mark.parametrize("source", ["kitti", "synthetic"])
def test_unet_matches_spconv_row_for_row(sp, source, request):
    points = request.getfixturevalue("kitti_points" if source == "kitti" else "synthetic_points")
    feats, coords, grid = inputs(sp, points, *(([0.1, 0.1, 0.2], KITTI_VOXEL[1]) if source == "kitti" else SYNTH_VOXEL))
    theirs, ours = twin_models(sp, "UNet", 4, 5)
    rec_s, _ = record(theirs, leaf_types(sp))
    rec_o, _ = record(ours, leaf_types(cp))
    with torch.no_grad():
        ys = spconv_eval(theirs, sp)(sp.SparseConvTensor(feats, coords, grid, 1))
        x = cp.SparseConvTensor(feats, coords, grid, 1)
        yo = ours(x)
        assert compare_layers(rec_s, rec_o) == 10
        for rec in (rec_s, rec_o):  # each library's inverse conv returns its down conv's input rows, in order
            assert torch.equal(rec["up2.0"][0], rec["down1.0.0"][0]) and torch.equal(rec["up1.0"][0], coords)
        assert yo.indices is x.indices and torch.equal(ys.indices, coords)
        assert (ys.features - yo.features).abs().max().item() < 1e-5


THREADS_SCRIPT = r"""
import sys
import torch
sys.path.insert(0, sys.argv[1])
import test_compat_spconv_models as T
assert "spconv" not in sys.modules
grid = [40, 160, 160]
shape = [grid[0] + 1, *grid[1:]]
feats, coords = T.tiny_input(n=6000, shape=shape, channels=4)
feats = feats.float()
second = T.randomize(T.OURS.SecondBackbone(4, grid, width=8), seed=6)
res = T.randomize(T.OURS.ResBackbone(4, bias=True), seed=7)
unet = T.randomize(T.OURS.UNet(4, 5), seed=8)
runs = []
for threads in (1, 2):
    torch.set_num_threads(threads)
    with torch.no_grad():
        r = res(T.cp.SparseConvTensor(feats, coords, shape, 1))
        u = unet(T.cp.SparseConvTensor(feats, coords, shape, 1))
        runs.append((second(feats, coords, 1), r.indices, r.features, u.features))
same = all(torch.equal(a, b) for a, b in zip(*runs))
print("RESULT", len(coords), torch.get_num_threads(), same)
"""


def test_outputs_identical_on_two_threads():
    """spconv's CPU build is only correct single-threaded; our outputs are bit-identical at 1 and 2 threads.

    Run in a fresh interpreter without spconv: with spconv's OpenMP runtime loaded next to torch's, two-thread
    torch ops slow down 10-50x on this machine.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", THREADS_SCRIPT, str(Path(__file__).parent)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    _, n, threads, same = lines[-1]
    assert int(n) > 1000 and threads == "2" and same == "True"


def test_biased_subm_convs_match_dense_reference(kitti_points):
    """The residual backbone's biased SubMConv3d layers (spconv CPU refuses them) against F.conv3d, in float64."""
    crop = [0.0, -16.0, -3.0, 32.0, 16.0, 1.0]  # a [10, 160, 160] grid keeps the dense reference small
    feats, coords, grid = voxelize(kitti_points, cp.utils.PointToVoxel, [0.2, 0.2, 0.4], crop)
    model = randomize(OURS.ResBackbone(4, bias=True), seed=2).double()
    seen = {}
    for name, m in model.named_modules():
        if isinstance(m, cp.SubMConv3d) and m.bias is not None:
            m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, (mod, inp[0], out)))
    with torch.no_grad():
        model(cp.SparseConvTensor(feats.double(), coords, [grid[0] + 1, *grid[1:]], 1))
    assert len(seen) == 8
    for name, (m, x, y) in seen.items():
        dense = x.dense()
        ref = F.conv3d(dense, m.weight.movedim(-1, 1), m.bias, padding=1)
        i = y.indices.long()
        got = ref[i[:, 0], :, i[:, 1], i[:, 2], i[:, 3]]
        assert torch.allclose(got, y.features, atol=1e-10), name


def tiny_input(n=24, shape=(41, 12, 12), channels=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.stack([torch.randint(0, s, (n,), generator=g) for s in shape], 1)
    coords = torch.unique(torch.cat([torch.zeros(n, 1, dtype=torch.long), pts], 1), dim=0).to(torch.int32)
    return torch.randn(len(coords), channels, generator=g, dtype=torch.float64), coords


def test_gradcheck_second_backbone():
    model = randomize(OURS.SecondBackbone(2, [40, 12, 12], width=2), seed=3).double()
    feats, coords = tiny_input()
    assert torch.autograd.gradcheck(
        lambda f: model(f, coords, 1), (feats.requires_grad_(True),), atol=1e-6, fast_mode=True
    )


def test_gradcheck_residual_backbone_features_and_biased_weight():
    model = randomize(OURS.ResBackbone(2, width=2, bias=True), seed=4).double()
    feats, coords = tiny_input(n=30, shape=(9, 9, 9))
    name = "layer1.0.conv2"
    params = {k: v.detach() for k, v in model.named_parameters() if k.startswith(name)}

    def f(x, w, b):
        out = functional_call(model, {**params, f"{name}.weight": w, f"{name}.bias": b},
                              (cp.SparseConvTensor(x, coords, [9, 9, 9], 1),))  # fmt: skip
        return out.features

    args = (
        feats.requires_grad_(True),
        *(params[f"{name}.{p}"].clone().requires_grad_(True) for p in ("weight", "bias")),
    )
    assert torch.autograd.gradcheck(f, args, atol=1e-6, fast_mode=True)


def test_gradcheck_unet():
    model = randomize(OURS.UNet(2, 3, width=2), seed=5).double()
    feats, coords = tiny_input(n=30, shape=(9, 9, 9))

    def f(x):
        return model(cp.SparseConvTensor(x, coords, [9, 9, 9], 1)).features

    assert torch.autograd.gradcheck(f, (feats.requires_grad_(True),), atol=1e-6, fast_mode=True)
