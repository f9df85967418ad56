"""MinkowskiEngine-style networks on torchsparse_lite.compat.minkowski, imported through ``install()``.

The two networks are written the way ME's ``examples/resnet.py`` and
``examples/minkunet.py`` are (``import MinkowskiEngine as ME``, ME's
BasicBlock, strided and stride-3 convs, k=2 s=2 down/up convs, ``ME.cat``
skips, global pooling), checked forward and backward in float64 against the
brute-force reference, and loaded from hand-built ME-format state_dicts.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from conftest import data_file
from test_compat_minkowski_reference import batch_norm, conv, conv_transpose, pool, random_me_coords, strided_coords
from torch import nn

import torchsparse_lite.compat.minkowski as compat

with compat.install():
    import MinkowskiEngine as ME  # noqa: N817 - ME's own alias
    from MinkowskiEngine.modules.resnet_block import BasicBlock


class ResNetME(nn.Module):
    """ResNet-style classifier: strided stem, avg pool, a strided residual layer, a stride-3 conv, global max."""

    def __init__(self, in_channels: int, out_channels: int, D: int = 3) -> None:
        super().__init__()
        self.inplanes = 8
        self.conv1 = ME.MinkowskiConvolution(in_channels, 8, kernel_size=3, stride=2, dimension=D)
        self.bn1 = ME.MinkowskiBatchNorm(8)
        self.relu = ME.MinkowskiReLU(inplace=True)
        self.pool = ME.MinkowskiAvgPooling(kernel_size=2, stride=2, dimension=D)
        self.layer1 = self._make_layer(16, stride=2, D=D)
        self.conv5 = ME.MinkowskiConvolution(16, 16, kernel_size=3, stride=3, dimension=D)
        self.bn5 = ME.MinkowskiBatchNorm(16)
        self.glob_pool = ME.MinkowskiGlobalMaxPooling()
        self.final = ME.MinkowskiLinear(16, out_channels, bias=True)

    def _make_layer(self, planes: int, stride: int, D: int) -> nn.Sequential:
        downsample = nn.Sequential(
            ME.MinkowskiConvolution(self.inplanes, planes, kernel_size=1, stride=stride, dimension=D),
            ME.MinkowskiBatchNorm(planes),
        )
        layers = [BasicBlock(self.inplanes, planes, stride=stride, downsample=downsample, dimension=D)]
        layers.append(BasicBlock(planes, planes, dimension=D))
        self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.relu(self.bn5(self.conv5(x)))
        return self.final(self.glob_pool(x))


class MinkUNetME(nn.Module):
    """U-Net: k=2 s=2 down convs, k=2 s=2 transposed up convs, ME.cat skips, 1x1x1 biased head."""

    def __init__(self, in_channels: int, out_channels: int, D: int = 3) -> None:
        super().__init__()
        self.conv0p1s1 = ME.MinkowskiConvolution(in_channels, 8, kernel_size=3, dimension=D)
        self.bn0 = ME.MinkowskiBatchNorm(8)
        self.conv1p1s2 = ME.MinkowskiConvolution(8, 8, kernel_size=2, stride=2, dimension=D)
        self.bn1 = ME.MinkowskiBatchNorm(8)
        self.block1 = nn.Sequential(BasicBlock(8, 8, dimension=D))
        self.conv2p2s2 = ME.MinkowskiConvolution(8, 16, kernel_size=2, stride=2, dimension=D)
        self.bn2 = ME.MinkowskiBatchNorm(16)
        self.block2 = nn.Sequential(BasicBlock(16, 16, dimension=D))
        self.convtr2p4s2 = ME.MinkowskiConvolutionTranspose(16, 8, kernel_size=2, stride=2, dimension=D)
        self.bntr2 = ME.MinkowskiBatchNorm(8)
        downsample = nn.Sequential(ME.MinkowskiConvolution(16, 8, kernel_size=1, dimension=D), ME.MinkowskiBatchNorm(8))
        self.block3 = nn.Sequential(BasicBlock(16, 8, downsample=downsample, dimension=D))
        self.convtr3p2s2 = ME.MinkowskiConvolutionTranspose(8, 8, kernel_size=2, stride=2, dimension=D)
        self.bntr3 = ME.MinkowskiBatchNorm(8)
        self.final = ME.MinkowskiConvolution(16, out_channels, kernel_size=1, bias=True, dimension=D)
        self.relu = ME.MinkowskiReLU(inplace=True)

    def forward(self, x):
        out_p1 = self.relu(self.bn0(self.conv0p1s1(x)))
        out_b1p2 = self.block1(self.relu(self.bn1(self.conv1p1s2(out_p1))))
        out = self.block2(self.relu(self.bn2(self.conv2p2s2(out_b1p2))))
        out = self.relu(self.bntr2(self.convtr2p4s2(out)))
        out = self.block3(ME.cat(out, out_b1p2))
        out = self.relu(self.bntr3(self.convtr3p2s2(out)))
        return self.final(ME.cat(out, out_p1))


# ------------------------------------------------------------------- reference forwards (ME units)
def _bn(m, f):
    return batch_norm(m.bn, f)


def ref_block(blk, c, f, t):
    """(output coordinates, features) of ME's BasicBlock on (c, f) at tensor stride t."""
    s = blk.conv1.kernel_generator.kernel_stride[0]
    c1 = c if s == 1 else strided_coords(c, t * s)
    out = _bn(blk.norm1, conv(c, f, blk.conv1.kernel, c1, 3, 1, t)).relu()
    out = _bn(blk.norm2, conv(c1, out, blk.conv2.kernel, c1, 3, 1, t * s))
    res = f
    if blk.downsample is not None:
        ds = blk.downsample[0]
        res = _bn(blk.downsample[1], conv(c, f, ds.kernel, c1, ds.kernel_generator.kernel_size[0], 1, t))
    return c1, (out + res).relu()


