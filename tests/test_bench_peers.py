"""spconv as a peer: weight layout, map/output agreement on tiny cases, wrong peers flagged 'wrong'."""

from __future__ import annotations

import re

import pytest
import torch

from torchsparse_lite import SparseTensor
from torchsparse_lite.bench.compare import OK, WRONG, check_close
from torchsparse_lite.bench.layers import LayerSpec
from torchsparse_lite.bench.runner import RunOptions, bench_layer
from torchsparse_lite.bench.workloads import Workload
from torchsparse_lite.nn import Conv3d

sp = pytest.importorskip("spconv.pytorch")
spconv_ops = pytest.importorskip("spconv.pytorch.ops")
from torchsparse_lite.bench.peers import SpconvConv, to_spconv_weight  # noqa: E402


def _coords(n=600, extent=12, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.cat([torch.randint(0, batch, (n, 1), generator=g), torch.randint(0, extent, (n, 3), generator=g)], 1)
    return torch.unique(c, dim=0).int()


def test_weight_layout_is_cout_kx_ky_kz_cin():
    w = torch.arange(2 * 3 * 4 * 5 * 6, dtype=torch.float32).reshape(2 * 3 * 4, 5, 6)  # kernel (2, 3, 4), x fastest
    sw = to_spconv_weight(w, (2, 3, 4))
    assert sw.shape == (6, 2, 3, 4, 5)
    kx, ky, kz, cin, cout = 1, 2, 3, 4, 5
    assert sw[cout, kx, ky, kz, cin] == w[kx + 2 * ky + 6 * kz, cin, cout]
    with pytest.raises(ValueError, match="taps"):
        to_spconv_weight(w, (3, 3, 3))


@pytest.mark.parametrize("kernel, stride", [(3, 2), (2, 2)])
def test_spconv_matches_ours_down_and_up(one_thread, kernel, stride):
    c = _coords()
    x = SparseTensor(torch.randn(c.shape[0], 4), c)
    down = Conv3d(4, 6, kernel, stride=stride)
    up = Conv3d(6, 4, kernel, stride=stride, transposed=True)
    y = down(x)
    z = up(y)
    ks, st = (kernel,) * 3, (stride,) * 3
    p = SpconvConv(down.weight.detach(), ks, st, "conv", c)
    f, fc = p.forward(p.prepare(x.feats))
    assert check_close(f, y.feats, out_coords=fc, ref_coords=y.coords).status == OK
    q = SpconvConv(up.weight.detach(), ks, st, "transposed", c)
    f2, c2 = q.forward(q.prepare(y.feats.detach(), y.coords))
    assert check_close(f2, z.feats, out_coords=c2, ref_coords=z.coords).status == OK


def _case_workload():
    return Workload("tiny", _coords(800, 14, 1, seed=3), "synthetic")


SUBM = LayerSpec("t.subm", 8, 8, (3, 3, 3), (1, 1, 1), "submanifold", (1, 1, 1))


def test_bench_layer_all_ok_on_tiny_case(one_thread):
    opts = RunOptions(strategies=("separate", "adaptive"), passes=("fwd", "fwdbwd"), reps=1, warmup=0, memory=False)
    recs = bench_layer(_case_workload(), 1, SUBM, opts)
    by = {(r["impl"], r["pass"]): r for r in recs}
    for key in [("ours-hash", "map"), ("ours-sort", "map"), ("ours-torch-separate", "fwd"),
                ("ours-torch-adaptive", "fwdbwd"), ("spconv", "fwd"), ("spconv", "map")]:
        assert by[key]["check"]["status"] == OK, (key, by[key]["check"])
        assert by[key]["timing"]["median"] > 0
    assert by[("ours-triton", "-")]["check"]["status"] == "skipped"  # no GPU: interpreter is not timed
    (results,) = opts.tuner.timings.values()  # one layer tuned once: the record carries the tuner's pick
    best = min(results, key=lambda r: r[1])[0]
    rec = by[("ours-torch-adaptive", "fwd")]
    assert (rec["epsilon"], rec["threshold"]) == (best.epsilon, best.threshold)


def test_wrong_peer_is_flagged_and_not_timed(one_thread, monkeypatch):
    real_forward = SpconvConv.forward

    def broken(self, x):
        out, coords = real_forward(self, x)
        return out + 0.1, coords

    monkeypatch.setattr(SpconvConv, "forward", broken)
    opts = RunOptions(strategies=("separate",), passes=("fwd",), reps=1, warmup=0, memory=False)
    recs = [r for r in bench_layer(_case_workload(), 1, SUBM, opts) if r["impl"] == "spconv"]
    assert recs and all(r["check"]["status"] == WRONG for r in recs)
    assert all("timing" not in r for r in recs)


def test_racy_peer_is_wrong_at_more_threads(monkeypatch):
    """Checked several times at the current thread count: one bad run out of three makes it 'wrong'."""
    real_forward = SpconvConv.forward
    calls = {"n": 0}

    def racy(self, x):
        calls["n"] += 1
        out, coords = real_forward(self, x)
        return (out * 1.5 if calls["n"] == 2 else out), coords

    monkeypatch.setattr(SpconvConv, "forward", racy)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        opts = RunOptions(strategies=("separate",), passes=("fwd",), reps=1, warmup=0, memory=False,
                          peer_check_trials=3)
        rec = next(r for r in bench_layer(_case_workload(), 1, SUBM, opts) if r["impl"] == "spconv")
    finally:
        torch.set_num_threads(old)
    assert rec["check"]["status"] == WRONG
    # at least our injected bad run; spconv's own scatter race at 2 threads may add more
    assert re.search(r"wrong in [123]/3 runs at 2 threads", rec["check"]["note"])


@pytest.fixture
def pair_builds(monkeypatch):
    """Counts spconv's pair builds: conv.py (and build_map) call them as ``spconv.pytorch.ops.<name>``."""
    calls = {"get_indice_pairs": 0, "get_indice_pairs_implicit_gemm": 0}
    for name in calls:
        real = getattr(spconv_ops, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(spconv_ops, name, counted)

    def take() -> int:
        n = sum(calls.values())
        for name in calls:
            calls[name] = 0
        return n

    return take


def _peer_case(mode):
    """(peer, feats, feat_coords, ours: SparseTensor) for one tiny layer of ``mode``."""
    c = _coords(500, 10, 2, seed=5)
    x = SparseTensor(torch.randn(c.shape[0], 4), c)
    if mode == "submanifold":
        conv = Conv3d(4, 6, 3)
        return SpconvConv(conv.weight.detach(), (3,) * 3, (1,) * 3, mode, c), x.feats, None, conv(x)
    down = Conv3d(4, 6, 3, stride=2)
    y = down(x)
    if mode == "conv":
        return SpconvConv(down.weight.detach(), (3,) * 3, (2,) * 3, mode, c), x.feats, None, y
    up = Conv3d(6, 4, 3, stride=2, transposed=True)
    feats = y.feats.detach()
    return SpconvConv(up.weight.detach(), (3,) * 3, (2,) * 3, mode, c), feats, y.coords, up(y)


@pytest.mark.parametrize("mode", ["submanifold", "conv", "transposed"])
def test_cached_forward_builds_no_pairs(one_thread, pair_builds, mode):
    """The timed peer conv reuses pairs; map and total calls build them exactly once."""
    assert torch.get_num_threads() == 1
    peer, feats, fc, ours = _peer_case(mode)
    x = peer.prepare(feats, fc)
    pair_builds()  # prepare may build (untimed)
    cached, cached_c = peer.forward(x)
    again, _ = peer.forward(x)  # the timed loop calls it repeatedly on the same tensor
    assert pair_builds() == 0, "cached spconv forward rebuilt its index pairs"
    xu = peer.prepare_uncached(feats, fc)
    pair_builds()
    total, total_c = peer.forward_total(xu)
    assert pair_builds() == 1, "total call must build the pairs once"
    peer.build_map()
    assert pair_builds() == 1, "build_map must build the pairs once"
    assert torch.equal(cached, total) and torch.equal(cached_c, total_c) and torch.equal(cached, again)
    chk = check_close(cached, ours.feats.detach(), out_coords=cached_c, ref_coords=ours.coords)
    assert chk.status == OK, chk


def test_forward_refuses_tensors_without_pairs(one_thread, pair_builds):
    """Timing forward on a pair-less tensor would time map building: refused, and nothing is built."""
    peer, feats, _, _ = _peer_case("submanifold")
    with pytest.raises(ValueError, match="no cached pairs"):
        peer.forward(peer.prepare_uncached(feats))
    with pytest.raises(ValueError, match="already carries pairs"):
        peer.forward_total(peer.prepare(feats))
    pair_builds()
    x = peer.prepare(feats)
    assert x.find_indice_pair("bench") is not None  # taken from the first call's OUTPUT indice_dict


def _randomised_bn(native: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so a wrong channel order shows."""
    for m in native.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return native.eval()


def _mirror_case() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    xyz = torch.randint(0, 24, (600, 3), generator=g)
    coords = torch.unique(torch.cat([torch.zeros(600, 1, dtype=torch.int64), xyz], 1), dim=0).int()
    return torch.randn(len(coords), 4, generator=g), coords


@pytest.mark.parametrize("net", ["minkunet", "unet"])
def test_spconv_mirror_matches_native(net: str) -> None:
    """The spconv mirrors, loaded with the native weights, give the native logits (1 thread), on spconv and compat."""
    import torchsparse_lite.compat.spconv as cp  # noqa: PLC0415
    from torchsparse_lite.bench.peers.spconv_minkunet import build_spconv_minkunet  # noqa: PLC0415
    from torchsparse_lite.bench.peers.unet import SparseUNet, build_spconv_unet  # noqa: PLC0415
    from torchsparse_lite.interop import to_spconv_state_dict  # noqa: PLC0415
    from torchsparse_lite.models import MinkUNet  # noqa: PLC0415

    torch.manual_seed(0)
    native = _randomised_bn(MinkUNet(4, 5, cr=0.25) if net == "minkunet" else SparseUNet(4, 5, (8, 16, 24, 32)))
    build = build_spconv_minkunet if net == "minkunet" else build_spconv_unet
    feats, coords = _mirror_case()
    with torch.no_grad():
        ours = native(SparseTensor(feats, coords))
        for lib in (sp, cp):
            mirror = build(lib, native).eval()
            mirror.load_state_dict(to_spconv_state_dict(native), strict=True)
            theirs = mirror(lib.SparseConvTensor(feats, coords, [32, 32, 32], 1))
            err = float((ours - theirs).abs().max())
            assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5), (lib.__name__, err)
