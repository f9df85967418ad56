"""Issue 11: ``torchsparse_lite.compat.spconv`` layers against the real spconv 2.3.8 (CPU, one thread).

The same layer built from each library (spconv's from our layer's arguments),
our layer loading spconv's ``state_dict`` strictly: equal output index sets
(row orders of strided outputs differ: spconv's CPU build numbers them in
discovery order, we sort them), features within 1e-5; inverse convs row for
row; spconv's kernel-size-1 weight reading; the voxel-count buffer; the
``indice_pairs`` of an ``indice_key`` in spconv's tap order; per-branch keys.
spconv runs its convs in training mode: its CPU build refuses a conv bias in
eval mode and adds it, identically, after the conv in training mode.
"""

from __future__ import annotations

import pytest
import torch
from test_compat_spconv_layers import SPECS_3D, SPECS_ND, scan

import torchsparse_lite.compat.spconv as cp

sp = pytest.importorskip("spconv.pytorch")


def spconv_twin(name: str, sp):
    """The same layer built from spconv (SPECS_* builders written against ``cp``, rebuilt on ``sp``)."""
    m = {**SPECS_3D, **SPECS_ND}[name]()
    if isinstance(m, cp.SparseConvolution):
        base = sp.conv.SparseConvolution
        args = {"subm": m.subm, "transposed": m.transposed, "output_padding": m.output_padding}
        twin = base(m.ndim, m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                    bias=m.bias is not None, **args)  # fmt: skip
    else:
        cls = sp.pool.SparseAvgPool if isinstance(m, cp.pool.SparseAvgPool) else sp.pool.SparseMaxPool
        twin = cls(m.ndim, m.kernel_size, m.stride, m.padding, m.dilation)
    return m, twin


def align(ys, yo):
    """spconv's rows permuted to ours (their order differs for strided outputs); asserts equal index sets."""
    pos = {tuple(r): i for i, r in enumerate(ys.indices.tolist())}
    ours = [tuple(r) for r in yo.indices.tolist()]
    assert len(pos) == len(ours) and set(pos) == set(ours), f"index sets differ: {len(pos)} vs {len(ours)}"
    return ys.features[torch.tensor([pos[r] for r in ours], dtype=torch.long)]


SPCONV_CPU_OK = [n for n in list(SPECS_3D) + list(SPECS_ND) if "avgpool" not in n]  # spconv CPU has no avg pool


@pytest.mark.parametrize("name", SPCONV_CPU_OK)
def test_layer_matches_spconv(name):
    ours, twin = spconv_twin(name, sp)
    sd = twin.state_dict()
    assert list(ours.state_dict()) == list(sd)
    ours.load_state_dict(sd, strict=True)
    feats, idx, shape = scan(ndim=ours.ndim, n=300 if ours.ndim == 3 else 60, dtype=torch.float32)
    with torch.no_grad():
        # spconv's CPU build refuses a conv bias in eval mode ("cpu don't support act and bias"); in training
        # mode it adds the bias after the conv, which is the same computation
        ys = twin.train()(sp.SparseConvTensor(feats, idx, shape, 2))
        yo = ours.eval()(cp.SparseConvTensor(feats, idx, shape, 2))
    assert ys.spatial_shape == yo.spatial_shape
    assert torch.allclose(align(ys, yo), yo.features, atol=1e-5)


def test_inverse_convs_match_spconv_row_for_row():
    feats, idx, shape = scan(dtype=torch.float32)
    nets = []
    for lib in (sp, cp):
        nets.append(lib.SparseSequential(
            lib.SparseConv3d(3, 5, 3, 2, 1, bias=False, indice_key="d1"),
            lib.SparseMaxPool3d(2, indice_key="p2"),
            lib.SparseInverseConv3d(5, 4, 2, "p2", bias=True),
            lib.SparseInverseConv3d(4, 2, 3, "d1", bias=True),
        ))  # fmt: skip
    nets[1].load_state_dict(nets[0].state_dict(), strict=True)  # spconv in training mode: its CPU eval has no bias
    with torch.no_grad():
        ys = nets[0](sp.SparseConvTensor(feats, idx, shape, 2))
        yo = nets[1](cp.SparseConvTensor(feats, idx, shape, 2))
    assert torch.equal(ys.indices, yo.indices) and yo.indices is idx
    assert torch.allclose(ys.features, yo.features, atol=1e-5)


