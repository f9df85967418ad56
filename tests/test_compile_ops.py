"""Issue 17: the custom ops themselves, the map cache and the config in compiled graphs, errors, Triton, inductor.

* every op passes ``torch.library.opcheck`` (schema, fake kernel, autograd
  registration, AOT dispatch with dynamic shapes), and its fake kernel declares
  the data-dependent sizes with their bounds;
* a compiled forward builds each distinct map once (as many map ops in the
  graph as eager builds maps) and leaves them in the input's cache, where
  eager code finds them;
* a grouping other than ``"separate"`` runs inside the op as in eager, and a
  config change re-traces (Dynamo guards on the config);
* bad input raises the eager ``ValueError``/``TypeError`` from the compiled graph;
* the Triton ops run under ``TRITON_INTERPRET=1`` (set by conftest on the CPU);
* one small network through the default ``inductor`` backend.
"""

from __future__ import annotations

import contextvars
import copy

import pytest
import sympy
import torch
import torch._dynamo
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from toy_models import TinyUNet, random_input

from torchsparse_lite import SparseTensor, set_config, use_config
from torchsparse_lite import nn as spnn
from torchsparse_lite.kmap.geometry import ConvGeometry
from torchsparse_lite.ops import maps
from torchsparse_lite.ops.conv import conv_torch, conv_torch_weight_grad
from torchsparse_lite.ops.schema import geometry_args

STRIDED = ConvGeometry((3, 3, 3), (2, 2, 2), mode="conv")
PLAN = ("separate", 4, 0.3, 32768, True, 1 << 17, False)  # grouping fields, chunk_rows, ordered


def _map_tensors(x: SparseTensor, geometry: ConvGeometry = STRIDED):
    args = geometry_args(geometry)
    out = maps.output_coords_op(x.coords, *args)
    return (out, *maps.PAIR_OPS["sort"](x.coords, out, *args, True, False))


@pytest.mark.parametrize("builder", ["sort", "hash"])
def test_map_ops_pass_opcheck(builder: str) -> None:
    x = random_input(80, 8)
    args = geometry_args(STRIDED)
    out = maps.output_coords_op(x.coords, *args)
    torch.library.opcheck(maps.output_coords_op, (x.coords, *args))
    torch.library.opcheck(maps.PAIR_OPS[builder], (x.coords, out, *args, True, False))
    sub = geometry_args(ConvGeometry((3, 3, 3)))
    torch.library.opcheck(maps.PAIR_OPS[builder], (x.coords, x.coords, *sub, True, False))


def test_conv_ops_pass_opcheck() -> None:
    x = random_input(80, 8)
    out, in_idx, out_idx, counts = _map_tensors(x)
    feats = x.feats.clone().requires_grad_()
    weight = torch.randn(27, 4, 6, requires_grad=True)
    torch.library.opcheck(conv_torch, (feats, weight, in_idx, out_idx, counts, out.shape[0], -1, False, False, *PLAN))
    grad = torch.randn(out.shape[0], 6)
    torch.library.opcheck(conv_torch_weight_grad, (x.feats, grad, in_idx, out_idx, counts, -1, False, False, *PLAN))


def test_fake_kernels_declare_the_size_bounds() -> None:
    """Output voxels: unbacked, >= 2, <= N * fan-out; pairs: unbacked, >= 0, <= n_out * K (runtime asserts)."""
    env, real = ShapeEnv(), random_input(60, 8).coords
    with FakeTensorMode(shape_env=env) as mode:
        coords = mode.from_tensor(real)  # N symbolic
        n = coords.shape[0].node.expr

        def bounds(size: torch.SymInt, factor: int, of) -> None:
            u = size.node.expr
            assert isinstance(size, torch.SymInt) and u.name.startswith("u")  # unbacked
            assert sympy.Le(u, factor * of) in [a.expr for a in env.deferred_runtime_asserts[u]]

        for geometry, fan_out in ((STRIDED, 27), (ConvGeometry((2, 2, 2), (2, 2, 2), mode="conv"), 1)):
            out = maps.output_coords_op(coords, *geometry_args(geometry))
            assert out.shape[1] == 4 and out.dtype == torch.int32
            assert env.var_to_range[out.shape[0].node.expr].lower == maps.MIN_OUTPUTS
            bounds(out.shape[0], fan_out, n)
        in_idx, out_idx, counts = maps.PAIR_OPS["sort"](coords, coords, *geometry_args(ConvGeometry((3, 3, 3))),
                                                        True, False)  # fmt: skip
        assert env.var_to_range[in_idx.shape[0].node.expr].lower == 0
        bounds(in_idx.shape[0], 27, n)
        assert out_idx.shape == in_idx.shape and tuple(counts.shape) == (27,) and counts.dtype == torch.int64


