"""Issue 17: ``ToBEV`` and the whole CenterPoint detector under ``torch.compile(fullgraph=True)``; value checks.

The detector's forward on a voxel tensor (sparse backbone -> ``ToBEV`` -> 2D
neck -> heads) is one graph (``aot_eager``), in training with the batch size
given (as :meth:`~torchsparse_lite.detection.CenterPointDetector.loss` calls
it) and in evaluation with the batch size read off the coordinates (a
captured scalar), and gives eager's maps, gradients and batch-norm statistics.
Checks that read values (``to_bev``'s range and batch size, a
``compat.spconv.SparseConvTensor`` built in the graph) run in the
``torchsparse_lite::checked`` op and raise the eager ``ValueError`` at run time.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from test_compile_networks import assert_twins_agree, run_model
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend
from toy_models import random_input

import torchsparse_lite.compat.spconv as cp
from torchsparse_lite import SparseTensor
from torchsparse_lite import nn as spnn
from torchsparse_lite.detection import CenterPointDetector, DetectorConfig
from torchsparse_lite.detection.data import toy_sample
from torchsparse_lite.ops.checks import checked, checked_op

SMALL = DetectorConfig(
    class_groups=((0, 1, 2),), point_range=(-19.2, -19.2, -3.0, 19.2, 19.2, 1.0), voxel_size=(0.6, 0.6, 0.5),
    widths=(4, 8, 8, 8), blocks=(0, 0, 0, 1), out_channels=8, neck_channels=8, head_channels=8,
)  # fmt: skip


class HeadMaps(nn.Module):
    """The detector's forward on a voxel tensor, its head maps as one list."""

    def __init__(self, batch_size: int | None) -> None:
        super().__init__()
        self.model = CenterPointDetector(SMALL)
        self.batch_size = batch_size

    def forward(self, x: SparseTensor) -> list[torch.Tensor]:
        return [m for maps in self.model(x, self.batch_size) for m in maps.values()]


def _voxels():
    """Two toy scenes voxelized once; a new tensor (fresh map cache) at every call."""
    x = CenterPointDetector(SMALL).voxelize([torch.from_numpy(toy_sample(s).points) for s in (1, 2)])
    return lambda: SparseTensor(x.feats, x.coords, spatial_range=x.spatial_range)


@pytest.mark.parametrize(("train", "batch_size"), [(True, 2), (False, None)])
def test_detector_fullgraph_matches_eager(train: bool, batch_size: int | None) -> None:
    torch.manual_seed(0)
    eager = HeadMaps(batch_size).train(train)
    twin, x = copy.deepcopy(eager), _voxels()
    counter = CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(twin, fullgraph=True, backend=counter)
    with torch.set_grad_enabled(train):
        got, want = run_model(compiled, x(), train), run_model(eager, x(), train)
    assert got[0][0].shape == (2, 3, *SMALL.feature_size)  # [B, classes, X, Y] heatmap
    assert_twins_agree(eager, twin, got, want)
    assert counter.frame_count == 1


def test_detector_zero_graph_breaks() -> None:
    """Dynamo captures the whole detector forward as one graph (``explain``, without fullgraph)."""
    torch.manual_seed(0)
    net = HeadMaps(2).eval()
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True), torch.no_grad():
        report = torch._dynamo.explain(net)(_voxels()())
    assert report.graph_break_count == 0, [str(b.reason)[:300] for b in report.break_reasons]
    assert report.graph_count == 1


class Bev(nn.Module):
    """Conv, BN, ReLU, a strided conv, then ``ToBEV`` (batch size given or read off the coordinates)."""

    def __init__(self, batch_size: int | None = None, size: tuple[int, int, int] = (8, 8, 8)) -> None:
        super().__init__()
        self.net = nn.Sequential(spnn.Conv3d(4, 4, 3), spnn.BatchNorm(4), spnn.ReLU(), spnn.Conv3d(4, 4, 2, 2))
        self.bev, self.batch_size = spnn.ToBEV(size), batch_size

    def forward(self, x: SparseTensor) -> list[torch.Tensor]:
        return [self.bev(self.net(x), self.batch_size)]


@pytest.mark.parametrize(("train", "batch_size"), [(True, None), (False, 4)])
def test_to_bev_fullgraph_matches_eager(train: bool, batch_size: int | None) -> None:
    """Two samples; with ``batch_size=4`` the trailing two BEV maps are zeros, as eagerly."""
    torch.manual_seed(0)
    eager = Bev(batch_size).train(train)
    twin, x = copy.deepcopy(eager), random_input(300, 16, batch=2)
    torch._dynamo.reset()
    compiled = torch.compile(twin, fullgraph=True, backend="aot_eager")
    with torch.set_grad_enabled(train):
        got = run_model(compiled, SparseTensor(x.feats, x.coords), train)
        want = run_model(eager, SparseTensor(x.feats, x.coords), train)
    assert got[0][0].shape == (batch_size or 2, 32, 8, 8)
    assert_twins_agree(eager, twin, got, want)


def test_bad_input_raises_the_eager_errors_in_a_graph() -> None:
    """``to_bev``'s and ``SparseConvTensor``'s value checks raise their eager ``ValueError`` from compiled code."""
    x = random_input(300, 16, batch=2)
    torch._dynamo.reset()
    cases = (
        (None, (8, 8, 4), r"reach \[\d+, \d+, [4-7]\], outside spatial_range"),
        (1, (8, 8, 8), "batch_size=1 is smaller than the tensor's 2 samples"),
    )
    for batch_size, size, message in cases:
        for bev in (Bev(batch_size, size), torch.compile(Bev(batch_size, size), fullgraph=True, backend="aot_eager")):
            with pytest.raises(ValueError, match=message), torch.no_grad():
                bev(SparseTensor(x.feats, x.coords))

    def build(shape: list[int], batch_size: int):
        return torch.compile(lambda f, c: cp.SparseConvTensor(f, c, shape, batch_size).indices, fullgraph=True,
                             backend="aot_eager")  # fmt: skip

    inside = x.coords[x.coords[:, 3] < 15]
    assert torch.equal(build([16, 16, 15], 2)(x.feats[: len(inside)], inside), inside)
    with pytest.raises(ValueError, match=r"indices\[:, 3\] spans \[0, 15\] but spatial_shape\[2\] is 15"):
        build([16, 16, 15], 2)(x.feats, x.coords)
    with pytest.raises(ValueError, match=r"spans \[0, 1\] but batch_size is 1"):
        build([16] * 3, 1)(x.feats, x.coords)
    with pytest.raises(ValueError, match="duplicate"):
        build([16] * 3, 2)(x.feats[:2], inside[[0, 0]])


def test_checked_op() -> None:
    """The op passes ``opcheck``, returns its input's values, and an unknown check name is refused."""
    coords = random_input(60, 8).coords
    torch.library.opcheck(checked_op, (coords, "to_bev", [-1, 8, 8, 8]))
    assert torch.equal(checked_op(coords, "to_bev", [-1, 8, 8, 8]), coords)
    assert checked(coords, "to_bev", -1, 8, 8, 8) is coords  # eagerly: the tensor itself, no copy
    with pytest.raises(ValueError, match="no value check named 'nope'"):
        checked(coords, "nope")