def test_kernel_size_one_reads_weight_memory_as_spconv_does():
    """spconv computes a 1x1 conv as ``features @ weight.view(Cin, Cout)`` (not ``weight[:, 0, 0, 0].T``)."""
    feats, idx, shape = scan(dtype=torch.float32)
    for make in (lambda lib: lib.SubMConv3d(3, 4, 1, bias=False), lambda lib: lib.SparseConv3d(3, 4, 1, bias=False)):
        twin, ours = make(sp), make(cp)
        ours.load_state_dict(twin.state_dict())
        with torch.no_grad():
            ys = twin(sp.SparseConvTensor(feats, idx, shape, 2))
            yo = ours(cp.SparseConvTensor(feats, idx, shape, 2))
        w = twin.weight.detach()
        assert torch.allclose(ys.features, feats @ w.reshape(3, 4), atol=1e-6)
        assert not torch.allclose(ys.features, feats @ w.reshape(4, 3).t(), atol=1e-3)
        assert torch.equal(ys.indices, yo.indices) and torch.allclose(ys.features, yo.features, atol=1e-6)
        assert list(yo.indice_dict) == list(ys.indice_dict) == []


def test_state_dict_and_voxel_count_buffer_match_spconv():
    feats, idx, shape = scan(dtype=torch.float32)
    for make in (
        lambda lib: lib.SparseConv3d(3, 4, 3, 2, 1, record_voxel_count=True),
        lambda lib: lib.SparseConvTranspose3d(3, 4, 2, 2, record_voxel_count=True),
        lambda lib: lib.SparseMaxPool3d(2, record_voxel_count=True),
        lambda lib: lib.conv.SparseConvolution(3, 3, 4, 3, subm=True, record_voxel_count=True),  # no buffer
    ):
        twin, ours = make(sp), make(cp)
        assert list(ours.state_dict()) == list(twin.state_dict())
        with torch.no_grad():
            twin(sp.SparseConvTensor(feats, idx, shape, 2))
            ours(cp.SparseConvTensor(feats, idx, shape, 2))
        assert torch.equal(ours.state_dict().get("max_num_voxels_during_training", torch.zeros(0)),
                           twin.state_dict().get("max_num_voxels_during_training", torch.zeros(0)))  # fmt: skip
        twin.load_state_dict(ours.state_dict(), strict=True)
        if isinstance(ours, cp.SparseConvolution):  # spconv's conv load hook fills a missing voxel count
            partial = {k: v for k, v in twin.state_dict().items() if k != "max_num_voxels_during_training"}
            twin.load_state_dict(partial, strict=True)
            ours.load_state_dict(partial, strict=True)


def test_per_branch_keys_match_spconv():
    feats, idx, shape = scan(dtype=torch.float32)
    outs = {}
    for lib in (sp, cp):
        x = lib.SparseConvTensor(feats, idx, shape, 2)
        torch.manual_seed(0)
        down_a, down_b = lib.SparseConv3d(3, 4, 3, 2, 1, indice_key="k"), lib.SparseConv3d(3, 4, 2, 2, indice_key="k")
        up_a, up_b = lib.SparseInverseConv3d(4, 2, 3, "k"), lib.SparseInverseConv3d(4, 2, 2, "k")
        with torch.no_grad():
            outs[lib] = (up_a(down_a(x)), up_b(down_b(x)))
    for ys, yo in zip(outs[sp], outs[cp]):
        assert torch.equal(ys.indices, yo.indices) and torch.allclose(ys.features, yo.features, atol=1e-5)


@pytest.mark.parametrize("make", [lambda lib: lib.SubMConv3d(3, 4, (3, 1, 5), indice_key="k"),
                                  lambda lib: lib.SparseConv3d(3, 4, (3, 2, 1), 2, 1, indice_key="k")])  # fmt: skip
def test_indice_pairs_follow_spconv_tap_order(make):
    """``IndiceData.indice_pairs`` / ``indice_pair_num``: spconv's tap order and (input, output) rows."""
    feats, idx, shape = scan(dtype=torch.float32)
    with torch.no_grad():
        ys = make(sp).train()(sp.SparseConvTensor(feats, idx, shape, 2))
        yo = make(cp)(cp.SparseConvTensor(feats, idx, shape, 2))
    a, b = ys.find_indice_pair("k"), yo.find_indice_pair("k")
    assert a.indice_pairs.shape == b.indice_pairs.shape
    assert a.ksize == b.ksize and a.stride == b.stride and a.is_subm == b.is_subm
    k = len(b.indice_pair_num)
    taps = range(k // 2) if b.is_subm else range(k)  # spconv stores a subm map's first half (the rest mirror it)
    assert torch.equal(a.indice_pair_num[: len(taps)], b.indice_pair_num[: len(taps)])
    if b.is_subm:
        assert int(b.indice_pair_num[k // 2]) == len(idx) and torch.equal(b.indice_pair_num, b.indice_pair_num.flip(0))
    for t in taps:  # row sets per tap (outputs compared by coordinates)
        n = int(b.indice_pair_num[t])
        assert (a.indice_pairs[:, t, n:] == -1).all() and (b.indice_pairs[:, t, n:] == -1).all()
        theirs = {(i, tuple(ys.indices[o].tolist())) for i, o in a.indice_pairs[:, t, :n].t().tolist()}
        ours = {(i, tuple(yo.indices[o].tolist())) for i, o in b.indice_pairs[:, t, :n].t().tolist()}
        assert theirs == ours, t
