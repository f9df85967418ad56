"""Issue 7.4: TorchSparse / spconv checkpoint interchange and a state_dict stable across versions.

``tests/data/tiny_net_v1.pt`` (about 10 KB) holds the state dict of
:func:`tiny_net`, an input and the output that state dict produced when the file
was written. The test keeps loading it and checking the output, so renaming a
parameter, changing the weight layout or the kernel-offset order breaks it.
Regenerate only on purpose (a deliberate format change), with::

    python -c "import sys; sys.path.insert(0, 'tests'); import test_reliability_interop as t; t.write_tiny_checkpoint()"

The numeric check against spconv itself (single-threaded) is in ``test_core_spconv.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reference import random_coords
from torch import nn

from torchsparse_lite import SparseTensor
from torchsparse_lite import nn as snn
from torchsparse_lite.interop import (
    from_spconv_state_dict,
    from_torchsparse_state_dict,
    load_spconv_checkpoint,
    load_torchsparse_checkpoint,
    spconv_to_weight,
    to_spconv_state_dict,
    to_torchsparse_state_dict,
    torchsparse_to_weight,
    weight_to_spconv,
    weight_to_torchsparse,
)
from torchsparse_lite.kmap import kernel_offsets

TINY = Path(__file__).parent / "data" / "tiny_net_v1.pt"
FORMAT_VERSION = 1


def tiny_net() -> nn.Sequential:
    """The architecture of the stored checkpoint (do not change: the file depends on it)."""
    return nn.Sequential(
        snn.Conv3d(3, 4, 3),
        snn.BatchNorm(4),
        snn.ReLU(),
        snn.Conv3d(4, 6, 2, 2),
        snn.Conv3d(6, 6, (1, 3, 3), bias=True),
        snn.Conv3d(6, 4, 2, 2, transposed=True),
        snn.Conv3d(4, 2, 1),
    )


def tiny_input() -> SparseTensor:
    g = torch.Generator().manual_seed(11)
    coords = random_coords(60, 6, 2, g)
    return SparseTensor(torch.randn(len(coords), 3, generator=g), coords)


def write_tiny_checkpoint(path: Path = TINY) -> None:
    """Create the stored checkpoint (only on a deliberate format change)."""
    torch.manual_seed(3)
    model = tiny_net()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.3, 0.3)
        model[1].running_var.uniform_(0.5, 1.5)
    model.eval()
    x = tiny_input()
    with torch.no_grad():
        y = model(x)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format_version": FORMAT_VERSION,
            "state_dict": model.state_dict(),
            "coords": x.coords,
            "feats": x.feats,
            "out_coords": y.coords,
            "out_feats": y.feats,
        },
        path,
    )


def test_stored_checkpoint_still_loads_and_matches() -> None:
    assert TINY.exists(), "tests/data/tiny_net_v1.pt is missing (see module docstring)"
    assert TINY.stat().st_size < 32_000
    blob = torch.load(TINY, weights_only=True)
    assert blob["format_version"] == FORMAT_VERSION
    model = tiny_net().eval()
    assert set(model.state_dict()) == set(blob["state_dict"]), "state_dict key names changed"
    model.load_state_dict(blob["state_dict"], strict=True)
    x = tiny_input()
    assert torch.equal(x.coords, blob["coords"]) and torch.equal(x.feats, blob["feats"])
    with torch.no_grad():
        y = model(x)
    assert torch.equal(y.coords, blob["out_coords"])
    torch.testing.assert_close(y.feats, blob["out_feats"], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------- TorchSparse
def torchsparse_rows(kernel_size: tuple[int, int, int]) -> list[int]:
    """Our tap index of each TorchSparse kernel row, enumerated by hand as ``get_kernel_offsets`` does:
    ``for z: for y: for x`` (x fastest) for an odd kernel volume, ``for x: for y: for z`` (z fastest) for an even one.
    """
    kx, ky, kz = kernel_size
    ours = lambda ux, uy, uz: ux + kx * (uy + ky * uz)  # noqa: E731 - our x-fastest index
    if (kx * ky * kz) % 2:
        return [ours(x, y, z) for z in range(kz) for y in range(ky) for x in range(kx)]
    return [ours(x, y, z) for x in range(kx) for y in range(ky) for z in range(kz)]


def torchsparse_style_state_dict(model: nn.Sequential) -> dict[str, torch.Tensor]:
    """Written by hand as TorchSparse saves it: ``kernel`` keys, its tap order, ``[Cin, Cout]`` for the 1x1x1 conv."""
    sd = model.state_dict()
    out = {}
    for key, value in sd.items():
        idx, leaf = key.split(".")
        layer = model[int(idx)]
        if isinstance(layer, snn.Conv3d) and leaf == "weight":
            kernel = value[torchsparse_rows(layer.kernel_size)].clone()
            out[f"{idx}.kernel"] = kernel[0] if kernel.shape[0] == 1 else kernel
        else:
            out[key] = value.clone()
    return out


def test_torchsparse_checkpoint_loads() -> None:
    torch.manual_seed(0)
    src = tiny_net().eval()
    ts = torchsparse_style_state_dict(src)
    assert ts["6.kernel"].shape == (4, 2) and "0.kernel" in ts and "1.running_var" in ts
    # the k=2 convs' taps really are stored in another order (the old pass-through loaded them scrambled)
    assert not torch.equal(ts["3.kernel"], src[3].weight) and not torch.equal(ts["5.kernel"], src[5].weight)
    dst = tiny_net().eval()
    load_torchsparse_checkpoint(dst, {"state_dict": ts})
    x = tiny_input()
    assert torch.equal(dst(x).feats, src(x).feats)
    # and back to TorchSparse naming
    back = to_torchsparse_state_dict(dst)
    assert back.keys() == ts.keys()
    assert all(torch.equal(back[k], ts[k]) for k in ts)


def test_torchsparse_checkpoint_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = tiny_net().eval()
    path = tmp_path / "ts.pt"
    torch.save({"model": torchsparse_style_state_dict(src), "epoch": 3}, path)
    dst = tiny_net().eval()
    load_torchsparse_checkpoint(dst, path)
    x = tiny_input()
    assert torch.equal(dst(x).feats, src(x).feats)


def test_torchsparse_weight_helpers() -> None:
    w = torch.randn(5, 7)
    assert torchsparse_to_weight(w).shape == (1, 5, 7)
    assert torch.equal(weight_to_torchsparse(torchsparse_to_weight(w)), w)
    w3 = torch.randn(27, 5, 7)
    assert torchsparse_to_weight(w3) is w3 and weight_to_torchsparse(w3) is w3
    sd = from_torchsparse_state_dict({"a.kernel": w, "a.bias": torch.zeros(7), "bn.weight": torch.ones(7)})
    assert set(sd) == {"a.weight", "a.bias", "bn.weight"} and sd["a.weight"].shape == (1, 5, 7)
    with pytest.raises(ValueError, match="both"):
        from_torchsparse_state_dict({"a.kernel": w, "a.weight": w})
    # TorchSparse 2.1 keeps [1, Cin, Cout] for a strided 1x1x1 conv
    assert weight_to_torchsparse(torch.randn(1, 5, 7), (1, 1, 1), stride=2).shape == (1, 5, 7)


@pytest.mark.parametrize("ks", [(2, 2, 2), (3, 2, 1), (4, 4, 4), (2, 3, 4), (3, 3, 3), (1, 3, 3)])
def test_torchsparse_tap_order_round_trip(ks) -> None:
    k = ks[0] * ks[1] * ks[2]
    ours = torch.randn(k, 2, 3)
    ts = ours[torchsparse_rows(ks)]
    assert torch.equal(torchsparse_to_weight(ts, ks), ours)
    assert torch.equal(weight_to_torchsparse(ours, ks), ts)
    if k % 2 == 0:
        assert not torch.equal(ts, ours)
        with pytest.raises(ValueError, match="kernel_size"):
            torchsparse_to_weight(ts)
        with pytest.raises(ValueError, match="model="):
            from_torchsparse_state_dict({"conv.kernel": ts})
    with pytest.raises(ValueError, match="taps"):
        torchsparse_to_weight(ts, (5, 5, 5))


def brute_force(
    in_coords: torch.Tensor, feats: torch.Tensor, kernel: torch.Tensor, ks, stride, start, out_coords, transposed=False
) -> torch.Tensor:
    """Pairwise sum with TorchSparse's offset -> kernel row assignment (rows enumerated by hand, offsets u - start).

    conv: output o reads the input at ``o * stride + offset``; transposed: input i writes ``i * stride + offset``.
    """
    kx, ky, kz = ks
    axes = [[u - p for u in range(k)] for k, p in zip(ks, start)]
    if (kx * ky * kz) % 2:
        offsets = [(x, y, z) for z in axes[2] for y in axes[1] for x in axes[0]]
    else:
        offsets = [(x, y, z) for x in axes[0] for y in axes[1] for z in axes[2]]
    rows = {tuple(c): i for i, c in enumerate(in_coords.tolist())}
    outs = {tuple(c): j for j, c in enumerate(out_coords.tolist())}
    out = feats.new_zeros(len(out_coords), kernel.shape[-1])
    s = stride
    for t, (dx, dy, dz) in enumerate(offsets):
        if transposed:
            for (b, x, y, z), i in rows.items():
                j = outs.get((b, x * s + dx, y * s + dy, z * s + dz))
                if j is not None:
                    out[j] += feats[i] @ kernel[t]
        else:
            for (b, x, y, z), j in outs.items():
                i = rows.get((b, x * s + dx, y * s + dy, z * s + dz))
                if i is not None:
                    out[j] += feats[i] @ kernel[t]
    return out


# (kernel, stride, our padding, TorchSparse 2.1's offset start), TorchSparse convs as its 2.1 source defines them
TS_LAYERS = [
    ((3, 3, 3), 1, 1, (1, 1, 1)),  # submanifold, odd: centred
    ((2, 2, 2), 1, 0, (0, 0, 0)),  # submanifold, even: 0 .. k-1
    ((3, 2, 1), 1, 0, (0, 0, 0)),  # submanifold, even volume: 0 .. k-1 even on the odd axis
    ((4, 4, 4), 1, 0, (0, 0, 0)),
    ((2, 2, 2), 2, 0, (0, 0, 0)),  # the MinkUNet down-sampling conv
    ((3, 3, 3), 2, 1, (1, 1, 1)),
]


@pytest.mark.parametrize(("ks", "stride", "padding", "start"), TS_LAYERS)
def test_torchsparse_kernel_against_brute_force(ks, stride, padding, start) -> None:
    g = torch.Generator().manual_seed(4)
    x = SparseTensor(torch.randn(len(c := random_coords(50, 6, 2, g)), 2, generator=g), c)
    kernel = torch.randn(ks[0] * ks[1] * ks[2], 2, 3, generator=g)
    layer = snn.Conv3d(2, 3, ks, stride, padding=padding)
    load_torchsparse_checkpoint(nn.Sequential(layer), {"0.kernel": kernel})
    y = layer(x)
    ref = brute_force(x.coords, x.feats, kernel, ks, stride, start, y.coords)
    torch.testing.assert_close(y.feats, ref)
    with torch.no_grad():  # what the old pass-through loader did: wrong for every even kernel volume
        layer.weight.copy_(kernel)
    if kernel.shape[0] % 2 == 0:
        assert not torch.allclose(layer(x).feats, ref)


@pytest.mark.parametrize(("ks", "padding", "start"), [((2, 2, 2), 0, (0, 0, 0)), ((3, 3, 3), 1, (1, 1, 1))])
def test_torchsparse_transposed_kernel_against_brute_force(ks, padding, start) -> None:
    g = torch.Generator().manual_seed(5)
    x = SparseTensor(torch.randn(len(c := random_coords(50, 6, 2, g)), 2, generator=g), c)
    down = snn.Conv3d(2, 2, ks, 2, padding=padding)
    net = nn.Sequential(down, snn.Conv3d(2, 3, ks, 2, padding=padding, transposed=True))
    kernels = {f"{i}.kernel": torch.randn(ks[0] * ks[1] * ks[2], 2, n, generator=g) for i, n in ((0, 2), (1, 3))}
    load_torchsparse_checkpoint(net, kernels)
    h = net[0](x)
    y = net[1](h)
    assert torch.equal(y.coords, x.coords)
    ref = brute_force(h.coords, h.feats, kernels["1.kernel"], ks, 2, start, y.coords, transposed=True)
    torch.testing.assert_close(y.feats, ref)


def test_torchsparse_geometry_is_checked() -> None:
    ok = {"0.kernel": torch.randn(64, 2, 2)}
    load_torchsparse_checkpoint(nn.Sequential(snn.Conv3d(2, 2, 4, padding=0)), ok)  # 2.1: 0 .. 3
    load_torchsparse_checkpoint(nn.Sequential(snn.Conv3d(2, 2, 4, padding=1)), ok)  # 2.0: -1 .. 2
    with pytest.raises(ValueError, match="padding"):
        load_torchsparse_checkpoint(nn.Sequential(snn.Conv3d(2, 2, 4, padding=2)), ok)
    with pytest.raises(ValueError, match="padding"):  # a non-centred odd submanifold kernel
        load_torchsparse_checkpoint(nn.Sequential(snn.Conv3d(2, 2, 3, padding=0)), {"0.kernel": torch.randn(27, 2, 2)})
    with pytest.raises(ValueError, match="padding"):
        to_torchsparse_state_dict(nn.Sequential(snn.Conv3d(2, 2, 3, padding=0)))
    # strided convs take any padding in TorchSparse 2.1
    load_torchsparse_checkpoint(nn.Sequential(snn.Conv3d(2, 2, 3, 2, padding=0)), {"0.kernel": torch.randn(27, 2, 2)})


# ------------------------------------------------------------------ spconv
@pytest.mark.parametrize("ks", [(3, 3, 3), (1, 3, 3), (2, 3, 4), (1, 1, 1)])
@pytest.mark.parametrize("layout", ["KRSC", "RSCK"])
def test_spconv_layout_round_trip_and_index(ks, layout: str) -> None:
    w = torch.randn(ks[0] * ks[1] * ks[2], 3, 5)
    sp = weight_to_spconv(w, ks, layout)
    if layout == "KRSC":
        assert sp.shape == (5, *ks, 3)
    else:
        assert sp.shape == (*ks, 3, 5)
    back, got_ks = spconv_to_weight(sp, layout)
    assert got_ks == ks and torch.equal(back, w)
    # W[k] sits at the spconv tap (x, y, z) of offset k (x fastest)
    offs = kernel_offsets(ks, (1, 1, 1)) + torch.tensor([k // 2 if k % 2 else 0 for k in ks])
    krsc = sp if layout == "KRSC" else sp.permute(4, 0, 1, 2, 3)
    for k, (x, y, z) in enumerate(offs.tolist()):
        assert torch.equal(krsc[:, x, y, z, :], w[k].t())


def test_spconv_state_dict_round_trip() -> None:
    torch.manual_seed(2)
    model = tiny_net().eval()
    sp = to_spconv_state_dict(model)
    assert sp["0.weight"].shape == (4, 3, 3, 3, 3) and sp["4.weight"].shape == (6, 1, 3, 3, 6)
    assert sp["1.running_mean"] is not None and sp["4.bias"].shape == (6,)
    ours = from_spconv_state_dict(sp, model)
    assert all(torch.equal(ours[k], v) for k, v in model.state_dict().items())
    other = tiny_net().eval()
    load_spconv_checkpoint(other, sp)
    x = tiny_input()
    assert torch.equal(other(x).feats, model(x).feats)
