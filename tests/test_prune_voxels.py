"""Dynamic voxel pruning of MinkUNet: selection, rebuilt maps, full outputs, budget training, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from toy_models import random_input
from toy_models import small_minkunet as net

from torchsparse_lite import SparseTensor
from torchsparse_lite.models import MinkUNet, build_from_config
from torchsparse_lite.models.minkunet import ENCODER_STAGES
from torchsparse_lite.nn.voxel_drop import DropRecord, VoxelDrop, VoxelRestore, top_per_sample
from torchsparse_lite.prune.report import fresh_input
from torchsparse_lite.prune.structure import structure_of
from torchsparse_lite.prune.voxels import (
    apply_voxel_pruning,
    mean_voxel_stats,
    remove_voxel_pruning,
    voxel_budget_loss,
    voxel_drop_record,
    voxel_stats,
)
from torchsparse_lite.train.checkpoint import load_model as load_checkpoint_model
from torchsparse_lite.train.checkpoint import save_checkpoint

STAGES = ENCODER_STAGES


def scan(seed: int = 0) -> SparseTensor:
    """Two samples of random voxels in a 32^3 grid (deep enough for four stride-2 stages)."""
    return random_input(1500, 32, batch=2, seed=seed)


def plain_forward(m: MinkUNet, x: SparseTensor) -> torch.Tensor:
    """MinkUNet's forward as it was before voxel drops existed (straight-line stages)."""
    x0 = m.stem(x)
    x1 = m.stage1(x0)
    x2 = m.stage2(x1)
    x3 = m.stage3(x2)
    x4 = m.stage4(x3)
    y = m.up4(m.up3(m.up2(m.up1(x4, x3), x2), x1), x0)
    return m.classifier(y.feats)


def stage_inputs(m: MinkUNet, x: SparseTensor, attr: str) -> dict[str, SparseTensor]:
    """Run ``m`` on ``x`` and capture, per stage, the output of its stride-2 conv (``attr="down"``) or the
    input of its first residual block's first conv (``attr="block"``)."""
    seen: dict[str, SparseTensor] = {}
    hooks = []
    for s in STAGES:
        if attr == "down":
            hooks.append(getattr(m, s)[0].register_forward_hook(lambda _m, _a, out, s=s: seen.__setitem__(s, out)))
        else:
            conv = getattr(m, s)[1].main[0].conv
            hooks.append(conv.register_forward_pre_hook(lambda _m, a, s=s: seen.__setitem__(s, a[0])))
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    return seen


def expected_kept(coords: torch.Tensor, keep: float) -> int:
    counts = torch.bincount(coords[:, 0].long())
    return sum(max(1, round(keep * int(c))) for c in counts if c > 0)


def test_disabled_is_bit_identical() -> None:
    """Unwired: no new children or state_dict keys; outputs equal the straight-line forward bit for bit."""
    m, x = net(), scan()
    assert m.voxel_drop is None
    keys = list(m.state_dict())
    names = [n for n, _ in m.named_children()]
    with torch.no_grad():
        ref = plain_forward(m, fresh_input(x))
        assert torch.equal(m(fresh_input(x)), ref)
        apply_voxel_pruning(m, keep=1.0)  # every voxel survives: the drop / restore wiring is exact
        assert torch.equal(m(fresh_input(x)), ref)
        remove_voxel_pruning(m)
        assert list(m.state_dict()) == keys and [n for n, _ in m.named_children()] == names
        assert torch.equal(m(fresh_input(x)), ref)
    assert structure_of(m).get("voxel_drop", {}) == {}


