"""Issue 11: every ``torchsparse_lite.compat.spconv`` conv/pool against a dense float64 reference; key rules; errors.

Dense reference: the input scattered into its ``[B, C, *spatial_shape]`` grid,
``F.conv{1,2,3}d`` / ``F.conv_transpose{1,2,3}d`` / pooling with the layer's
padding, stride and dilation (spconv's KRSC weight ``[Cout, *k, Cin]`` moved to
``[Cout, Cin, *k]``), read at the layer's output indices; the output index set
must be the dense conv's active sites. Forward and backward (input features
and weight) in float64. The comparisons with the real spconv are in
``test_compat_spconv_peer.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchsparse_lite.compat.spconv as cp

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def scan(n=300, extent=9, batch=2, ndim=3, channels=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, batch, (n, 1), generator=g)
    a = torch.randint(0, extent, (n, ndim), generator=g)
    idx = torch.unique(torch.cat([b, a], 1), dim=0).to(torch.int32)
    idx = idx[torch.randperm(len(idx), generator=g)].contiguous()
    feats = torch.randn(len(idx), channels, generator=g, dtype=dtype)
    return feats, idx, [extent + i for i in range(ndim)]


def densify(feats, idx, shape, batch=2):
    out = feats.new_zeros([batch, *shape, feats.shape[1]])
    out[tuple(idx.long().t())] = feats
    return out.movedim(-1, 1)


def read(dense, idx):
    i = idx.long()
    return dense[(i[:, 0], slice(None), *i[:, 1:].t())]


def active_sites(dense) -> set:
    return {tuple(r) for r in (dense.abs().sum(1) > 0).nonzero().tolist()}


def sites(idx) -> set:
    return {tuple(r) for r in idx.tolist()}


def transposed_full(dense, weight_t, stride, dilation, padding, out_shape):
    """conv_transpose with padding 0 shifted by ``padding``, cropped/zero-padded to ``out_shape`` (spconv's)."""
    full = CONVT[dense.dim() - 2](dense, weight_t, stride=stride, dilation=dilation)
    need = [p + n - s for p, n, s in zip(padding, out_shape, full.shape[2:])]
    pad = [v for q in reversed(need) for v in (0, max(q, 0))]
    full = F.pad(full, pad)
    return full[(slice(None), slice(None), *[slice(p, p + n) for p, n in zip(padding, out_shape)])]


def dense_layer(m, feats, idx, shape, out_idx, out_shape, down=None):
    """The dense reference of layer ``m`` read at ``out_idx`` (``down``: the conv an inverse conv undoes)."""
    nd = len(shape)
    x = densify(feats, idx, shape)
    occ = densify(torch.ones_like(feats[:, :1]), idx, shape)
    if isinstance(m, cp.SparseConvolution):
        w = m.weight.movedim(-1, 1)
        if m.conv1x1:  # spconv multiplies by the weight's memory read as [Cin, Cout]
            w = m.weight.reshape(m.in_channels, m.out_channels).t().reshape(w.shape)
        wt = m.weight.permute(nd + 1, 0, *range(1, nd + 1))
        ones_t = torch.ones_like(wt[:1, :1])
        if m.subm:
            pad = [d * (k // 2) for k, d in zip(m.kernel_size, m.dilation)]
            y, act = CONV[nd](x, w, padding=pad, dilation=m.dilation), None
        elif m.inverse:
            args = (down.stride, down.dilation, down.padding, out_shape)
            y, act = transposed_full(x, wt, *args), None
        elif m.transposed:
            args = (m.stride, m.dilation, m.padding, out_shape)
            y, act = transposed_full(x, wt, *args), transposed_full(occ, ones_t, *args)
        else:
            kw = {"stride": m.stride, "padding": m.padding, "dilation": m.dilation}
            y, act = CONV[nd](x, w, **kw), CONV[nd](occ, torch.ones_like(w[:1, :1]), **kw)
        if m.bias is not None:
            y = y + m.bias.view(1, -1, *[1] * nd)
    else:
        kw = {"stride": m.stride, "padding": m.padding, "dilation": m.dilation}
        act = CONV[nd](occ, torch.ones([1, 1, *m.kernel_size], dtype=x.dtype), **kw)
        if isinstance(m, cp.pool.SparseAvgPool):
            ones = torch.ones([x.shape[1], 1, *m.kernel_size], dtype=x.dtype)
            y = CONV[nd](x, ones, groups=x.shape[1], **kw) / act.clamp(min=1)
        else:
            y = MAXPOOL[nd](x.masked_fill(occ == 0, float("-inf")), m.kernel_size, **kw).clamp(min=0)
    return read(y, out_idx), act


SPECS_3D = {
    "subm_k3_pad0_centred": lambda: cp.SubMConv3d(3, 4, 3, padding=0, bias=True),
    "subm_k135_dil121": lambda: cp.SubMConv3d(3, 4, (1, 3, 5), dilation=(1, 2, 1), bias=False),
    "subm_k1": lambda: cp.SubMConv3d(3, 4, 1, bias=True),
    "conv_k3_s2_p1": lambda: cp.SparseConv3d(3, 4, 3, 2, 1, bias=True),
    "conv_k3_s2_p011": lambda: cp.SparseConv3d(3, 4, 3, 2, (0, 1, 1), bias=False),
    "conv_k311_s211": lambda: cp.SparseConv3d(3, 4, (3, 1, 1), (2, 1, 1), bias=False),
    "conv_k2_s2": lambda: cp.SparseConv3d(3, 4, 2, 2, bias=False),
    "conv_k3_s1_p1_generative": lambda: cp.SparseConv3d(3, 4, 3, 1, 1, bias=False),
    "conv_k3_s2_p1_d2": lambda: cp.SparseConv3d(3, 4, 3, 2, 1, 2, bias=False),
    "conv_k1_s2": lambda: cp.SparseConv3d(3, 4, 1, 2, bias=False),
    "conv_k1_s1": lambda: cp.SparseConv3d(3, 4, 1, bias=True),
    "transpose_k3_s2_p1": lambda: cp.SparseConvTranspose3d(3, 4, 3, 2, 1, bias=True),
    "transpose_k2_s2": lambda: cp.SparseConvTranspose3d(3, 4, 2, 2, bias=False),
    "transpose_k3_s2_p1_op1": lambda: cp.SparseConvTranspose3d(3, 4, 3, 2, 1, bias=False, output_padding=1),
    "maxpool_k3_s2_p1": lambda: cp.SparseMaxPool3d(3, 2, 1),
    "maxpool_k2": lambda: cp.SparseMaxPool3d(2),
    "maxpool_k3_s1": lambda: cp.SparseMaxPool3d(3, 1),
    "avgpool_k2": lambda: cp.SparseAvgPool3d(2),
    "avgpool_k3_s2_p1": lambda: cp.SparseAvgPool3d(3, 2, 1),
}
SPECS_ND = {
    "subm2d": lambda: cp.SubMConv2d(3, 4, 3, bias=True),
    "conv2d_k3_s2_p1": lambda: cp.SparseConv2d(3, 4, 3, 2, 1, bias=False),
    "conv2d_k31_s21": lambda: cp.SparseConv2d(3, 4, (3, 1), (2, 1), bias=False),
    "transpose2d_k2_s2": lambda: cp.SparseConvTranspose2d(3, 4, 2, 2, bias=False),
    "maxpool2d_k2": lambda: cp.SparseMaxPool2d(2),
    "subm1d": lambda: cp.SubMConv1d(3, 4, 5, bias=False),
    "conv1d_k3_s2": lambda: cp.SparseConv1d(3, 4, 3, 2, 1, bias=True),
}


def check_against_dense(m, feats, idx, shape, base=None, down=None):
    """Forward and backward of ``m`` on the float64 input (``base``'s maps if given) against the dense reference."""
    feats = feats.detach().clone().requires_grad_(True)
    x = cp.SparseConvTensor(feats, idx, shape, 2) if base is None else base.replace_feature(feats)
    y = m(x)
    ref, act = dense_layer(m, feats, idx, shape, y.indices, y.spatial_shape, down)
    if act is not None:
        assert sites(y.indices) == active_sites(act), "output indices are not the dense conv's active sites"
    assert y.indices.shape[0] > 0 and y.features.dtype == torch.float64
    assert torch.allclose(y.features, ref, atol=1e-10), (y.features - ref).abs().max()
    r = torch.randn_like(ref)
    leaves = [feats] + [p for p in m.parameters()]
    ours = torch.autograd.grad((y.features * r).sum(), leaves, allow_unused=True)
    theirs = torch.autograd.grad((ref * r).sum(), leaves, allow_unused=True)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-9), (a - b).abs().max()
    return y


@pytest.mark.parametrize("name", list(SPECS_3D) + list(SPECS_ND))
def test_layer_matches_dense_reference(name):
    m = {**SPECS_3D, **SPECS_ND}[name]().double()
    feats, idx, shape = scan(ndim=m.ndim, n=300 if m.ndim == 3 else 60)
    y = check_against_dense(m, feats, idx, shape)
    if isinstance(m, cp.SparseConvolution) and m.subm:
        assert y.indices is idx and y.spatial_shape == shape


@pytest.mark.parametrize("ndim, k, s, p", [(3, 3, 2, 1), (3, 2, 2, 0), (3, (3, 1, 1), (2, 1, 1), 0), (2, 3, 2, 1)])
def test_inverse_conv_matches_dense_and_keeps_row_order(ndim, k, s, p):
    feats, idx, shape = scan(ndim=ndim, n=300 if ndim == 3 else 60)
    conv = {3: cp.SparseConv3d, 2: cp.SparseConv2d}[ndim]
    inv = {3: cp.SparseInverseConv3d, 2: cp.SparseInverseConv2d}[ndim]
    down = conv(3, 5, k, s, p, bias=False, indice_key="down").double()
    y = down(cp.SparseConvTensor(feats, idx, shape, 2))
    up = inv(5, 2, k, "down", bias=True).double()
    z = check_against_dense(up, y.features, y.indices, y.spatial_shape, base=y, down=down)
    assert z.indices is idx and z.spatial_shape == shape


def test_inverse_conv_after_max_pool():
    feats, idx, shape = scan()
    pool = cp.SparseMaxPool3d(2, indice_key="pool")
    y = pool(cp.SparseConvTensor(feats, idx, shape, 2))
    up = cp.SparseInverseConv3d(3, 4, 2, "pool").double()
    z = check_against_dense(up, y.features, y.indices, y.spatial_shape, base=y, down=pool)
    assert z.indices is idx


def test_gradcheck_subm_conv_inverse_chain():
    feats, idx, shape = scan(n=40, extent=5, channels=2)
    subm = cp.SubMConv3d(2, 3, 3, bias=True, indice_key="s").double()
    down = cp.SparseConv3d(3, 3, 3, 2, 1, bias=False, indice_key="d").double()
    up = cp.SparseInverseConv3d(3, 2, 3, "d").double()

    def f(x):
        t = subm(cp.SparseConvTensor(x, idx, shape, 2))
        return up(down(t.replace_feature(torch.tanh(t.features)))).features

    assert torch.autograd.gradcheck(f, (feats.requires_grad_(True),), eps=1e-6, atol=1e-6)


# --------------------------------------------------------- indice_key rules
def test_subm_key_reuse_and_mismatch():
    feats, idx, shape = scan(dtype=torch.float32)
    x = cp.SparseConvTensor(feats, idx, shape, 2)
    y = cp.SubMConv3d(3, 4, 3, indice_key="s")(x)
    z = cp.SubMConv3d(4, 4, 3, padding=1, indice_key="s")(y)  # padding is ignored by subm convs: same pairs
    assert z.find_indice_pair("s").kmap is y.find_indice_pair("s").kmap and len(x._cache) == 1
    assert "s" not in x.indice_dict  # spconv copies the dict: the input's is untouched
    pairs, num = y.find_indice_pair("s").indice_pairs, y.find_indice_pair("s").indice_pair_num
    assert pairs.shape == (2, 27, len(idx)) and int(num.sum()) == int((pairs[0] >= 0).sum())
    assert torch.equal(num, num.flip(0)) and int(num[13]) == len(idx)  # centre tap: every row to itself
    with pytest.raises(ValueError, match="kernel_size"):
        cp.SubMConv3d(4, 4, 5, indice_key="s")(y)
    with pytest.raises(ValueError, match="same indices"):
        cp.SubMConv3d(4, 4, 3, indice_key="s")(cp.SparseConv3d(4, 4, 3, 2, 1)(y))


def test_key_errors_where_spconv_asserts():
    feats, idx, shape = scan(dtype=torch.float32)
    x = cp.SparseConvTensor(feats, idx, shape, 2)
    s = cp.SubMConv3d(3, 4, 3, indice_key="s")(x)
    d = cp.SparseConv3d(3, 4, 2, 2, indice_key="d")(x)
    with pytest.raises(ValueError, match="only between subm convs"):
        cp.SparseConv3d(4, 4, 3, 2, 1, indice_key="s")(s)
    with pytest.raises(ValueError, match="only between subm convs"):
        cp.SparseConv3d(4, 4, 2, 2, indice_key="d")(d)
    with pytest.raises(ValueError, match="submanifold convs"):
        cp.SubMConv3d(4, 4, 3, indice_key="d")(d)
    with pytest.raises(ValueError, match="exists"):
        cp.SparseMaxPool3d(2, indice_key="d")(d)
    with pytest.raises(ValueError, match="known keys"):
        cp.SparseInverseConv3d(4, 3, 2, "nope")(d)
    with pytest.raises(ValueError, match="subm conv"):
        cp.SparseInverseConv3d(4, 3, 3, "s")(s)
    with pytest.raises(ValueError, match="kernel size"):
        cp.SparseInverseConv3d(4, 3, 3, "d")(d)
    with pytest.raises(ValueError, match="produced"):
        cp.SparseInverseConv3d(4, 3, 2, "d")(cp.SparseConv3d(4, 4, 3, 1, 1, indice_key="g")(d))
    t = cp.SparseConvTranspose3d(3, 4, 2, 2, indice_key="t")(x)
    with pytest.raises(NotImplementedError, match="transposed"):
        cp.SparseInverseConv3d(4, 3, 2, "t")(t)


def test_keys_are_per_branch_as_in_spconv():
    """Two networks on one input may use one key for different convs; a sibling branch's key is invisible."""
    feats, idx, shape = scan(dtype=torch.float32)
    x = cp.SparseConvTensor(feats, idx, shape, 2)
    a = cp.SparseConv3d(3, 4, 3, 2, 1, indice_key="down")(x)
    b = cp.SparseConv3d(3, 4, 2, 2, indice_key="down")(x)
    assert a.find_indice_pair("down").ksize == [3, 3, 3] and b.find_indice_pair("down").ksize == [2, 2, 2]
    assert torch.equal(cp.SparseInverseConv3d(4, 2, 2, "down")(b).indices, idx)
    assert torch.equal(cp.SparseInverseConv3d(4, 2, 3, "down")(a).indices, idx)
    again = cp.SparseConv3d(3, 4, 3, 2, 1, indice_key="down")(x)  # the same conv on the same input: cached map
    assert again.find_indice_pair("down").kmap is a.find_indice_pair("down").kmap
    sibling = cp.SubMConv3d(3, 4, 3)(x)
    with pytest.raises(ValueError, match="known keys"):
        cp.SparseInverseConv3d(4, 2, 3, "down")(sibling)


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "make, err, match",
    [
        (lambda: cp.SubMConv3d(3, 4, 3, groups=2), NotImplementedError, "groups"),
        (lambda: cp.SubMConv3d(3, 4, 2), ValueError, "odd kernel_size"),
        (lambda: cp.SubMConv3d(3, 4, 3, stride=2), ValueError, "stride 1"),
        (lambda: cp.SparseConvTranspose3d(3, 4, 3, 2, dilation=2), NotImplementedError, "dilation"),
        (lambda: cp.SparseConv4d(3, 4, 3), NotImplementedError, "4-D"),
        (lambda: cp.SparseConv3d(3, 4, 1, padding=1), ValueError, "padding"),
        (lambda: cp.SparseConv3d(3, 4, (3, 3)), ValueError, "kernel_size"),
        (lambda: cp.SparseConv3d(3, 4, 0), ValueError, "kernel_size"),
        (lambda: cp.SparseConv3d(3, 0, 3), ValueError, "channel"),
        (lambda: cp.SparseConv3d(3, 4, 3, algo="fast"), ValueError, "algo"),
        (lambda: cp.SparseConvolution(3, 3, 4, act_type="ReLU"), NotImplementedError, "activation"),
        (lambda: cp.pool.SparseMaxPool(3, 2, subm=True), NotImplementedError, "subm"),
        (lambda: cp.SparseAvgPool3d(5), ValueError, "32 taps"),
        (lambda: cp.SparseMaxPool4d(2), NotImplementedError, "4-D"),
    ],
)
def test_bad_layer_arguments(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_bad_layer_input():
    feats, idx, shape = scan(dtype=torch.float32)
    x = cp.SparseConvTensor(feats, idx, shape, 2)
    with pytest.raises(ValueError, match="channels"):
        cp.SubMConv3d(5, 4, 3)(x)
    with pytest.raises(ValueError, match="2-D"):
        cp.SubMConv2d(3, 4, 3)(x)
    with pytest.raises(TypeError, match="SparseConvTensor"):
        cp.SparseConv3d(3, 4, 3)(feats)
    with pytest.raises(ValueError, match="reaches zero"):
        cp.SparseConv3d(3, 4, 11)(x)
    with pytest.raises(TypeError, match="float64"):
        cp.SubMConv3d(3, 4, 3).double()(x)
    assert cp.SubMConv3d(3, 4, 3, algo=cp.ConvAlgo.MaskImplicitGemm, fp32_accum=True)(x).features.shape == (len(idx), 4)


def test_fused_add_input():
    feats, idx, shape = scan(dtype=torch.float32)
    x = cp.SparseConvTensor(feats, idx, shape, 2)
    conv = cp.SubMConv3d(3, 4, 3)
    skip = cp.SparseConvTensor(torch.randn(len(idx), 4), idx, shape, 2)
    assert torch.allclose(conv(x, add_input=skip).features, conv(x).features + skip.features)
    with pytest.raises(ValueError, match="add_input"):
        conv(x, add_input=x)