def _captured_graphs() -> tuple[list[torch.fx.GraphModule], object]:
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    return graphs, backend


def test_compiled_forward_builds_each_map_once_and_fills_the_cache() -> None:
    torch.manual_seed(0)
    net = TinyUNet(4, 3, 8).eval()
    x = random_input(300, 16)
    eager_input = SparseTensor(x.feats, x.coords)
    with torch.no_grad():
        want = net(eager_input)
    graphs, backend = _captured_graphs()
    torch._dynamo.reset()
    compiled_input = SparseTensor(x.feats, x.coords)
    with torch.no_grad():
        got = torch.compile(net, fullgraph=True, backend=backend)(compiled_input)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    (graph,) = graphs
    built = [n for n in graph.graph.nodes if str(n.target).startswith("torchsparse_lite.kernel_map_")]
    # 3x3x3 fine and coarse, the 2x2x2 down-sampling, the 1x1x1 shortcuts fine and coarse (the up conv reuses one)
    assert len(built) == len(eager_input.cache) == len(compiled_input.cache) == 5
    with torch.no_grad():  # eager code on the compiled forward's cache: same maps, counts read back as ints
        again = net(compiled_input)
    torch.testing.assert_close(again, want, rtol=0, atol=0)
    assert len(compiled_input.cache) == 5
    assert all(isinstance(m.counts, tuple) for m in compiled_input.cache._maps.values())


def test_grouping_runs_in_the_op_and_config_changes_retrace() -> None:
    """A compiled net reads the calling context's config when traced, and Dynamo re-traces when it changes.

    It starts right after another context set a config (as compat tests and libraries do with
    ``copy_context().run``): that config must not leak into the graph.
    """
    contextvars.copy_context().run(lambda: set_config(downsample_mode="minkowski", grouping="fixed"))
    torch.manual_seed(0)
    net = nn.Sequential(spnn.Conv3d(4, 8, 3, grouping="adaptive"), spnn.ReLU(), spnn.Conv3d(8, 8, 3, stride=2))
    x = random_input(300, 12)
    counter = CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, backend=counter)
    for grouping, frames in ((None, 1), ("fixed", 2), ("separate", 2)):
        with use_config(**({} if grouping is None else {"grouping": grouping})), torch.no_grad():
            got = compiled(SparseTensor(x.feats, x.coords))
            want = net(SparseTensor(x.feats, x.coords))
        assert torch.equal(got.coords, want.coords)
        torch.testing.assert_close(got.feats, want.feats, rtol=0, atol=0)  # the same plan as eager: the same bits
        assert counter.frame_count == frames


