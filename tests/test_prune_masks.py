"""Unstructured and N:M masks (hooks, fine-tuning, baking), permutation search, the 2:4 GEMM path."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from toy_models import TinyUNet, random_input

from torchsparse_lite import nn as spnn
from torchsparse_lite.functional.conv import sparse_conv
from torchsparse_lite.prune import (
    apply_nm_sparsity,
    apply_unstructured,
    build_dependency_graph,
    is_nm_sparse,
    permute_for_nm,
    remove_masks,
    search_permutation,
    sparsity,
)
from torchsparse_lite.prune.masks import prunable_weights
from torchsparse_lite.prune.permute import kept_magnitude
from torchsparse_lite.prune.semi_structured import (
    FALLBACK_CONSTRAINTS,
    SemiStructuredConv3d,
    gather_linear_scatter,
    semi_structured_support,
    sparse_shape_constraints,
    to_offset_operands,
)
from torchsparse_lite.prune.surgery import copy_model


def _nm_everywhere(model: nn.Module, n: int, m: int) -> bool:
    return all(is_nm_sparse(mod, n, m) for _, mod in prunable_weights(model) if hasattr(mod, "weight_mask"))


def _groups_ok(w: torch.Tensor, n: int, m: int) -> bool:
    """Direct check on a [K, Cin, Cout] weight: every m consecutive Cin entries hold <= n non-zeros."""
    k, cin, cout = w.shape
    full = cin // m * m
    nz = (w[:, :full] != 0).reshape(k, cin // m, m, cout).sum(2)
    return bool((nz <= n).all())


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
def test_nm_masks_hold_through_finetuning(n: int, m: int) -> None:
    torch.manual_seed(0)
    model = TinyUNet(width=16)
    masks = apply_nm_sparsity(model, n, m)
    assert ("stem.conv" in masks) == (m <= 4)  # the stem has 4 input channels: too few for runs of 8
    for name, mod in prunable_weights(model):
        if name in masks and isinstance(mod, spnn.Conv3d):
            assert _groups_ok(mod.weight, n, m)
            assert hasattr(mod, "weight_orig") and hasattr(mod, "weight_mask")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    for s in range(3):
        x = random_input(200, 12, seed=s)
        loss = F.cross_entropy(model(x), torch.randint(0, 3, (len(x),)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert _nm_everywhere(model, n, m)
    for name, mod in prunable_weights(model):
        if name in masks and isinstance(mod, spnn.Conv3d):
            assert _groups_ok(mod.weight, n, m)


def test_masked_model_equals_baked_copy() -> None:
    torch.manual_seed(1)
    model = TinyUNet(width=16).eval()
    masks = apply_nm_sparsity(model, 2, 4)
    baked = remove_masks(copy_model(model))
    plain = TinyUNet(width=16).eval()  # masked weights copied into an unhooked model
    with torch.no_grad():
        for (name, mod), (_, dst) in zip(prunable_weights(model), prunable_weights(plain)):
            dst.weight.copy_(mod.weight_orig * mod.weight_mask if name in masks else mod.weight)
            if mod.bias is not None:
                dst.bias.copy_(mod.bias)
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if "weight_" not in k}, strict=False)
    x = random_input(400, 16, seed=7)
    out = model(x)
    torch.testing.assert_close(plain(x), out, rtol=0, atol=0)
    torch.testing.assert_close(baked(x), out, rtol=0, atol=0)
    assert not any(hasattr(m, "weight_mask") for m in baked.modules())
    assert is_nm_sparse(baked.up.blocks[0].main[0].conv, 2, 4)
    assert 0.45 < sparsity(baked) <= 0.5


def test_nm_keeps_largest() -> None:
    conv = spnn.Conv3d(4, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.1, -3.0, 0.2, 2.0]).reshape(1, 4, 1))
    apply_nm_sparsity(conv, 2, 4)
    assert conv.weight.flatten().tolist() == [0.0, -3.0, 0.0, 2.0]


@pytest.mark.parametrize("scope", ["global", "local"])
def test_unstructured(scope: str) -> None:
    model = TinyUNet(width=8)
    apply_unstructured(model, 0.7, scope)
    assert sparsity(model) == pytest.approx(0.7, abs=0.01)
    with pytest.raises(ValueError, match="amount"):
        apply_unstructured(model, 1.2)


def test_permutation_search_gains_and_keeps_function() -> None:
    torch.manual_seed(2)
    w = torch.randn(64, 16).abs()
    perm = search_permutation(w, 2, 4)
    assert sorted(perm.tolist()) == list(range(16))
    assert float(kept_magnitude(w[:, perm], 2, 4)) > float(kept_magnitude(w, 2, 4))
    model = TinyUNet(width=16).eval()
    graph = build_dependency_graph(model, random_input())
    permuted, info = permute_for_nm(model, graph, 2, 4, max_sweeps=1)
    assert info and all(v["after"] >= v["before"] for v in info.values())
    assert any(v["after"] > v["before"] for v in info.values())
    x = random_input(300, 14, seed=3)
    torch.testing.assert_close(permuted(x), model(x), rtol=1e-5, atol=1e-5)
    def kept(mdl: nn.Module) -> float:
        masked = [mod for _, mod in prunable_weights(mdl) if hasattr(mod, "weight_mask")]
        return sum(float((mod.weight.detach().abs() * mod.weight_mask).sum()) for mod in masked)

    a, b = copy_model(model), copy_model(permuted)
    apply_nm_sparsity(a, 2, 4)
    apply_nm_sparsity(b, 2, 4)
    assert kept(b) > kept(a)


def test_gather_linear_scatter_matches_conv() -> None:
    """The 2:4 path's gather -> linear -> scatter (dense operands on CPU) equals the engine's conv."""
    torch.manual_seed(4)
    conv = spnn.Conv3d(8, 12, 3)
    apply_nm_sparsity(conv, 2, 4)
    remove_masks(conv)
    x = random_input(300, 10, channels=8)
    kmap = conv.kernel_map(x)
    ops = to_offset_operands(conv.weight.detach(), sparse=False)
    out = gather_linear_scatter(x.feats, ops, kmap, 12, pad_rows=64)
    torch.testing.assert_close(out, sparse_conv(x.feats, conv.weight.detach(), kmap), rtol=1e-5, atol=1e-5)
    ok, why = semi_structured_support()
    if not torch.cuda.is_available():
        assert not ok and "CUDA" in why


def test_shape_constraints_fail_soft(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe of PyTorch's private block-size tables returns the strictest known block when they change."""
    rows, cols = sparse_shape_constraints(torch.float16)
    assert rows > 0 and cols > 0 and FALLBACK_CONSTRAINTS[0] % rows == 0 and FALLBACK_CONSTRAINTS[1] % cols == 0
    assert sparse_shape_constraints(torch.float64) == FALLBACK_CONSTRAINTS  # no table entry
    semi = importlib.import_module("torch.sparse.semi_structured")
    for cls in (semi.SparseSemiStructuredTensorCUTLASS, semi.SparseSemiStructuredTensorCUSPARSELT):
        monkeypatch.delattr(cls, "_DTYPE_SHAPE_CONSTRAINTS")
    assert sparse_shape_constraints(torch.float16) == FALLBACK_CONSTRAINTS
    monkeypatch.delattr(semi.SparseSemiStructuredTensor, "_FORCE_CUTLASS")
    assert sparse_shape_constraints(torch.bfloat16) == FALLBACK_CONSTRAINTS