def ref_resnet(m, c, f):
    c2 = strided_coords(c, 2)
    x = _bn(m.bn1, conv(c, f, m.conv1.kernel, c2, 3, 1, 1)).relu()
    c4 = strided_coords(c2, 4)
    x = pool(c2, x, c4, 2, 2, 2, "avg")
    cc, x = ref_block(m.layer1[0], c4, x, 4)
    cc, x = ref_block(m.layer1[1], cc, x, 8)
    c24 = strided_coords(cc, 24)
    x = _bn(m.bn5, conv(cc, x, m.conv5.kernel, c24, 3, 1, 8)).relu()
    rows = [x[c24[:, 0] == b].amax(0) for b in sorted(set(c24[:, 0].tolist()))]
    return m.final.linear(torch.stack(rows))


def ref_unet(m, c, f):
    p1 = _bn(m.bn0, conv(c, f, m.conv0p1s1.kernel, c, 3, 1, 1)).relu()
    c2 = strided_coords(c, 2)
    x = _bn(m.bn1, conv(c, p1, m.conv1p1s2.kernel, c2, 2, 1, 1)).relu()
    _, b1p2 = ref_block(m.block1[0], c2, x, 2)
    c4 = strided_coords(c2, 4)
    x = _bn(m.bn2, conv(c2, b1p2, m.conv2p2s2.kernel, c4, 2, 1, 2)).relu()
    _, x = ref_block(m.block2[0], c4, x, 4)
    x = _bn(m.bntr2, conv_transpose(c4, x, m.convtr2p4s2.kernel, c2, 2, 1, 2)).relu()
    _, x = ref_block(m.block3[0], c2, torch.cat([x, b1p2], 1), 2)
    x = _bn(m.bntr3, conv_transpose(c2, x, m.convtr3p2s2.kernel, c, 2, 1, 1)).relu()
    return torch.cat([x, p1], 1) @ m.final.kernel + m.final.bias


def _randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm1d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
    return model.eval()