def _compiled_conv(kernel: int = 3, stride: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return torch.compile(spnn.Conv3d(4, 4, kernel, stride=stride), fullgraph=True, backend="aot_eager")


def test_bad_input_raises_the_eager_errors() -> None:
    """Values are checked in the ops, at run time: the eager errors. A dtype is seen while tracing: with
    ``fullgraph=True`` Dynamo reports it as ``Unsupported`` carrying the engine's message."""
    torch._dynamo.reset()
    conv = _compiled_conv()
    x = random_input(50, 8)
    duplicated = torch.cat([x.coords, x.coords[:1]])
    feats = torch.randn(len(duplicated), 4)
    with pytest.raises(ValueError, match="duplicate coordinates"):
        conv(SparseTensor(feats, duplicated, validate=False))
    negative = x.coords.clone()
    negative[0, 1] = -3
    with pytest.raises(ValueError, match="negative spatial coordinates"):
        conv(SparseTensor(x.feats, negative, validate=False))
    with pytest.raises((TypeError, torch._dynamo.exc.Unsupported), match="must be an integer tensor"):
        conv(SparseTensor(x.feats, x.coords.float(), validate=False))


def test_a_single_output_voxel_is_refused_with_the_reason() -> None:
    torch._dynamo.reset()
    conv = _compiled_conv(kernel=2, stride=2)
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1]], dtype=torch.int32)  # one 2x2x2 window: 1 output
    with pytest.raises(ValueError, match="at least 2 per strided"):
        conv(SparseTensor(torch.randn(2, 4), coords))


@pytest.mark.triton
def test_triton_ops_match_eager_triton() -> None:
    """Forward, input and weight gradients of two Triton-backend convs, compiled vs eager (interpreted on the CPU)."""
    pytest.importorskip("triton")
    torch.manual_seed(0)
    net = nn.Sequential(spnn.Conv3d(4, 8, 3, backend="triton"), spnn.Conv3d(8, 8, 2, stride=2, backend="triton"))
    x = random_input(60, 6)

    def run(model: nn.Module):
        feats = x.feats.clone().requires_grad_()
        out = model(SparseTensor(feats, x.coords)).feats
        out.square().sum().backward()
        return out, feats.grad, [p.grad for p in model.parameters()]

    twin = copy.deepcopy(net)
    want = run(net)
    torch._dynamo.reset()
    got = run(torch.compile(twin, fullgraph=True, backend="aot_eager"))
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-6)
    for a, b in zip([got[1], *got[2]], [want[1], *want[2]]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_inductor_compiles_a_small_network() -> None:
    """The default backend (C++ codegen on the CPU) around the sparse ops: BN + ReLU fuse, results within 1e-5."""
    torch.manual_seed(0)
    net = nn.Sequential(spnn.Conv3d(4, 8, 3), spnn.BatchNorm(8), spnn.ReLU(), spnn.Conv3d(8, 8, 2, stride=2)).eval()
    x = random_input(300, 16)
    torch._dynamo.reset()
    with torch.no_grad(), torch._inductor.config.patch(compile_threads=1):
        got = torch.compile(net, fullgraph=True)(SparseTensor(x.feats, x.coords))
        want = net(SparseTensor(x.feats, x.coords))
    assert torch.equal(got.coords, want.coords)
    torch.testing.assert_close(got.feats, want.feats, rtol=1e-5, atol=1e-5)


def test_an_empty_scan_compiles() -> None:
    """Size 0 is static in a graph: every map is empty without ops, batch norm skips, the logits are [0, C]."""
    torch.manual_seed(0)
    net = TinyUNet(4, 3, 8).eval()
    empty = SparseTensor(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.int32))
    torch._dynamo.reset()
    with torch.no_grad():
        got = torch.compile(net, fullgraph=True, backend="aot_eager")(empty)
    assert got.shape == net(SparseTensor(empty.feats, empty.coords)).shape == (0, 3)


def test_to_dense_compiles() -> None:
    """``ToDense`` after strided convs: the batch size is a data-dependent scalar the graph captures."""
    torch.manual_seed(0)
    net = nn.Sequential(spnn.Conv3d(4, 8, 3), spnn.Conv3d(8, 8, 2, stride=2), spnn.ToDense((8, 8, 8))).eval()
    x = random_input(300, 16, batch=2)
    torch._dynamo.reset()
    with torch.no_grad():
        got = torch.compile(net, fullgraph=True, backend="aot_eager")(SparseTensor(x.feats, x.coords))
        want = net(SparseTensor(x.feats, x.coords))
    assert got.shape == want.shape == (2, 8, 8, 8, 8)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