def test_every_point_gets_logits_and_transposed_convs_find_maps() -> None:
    m, x = net(), scan()
    apply_voxel_pruning(m, keep=0.5)
    ups: dict[str, SparseTensor] = {}
    hooks = [getattr(m, u).up.register_forward_hook(lambda _m, _a, out, u=u: ups.__setitem__(u, out))
             for u in ("up1", "up2", "up3", "up4")]  # fmt: skip
    with torch.no_grad():
        logits = m(fresh_input(x))
    for h in hooks:
        h.remove()
    assert logits.shape == (len(x), 5) and bool(torch.isfinite(logits).all())
    stats = voxel_stats(m)
    # each transposed conv lands on the survivors of the stage below (stage3, 2, 1) or on the full stem output
    for up, stage in (("up1", "stage3"), ("up2", "stage2"), ("up3", "stage1")):
        assert len(ups[up]) == stats[stage][0]
    assert len(ups["up4"]) == len(x) and torch.equal(ups["up4"].coords, x.coords)
    with torch.no_grad():
        assert not torch.equal(logits, plain_forward(m, fresh_input(x)))


@pytest.mark.parametrize("keep", [0.3, 0.7])
def test_kept_counts_follow_the_ratio_per_sample(keep: float) -> None:
    m, x = net(), scan(1)
    apply_voxel_pruning(m, stages=("stage1", "stage3"), keep=keep)
    downs = stage_inputs(m, fresh_input(x), "down")
    stats = voxel_stats(m)
    assert set(stats) == {"stage1", "stage3"}
    for s, (kept, total) in stats.items():
        assert total == len(downs[s])
        assert kept == expected_kept(downs[s].coords, keep)


def test_norm_scorer_keeps_the_largest_features() -> None:
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 2, 0, 0], [0, 3, 0, 0],
                           [1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.int32)  # fmt: skip
    feats = torch.tensor([[1.0, 0], [0, 3], [2, 2], [0.5, 0], [1, 1], [0, 0.1]])
    drop = VoxelDrop(2, keep=0.5)
    survivors, record = drop(SparseTensor(feats, coords))
    assert record.keep.tolist() == [1, 2, 4]  # 2 of 4 in sample 0 (norms 3, 2.83), 1 of 2 in sample 1
    assert torch.equal(survivors.coords, coords[[1, 2, 4]]) and survivors.cache is not record.full.cache
    restored = drop.restore(survivors.replace(survivors.feats * 2), record)
    assert restored.coords is coords and restored.cache is record.full.cache
    assert torch.equal(restored.feats[[0, 3, 5]], torch.zeros(3, 2))
    assert torch.equal(restored.feats[[1, 2, 4]], feats[[1, 2, 4]] * 2)
    assert top_per_sample(torch.ones(4), torch.zeros(4, dtype=torch.long), 0.5).tolist() == [0, 1]  # ties: low rows


def test_maps_are_rebuilt_for_the_survivors() -> None:
    m, x = net(), scan(2)
    apply_voxel_pruning(m, keep=0.6)
    blocks = stage_inputs(m, fresh_input(x), "block")
    stats = voxel_stats(m)
    for s in STAGES:
        kept, total = stats[s]
        assert kept < total and len(blocks[s]) == kept
        kmap = getattr(m, s)[1].main[0].conv.kernel_map(blocks[s])  # the cached submanifold map of the stage
        assert kmap.n_in == kept and kmap.mode == "submanifold"
        assert all(km.n_in <= kept for km in blocks[s].cache._maps.values())  # noqa: SLF001 - fresh cache


@pytest.mark.parametrize("scorer", ["norm", "learned"])
def test_eval_is_deterministic(scorer: str) -> None:
    m, x = net(), scan(3)
    apply_voxel_pruning(m, keep=0.5, scorer=scorer)
    with torch.no_grad():
        a, sa = m(fresh_input(x)), voxel_stats(m)
        b, sb = m(fresh_input(x)), voxel_stats(m)
    assert torch.equal(a, b) and sa == sb


