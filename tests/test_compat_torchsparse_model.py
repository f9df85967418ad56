"""A MinkUNet-like network written in TorchSparse 2.1's style, run on ``torchsparse_lite.compat.torchsparse``.

* vs a dense float64 reference of the whole network (masked ``F.conv3d`` /
  ``F.conv_transpose3d`` with TorchSparse's offset -> weight assignment),
  forward and backward;
* a TorchSparse-format state dict, built by hand from known dense weights,
  loads strictly, and the compat model then equals our native model loaded
  through the interop converter.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference import random_coords
from test_compat_torchsparse_reference import dense_kernel, densify, read, torchsparse_taps
from torch import nn

import torchsparse_lite
import torchsparse_lite.compat.torchsparse as torchsparse
from torchsparse_lite import nn as snn
from torchsparse_lite.compat.torchsparse import nn as spnn
from torchsparse_lite.interop.checkpoints import load_torchsparse_checkpoint

GRID = (11, 10, 9)
BATCH = 2
CH = (3, 4, 6, 8)


def make_unet(spnn, cat, classes: int = 5) -> nn.Module:
    """TorchSparse-style model code; ``spnn``/``cat`` are TorchSparse's (compat) or ours (native)."""

    class ResBlock(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.net = nn.Sequential(
                spnn.Conv3d(cin, cout, kernel_size=3), spnn.BatchNorm(cout), spnn.ReLU(True),
                spnn.Conv3d(cout, cout, kernel_size=3), spnn.BatchNorm(cout),
            )  # fmt: skip
            self.downsample = (
                nn.Identity()
                if cin == cout
                else nn.Sequential(spnn.Conv3d(cin, cout, kernel_size=1), spnn.BatchNorm(cout))
            )
            self.relu = spnn.ReLU(True)

        def forward(self, x):
            return self.relu(self.net(x) + self.downsample(x))

    def block(cin: int, cout: int, **conv):
        return nn.Sequential(spnn.Conv3d(cin, cout, **conv), spnn.BatchNorm(cout), spnn.ReLU(True))

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c0, c1, c2, c3 = CH
            self.stem = block(c0, c1, kernel_size=3)
            self.down1 = nn.Sequential(block(c1, c1, kernel_size=2, stride=2), ResBlock(c1, c2))
            self.down2 = nn.Sequential(block(c2, c2, kernel_size=3, stride=2, padding=1), ResBlock(c2, c3))
            self.up1 = block(c3, c2, kernel_size=3, stride=2, padding=1, transposed=True)
            self.fuse1 = ResBlock(c2 + c2, c2)
            self.up2 = block(c2, c1, kernel_size=2, stride=2, transposed=True)
            self.fuse2 = ResBlock(c1 + c1, c1)
            self.head = spnn.Conv3d(c1, classes, kernel_size=1, bias=True)

        def forward(self, x):
            x0 = self.stem(x)
            x1 = self.down1(x0)
            x2 = self.down2(x1)
            y1 = self.fuse1(cat([self.up1(x2), x1]))
            y0 = self.fuse2(cat([self.up2(y1), x0]))
            return [x0, x1, x2, y1, self.head(y0)]

    return UNet()


def randomize(model: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.6, 1.4)
            nn.init.uniform_(m.weight, 0.7, 1.3)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.double().eval()


def make_coords(seed: int = 0) -> torch.Tensor:
    coords = random_coords(220, 9, BATCH, torch.Generator().manual_seed(seed))
    return coords[(coords[:, 1:] < torch.tensor(GRID)).all(1)]


# ----------------------------------------------------------------- the dense reference
State = tuple[torch.Tensor, torch.Tensor]  # dense [B, C, X, Y, Z] features and [B, 1, X, Y, Z] occupancy


def fit(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Crop or zero-pad the spatial dims of ``t`` to ``shape``."""
    t = t[..., : shape[0], : shape[1], : shape[2]]
    pad: list[int] = []
    for have, want in zip(reversed(t.shape[2:]), reversed(shape)):
        pad += [0, want - have]
    return F.pad(t, pad)


def dense_conv(m: spnn.Conv3d, state: State, fine: torch.Tensor | None) -> State:
    """A TorchSparse conv on the dense twin: its taps start at the module padding in this network."""
    grid, mask = state
    w = dense_kernel(m.kernel, m.kernel_size, m.padding)
    if m.transposed:
        grid = F.pad(grid, [0, 1, 0, 1, 0, 1])  # so that the output covers the whole finer grid before cropping
        out = fit(F.conv_transpose3d(grid, w.transpose(0, 1), stride=m.stride, padding=m.padding), fine.shape[2:])
        mask = fine
    else:
        out = F.conv3d(grid, w, stride=m.stride, padding=m.padding)
        if m.stride != (1, 1, 1):
            ones = torch.ones(1, 1, *m.kernel_size, dtype=mask.dtype)
            mask = (F.conv3d(mask, ones, stride=m.stride, padding=m.padding) > 0).to(mask.dtype)
    if m.bias is not None:
        out = out + m.bias.view(1, -1, 1, 1, 1)
    return out * mask, mask


def dense_apply(m: nn.Module, state: State, fine: torch.Tensor | None = None) -> State:
    grid, mask = state
    if isinstance(m, spnn.Conv3d):
        return dense_conv(m, state, fine)
    if isinstance(m, spnn.BatchNorm):
        scale = m.weight / torch.sqrt(m.running_var + m.eps)
        out = (grid - m.running_mean.view(1, -1, 1, 1, 1)) * scale.view(1, -1, 1, 1, 1) + m.bias.view(1, -1, 1, 1, 1)
        return out * mask, mask
    if isinstance(m, spnn.ReLU):
        return torch.relu(grid), mask
    if isinstance(m, nn.Identity):
        return state
    if isinstance(m, nn.Sequential):
        for i, sub in enumerate(m):
            state = dense_apply(sub, state, fine if i == 0 else None)
        return state
    main, skip = dense_apply(m.net, state), dense_apply(m.downsample, state)  # a ResBlock
    return torch.relu(main[0] + skip[0]), mask


def dense_unet(model: nn.Module, coords: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """The network on dense grids, read back at the input coordinates."""
    ones = torch.ones(len(coords), 1, dtype=feats.dtype)
    x0 = dense_apply(model.stem, (densify(coords, feats, GRID, BATCH), densify(coords, ones, GRID, BATCH)))
    x1 = dense_apply(model.down1, x0)
    x2 = dense_apply(model.down2, x1)
    u1 = dense_apply(model.up1, x2, fine=x1[1])
    y1 = dense_apply(model.fuse1, (torch.cat([u1[0], x1[0]], 1), x1[1]))
    u0 = dense_apply(model.up2, y1, fine=x0[1])
    y0 = dense_apply(model.fuse2, (torch.cat([u0[0], x0[0]], 1), x0[1]))
    return read(dense_apply(model.head, y0)[0], coords)


# ----------------------------------------------------------------- tests
def compat_input(coords: torch.Tensor, seed: int = 3) -> torchsparse.SparseTensor:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(len(coords), CH[0], generator=g, dtype=torch.float64, requires_grad=True)
    return torchsparse.SparseTensor(feats, coords, spatial_range=(BATCH, *GRID))


def test_unet_matches_dense_reference_forward_and_backward() -> None:
    model = randomize(make_unet(spnn, torchsparse.cat), seed=4)
    coords = make_coords()
    x = compat_input(coords)
    outs = model(x)
    out = outs[-1]
    assert torch.equal(out.coords, coords) and out.stride == (1, 1, 1)
    # coordinates in TorchSparse 2.1's units: divided by the stride, batch first
    x1, x2 = outs[1], outs[2]
    assert x1.stride == (2, 2, 2) and x2.stride == (4, 4, 4)
    c = coords.long()
    down1 = torch.unique(torch.cat([c[:, :1], c[:, 1:] // 2], 1), dim=0)
    assert torch.equal(x1.coords.long(), down1[(down1[:, 1:] < torch.tensor([5, 5, 4])).all(1)])
    assert x1.spatial_range == (BATCH, 5, 5, 4) and x2.spatial_range == (BATCH, 3, 3, 2)
    ref = dense_unet(model, coords, x.feats)
    torch.testing.assert_close(out.feats, ref)
    params = [x.feats] + [p for p in model.parameters()]
    g = torch.randn_like(ref)
    got = torch.autograd.grad((out.feats * g).sum(), params, retain_graph=True)
    want = torch.autograd.grad((ref * g).sum(), params)
    for name, a, b in zip(["input"] + [n for n, _ in model.named_parameters()], got, want):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")


def torchsparse_state_dict(model: nn.Module, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A TorchSparse checkpoint written by hand: known dense weights placed row by row in TorchSparse's tap order.

    Returns:
        (the TorchSparse state dict, the dense weights [Cout, Cin, kx, ky, kz] by conv name).
    """
    g = torch.Generator().manual_seed(seed)
    sd, dense = {}, {}
    for name, m in model.named_modules():
        if isinstance(m, spnn.Conv3d):
            ks = m.kernel_size
            w = torch.randn(m.out_channels, m.in_channels, *ks, generator=g, dtype=torch.float64) * 0.3
            start = m.padding
            rows = [
                w[:, :, dx + start[0], dy + start[1], dz + start[2]].t()
                for (dx, dy, dz), _ in torchsparse_taps(ks, start)
            ]
            kernel = torch.stack(rows)
            sd[f"{name}.kernel"] = kernel[0] if ks == (1, 1, 1) else kernel
            dense[name] = w
            if m.bias is not None:
                sd[f"{name}.bias"] = torch.randn(m.out_channels, generator=g, dtype=torch.float64)
        elif isinstance(m, spnn.BatchNorm):
            for key, value in m.state_dict().items():
                sd[f"{name}.{key}"] = value.clone()
    return sd, dense


def test_torchsparse_checkpoint_loads_strictly_and_matches_native() -> None:
    compat = randomize(make_unet(spnn, torchsparse.cat), seed=5)
    sd, dense = torchsparse_state_dict(compat, seed=6)
    assert set(sd) == set(compat.state_dict())
    assert sd["down1.0.0.kernel"].shape == (8, CH[1], CH[1]) and sd["head.kernel"].shape == (CH[1], 5)
    compat.load_state_dict(sd, strict=True)
    for name, m in compat.named_modules():
        if isinstance(m, spnn.Conv3d):  # the loaded kernel is the known dense weight, tap for tap
            torch.testing.assert_close(dense_kernel(m.kernel, m.kernel_size, m.padding), dense[name])
    native = make_unet(snn, torchsparse_lite.cat).double().eval()
    load_torchsparse_checkpoint(native, sd, strict=True)
    coords = make_coords(seed=7)
    x = compat_input(coords, seed=8)
    got = compat(x)[-1]
    nx = torchsparse_lite.SparseTensor(x.feats, coords, spatial_range=GRID)
    want = native(nx)[-1]
    assert torch.equal(got.coords, want.coords)
    torch.testing.assert_close(got.feats, want.feats)


def test_checkpoint_on_the_real_kitti_frame_matches_native() -> None:
    """The TorchSparse-style net on a real scan (KITTI 000008, 0.2 m) equals the native one loaded through interop."""
    import numpy as np  # noqa: PLC0415
    from conftest import data_file  # noqa: PLC0415 - skips when the scan is absent

    pts = np.fromfile(data_file("kitti/000008.bin"), dtype=np.float32).reshape(-1, 4)
    q = torchsparse_lite.sparse_quantize(pts[:, :3], 0.2)
    coords = torch.cat([torch.zeros(len(q.coords), 1, dtype=torch.int32), q.coords], 1)
    extent = tuple(int(v) + 1 for v in coords[:, 1:].amax(0))
    compat = randomize(make_unet(spnn, torchsparse.cat), seed=9)
    sd, _ = torchsparse_state_dict(compat, seed=10)
    compat.load_state_dict(sd, strict=True)
    native = make_unet(snn, torchsparse_lite.cat).double().eval()
    load_torchsparse_checkpoint(native, sd, strict=True)
    feats = torch.randn(len(coords), CH[0], generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    feats.requires_grad_(True)
    got = compat(torchsparse.SparseTensor(feats, coords, spatial_range=(1, *extent)))[-1]
    want = native(torchsparse_lite.SparseTensor(feats, coords, spatial_range=extent))[-1]
    assert len(coords) > 5000 and torch.equal(got.coords, want.coords)
    torch.testing.assert_close(got.feats, want.feats)
    (grad,) = torch.autograd.grad(got.feats.square().sum(), feats)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


def test_state_dict_layout_is_torchsparse_s() -> None:
    model = make_unet(spnn, torchsparse.cat)
    sd = model.state_dict()
    assert sd["stem.0.kernel"].shape == (27, CH[0], CH[1])
    assert sd["down1.1.downsample.0.kernel"].shape == (CH[1], CH[2])  # 1x1x1: [Cin, Cout]
    assert sd["head.bias"].shape == (5,) and "stem.0.bias" not in sd
    assert not any(k.endswith("_tap_order") for k in sd)


@pytest.mark.parametrize("train", [False, True])
def test_unet_trains_on_compat_tensors(train: bool) -> None:
    model = make_unet(spnn, torchsparse.cat).train(train)
    x = torchsparse.SparseTensor(torch.randn(len(make_coords()), CH[0]), make_coords())
    out = model(x)[-1]
    out.feats.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