def _input(n: int, seed: int, lo: int = -16, hi: int = 16) -> ME.SparseTensor:
    c = random_me_coords(n, lo, hi, 2, seed=seed)
    f = torch.randn(c.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    return ME.SparseTensor(f.requires_grad_(), c)


def _compare(out: torch.Tensor, ref: torch.Tensor, inputs: list[torch.Tensor]) -> None:
    torch.testing.assert_close(out, ref)
    g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(3))
    got = torch.autograd.grad((out * g).sum(), inputs, retain_graph=True)
    want = torch.autograd.grad((ref * g).sum(), inputs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_resnet_forward_backward_matches_reference():
    model = _randomize_bn(ResNetME(3, 5).double(), seed=1)
    x = _input(400, seed=2)
    out = model(x)
    assert out.C.tolist() == [[0, 0, 0, 0], [1, 0, 0, 0]] and out.tensor_stride == [0, 0, 0]
    params = [model.conv1.kernel, model.layer1[0].downsample[0].kernel, model.conv5.kernel, model.final.linear.weight]
    assert model.layer1[0].downsample[0].kernel.shape == (1, 8, 16)
    _compare(out.F, ref_resnet(model, x.C, x.F), [x.F, *params])


def test_minkunet_forward_backward_matches_reference():
    model = _randomize_bn(MinkUNetME(3, 4).double(), seed=4)
    x = _input(300, seed=5)
    out = model(x)
    # The up convs reuse the finer maps: the output has the input's rows in the input's order.
    assert torch.equal(out.C, x.C) and out.coordinate_map_key == x.coordinate_map_key
    params = [model.conv0p1s1.kernel, model.conv1p1s2.kernel, model.convtr2p4s2.kernel, model.final.kernel]
    _compare(out.F, ref_unet(model, x.C, x.F), [x.F, *params])


def test_minkunet_trains_in_float32():
    model = MinkUNetME(3, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = ME.SparseTensor(torch.randn(200, 3), random_me_coords(200, -10, 10, 2, seed=6))
    labels = torch.randint(0, 4, (len(x),), generator=torch.Generator().manual_seed(7))
    losses = []
    for _ in range(5):
        opt.zero_grad()
        y = model(ME.SparseTensor(x.F, x.C))
        loss = nn.functional.cross_entropy(y.F, labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ------------------------------------------------------------------------- ME-format checkpoints
def _bn_entries(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    out = {f"{prefix}.bn.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")}
    out[f"{prefix}.bn.num_batches_tracked"] = ()
    return out


def _block_entries(prefix: str, cin: int, planes: int, downsample: tuple[int, ...] | None = None) -> dict:
    out = {f"{prefix}.conv1.kernel": (27, cin, planes), **_bn_entries(f"{prefix}.norm1", planes)}
    out.update({f"{prefix}.conv2.kernel": (27, planes, planes), **_bn_entries(f"{prefix}.norm2", planes)})
    if downsample is not None:
        out.update({f"{prefix}.downsample.0.kernel": downsample, **_bn_entries(f"{prefix}.downsample.1", planes)})
    return out


def _me_checkpoint(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.tensor(3) if k.endswith("num_batches_tracked") else torch.rand(s, generator=g) + 0.5
        for k, s in shapes.items()
    }


# Keys and shapes as ME 0.5.4 names them (MinkowskiConvolution.kernel [K, Cin, Cout], or [Cin, Cout] for
# kernel_size=1 stride=1; bias [1, Cout]; MinkowskiBatchNorm's child "bn"; MinkowskiLinear's child "linear").
UNET_KEYS = {
    "conv0p1s1.kernel": (27, 3, 8), **_bn_entries("bn0", 8),
    "conv1p1s2.kernel": (8, 8, 8), **_bn_entries("bn1", 8),
    **_block_entries("block1.0", 8, 8),
    "conv2p2s2.kernel": (8, 8, 16), **_bn_entries("bn2", 16),
    **_block_entries("block2.0", 16, 16),
    "convtr2p4s2.kernel": (8, 16, 8), **_bn_entries("bntr2", 8),
    **_block_entries("block3.0", 16, 8, downsample=(16, 8)),
    "convtr3p2s2.kernel": (8, 8, 8), **_bn_entries("bntr3", 8),
    "final.kernel": (16, 4), "final.bias": (1, 4),
}  # fmt: skip
RESNET_KEYS = {
    "conv1.kernel": (27, 3, 8), **_bn_entries("bn1", 8),
    **_block_entries("layer1.0", 8, 16, downsample=(1, 8, 16)),
    **_block_entries("layer1.1", 16, 16),
    "conv5.kernel": (27, 16, 16), **_bn_entries("bn5", 16),
    "final.linear.weight": (5, 16), "final.linear.bias": (5,),
}  # fmt: skip


@pytest.mark.parametrize("factory,keys", [(lambda: MinkUNetME(3, 4), UNET_KEYS), (lambda: ResNetME(3, 5), RESNET_KEYS)])
def test_me_format_state_dict_loads_strictly(factory, keys):
    model = factory()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == keys
    ckpt = _me_checkpoint(keys, seed=8)
    model.load_state_dict(ckpt, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt[k]), k


# ------------------------------------------------------------------------------------- install
def test_install_registers_and_restores_sys_modules():
    assert "MinkowskiEngine" not in sys.modules and ME is compat and BasicBlock is compat.modules.BasicBlock
    sentinel = types.ModuleType("MinkowskiEngine")
    sys.modules["MinkowskiEngine"] = sentinel
    try:
        handle = compat.install()
        import MinkowskiEngine  # noqa: PLC0415 - resolvable only after install()
        import MinkowskiEngine.MinkowskiFunctional as MEF  # noqa: PLC0415, N814 - idem; ME's alias
        from MinkowskiEngine.utils import sparse_quantize  # noqa: PLC0415 - idem

        assert MinkowskiEngine is compat and MEF is compat.MinkowskiFunctional
        assert sparse_quantize is compat.utils.sparse_quantize and sys.modules["MinkowskiEngine.MinkowskiOps"]
        handle.uninstall()
        assert sys.modules["MinkowskiEngine"] is sentinel and "MinkowskiEngine.utils" not in sys.modules
        compat.install()
        compat.uninstall()
        assert sys.modules["MinkowskiEngine"] is sentinel
    finally:
        sys.modules.pop("MinkowskiEngine", None)


# ------------------------------------------------------------------------------------ real scan
def test_minkunet_on_a_real_kitti_scan_keeps_me_rows():
    points = np.fromfile(data_file("kitti/000008.bin"), dtype=np.float32).reshape(-1, 4)
    coords, feats = ME.utils.sparse_quantize(points[:, :3], points, quantization_size=0.2)
    x = ME.SparseTensor(torch.as_tensor(feats[:, 3:]).repeat(1, 3), ME.utils.batched_coordinates([coords]))
    assert int(x.C[:, 1:].min()) < 0  # signed ME coordinates reach the engine through the boundary shift
    model = MinkUNetME(3, 4).eval()
    with torch.no_grad():
        out = model(x)
    assert torch.equal(out.C, x.C) and out.F.shape == (len(x), 4) and bool(torch.isfinite(out.F).all())
    down = model.conv1p1s2(ME.SparseTensor(torch.ones(len(x), 8), x.C))
    assert down.C.tolist() == strided_coords(x.C, 2).tolist()