def test_budget_loss_training_moves_the_keep_rate_to_the_target() -> None:
    m, x = net(), scan(4)
    apply_voxel_pruning(m, stages=("stage1", "stage2"), keep=0.6, scorer="learned")
    labels = torch.randint(0, 5, (len(x),), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    m.train()
    first = None
    for _ in range(12):
        task = F.cross_entropy(m(fresh_input(x)), labels)
        budget = voxel_budget_loss(m, 0.2)
        first = float(budget.detach()) if first is None else first
        opt.zero_grad()
        (task + 10 * budget).backward()
        assert m.voxel_drop["stage1"].scorer.linear.weight.grad.abs().sum() > 0
        opt.step()
    m(fresh_input(x))
    assert float(voxel_budget_loss(m, 0.2).detach()) < 0.25 * first
    rates = [k / t for k, t in voxel_stats(m).values()]  # training-mode (sampled) keep rates
    assert all(r < 0.45 for r in rates), rates
    m.eval()
    with torch.no_grad():
        m(fresh_input(x))
    downs = stage_inputs(m, fresh_input(x), "down")
    assert voxel_stats(m)["stage2"][0] == expected_kept(downs["stage2"].coords, 0.6)  # eval: top-k at keep


def test_checkpoint_round_trip_restores_the_wiring(tmp_path) -> None:
    m, x = net(5), scan(5)
    apply_voxel_pruning(m, stages=("stage2", "stage4"), keep={"stage2": 0.4, "stage4": 0.8}, scorer="learned")
    with torch.no_grad():
        m.voxel_drop["stage2"].scorer.linear.weight.normal_()
        expected = m(fresh_input(x))
    path = save_checkpoint(tmp_path / "vd.pt", m, {})
    loaded, ckpt = load_checkpoint_model(path)
    assert ckpt["structure"]["voxel_drop"] == voxel_drop_record(m)
    assert voxel_drop_record(loaded) == {"stage2": {"keep": 0.4, "scorer": "learned", "tau": 1.0},
                                         "stage4": {"keep": 0.8, "scorer": "learned", "tau": 1.0}}  # fmt: skip
    with torch.no_grad():
        assert torch.equal(loaded(fresh_input(x)), expected)
    assert voxel_stats(loaded) == voxel_stats(m)
    with pytest.raises(RuntimeError, match="voxel_drop"):  # the heads' weights need the wiring
        build_from_config(m.config()).load_state_dict(m.state_dict())


def test_mean_stats_and_copy() -> None:
    m = net()
    wired = apply_voxel_pruning(m, stages="stage1", keep=0.5, inplace=False)
    assert m.voxel_drop is None and wired is not m
    inputs = [scan(s) for s in range(3)]
    mean = mean_voxel_stats(wired, [(fresh_input(x), None) for x in inputs])
    per = []
    for x in inputs:
        wired(fresh_input(x))
        per.append(voxel_stats(wired)["stage1"])
    assert mean["stage1"]["kept"] == pytest.approx(sum(k for k, _ in per) / 3)
    assert mean["stage1"]["keep_ratio"] == pytest.approx(sum(k for k, _ in per) / sum(t for _, t in per))


def test_bad_input() -> None:
    m = net()
    with pytest.raises(TypeError, match="MinkUNet"):
        apply_voxel_pruning(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="stages"):
        apply_voxel_pruning(m, stages=("stem",))
    with pytest.raises(ValueError, match="keep"):
        apply_voxel_pruning(m, keep=0.0)
    with pytest.raises(ValueError, match="keep"):
        apply_voxel_pruning(m, stages=("stage1", "stage2"), keep={"stage1": 0.5})
    with pytest.raises(ValueError, match="scorer"):
        apply_voxel_pruning(m, scorer="random")
    apply_voxel_pruning(m, keep=0.5)
    with pytest.raises(ValueError, match="learned"):
        voxel_budget_loss(m)
    with pytest.raises(ValueError, match="not run"):
        voxel_stats(m)
    with pytest.raises(ValueError, match="expects"):
        VoxelDrop(3, 0.5)(scan())
    x = scan()
    _, record = VoxelDrop(4, 0.5)(x)
    with pytest.raises(ValueError, match="survivors"):
        VoxelRestore()(x, record)
    with pytest.raises(TypeError, match="DropRecord"):
        VoxelRestore()(x, record.keep)
    assert isinstance(record, DropRecord)