@pytest.mark.skipif(semi_structured_support()[0], reason="on a capable GPU the benchmark would run in full")
def test_semi_structured_benchmark_refuses_without_gpu(capsys: pytest.CaptureFixture) -> None:
    """``benchmarks/semi_structured_24.py`` exits with status 2 and says why when there is no suitable GPU."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "semi_structured_24.py"
    spec = importlib.util.spec_from_file_location("semi_structured_24", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--out", "unused.json"]) == 2
    assert "no run:" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="unavailable"):
        bench.benchmark_semi_structured()


@pytest.mark.skipif(not semi_structured_support()[0], reason="needs a CUDA GPU with sparse tensor cores (sm80+)")
def test_semi_structured_conv_on_gpu() -> None:
    """On a capable GPU: the 2:4 sparse-matmul conv equals the dense fp16 path on the same masked weight."""
    torch.manual_seed(5)
    conv = spnn.Conv3d(64, 64, 3)
    apply_nm_sparsity(conv, 2, 4)
    remove_masks(conv)
    conv = conv.cuda().half()
    x = random_input(4000, 40, channels=64).to("cuda").half()
    fast = SemiStructuredConv3d(conv)
    assert fast.sparse, fast.reason
    ref = gather_linear_scatter(x.feats, to_offset_operands(conv.weight.detach(), False), conv.kernel_map(x), 64)
    torch.testing.assert_close(fast(x).feats.float(), ref.float(), rtol=2e-2, atol=2e-2)
