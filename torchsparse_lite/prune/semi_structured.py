"""2:4-sparse weights in the gather -> GEMM -> scatter path via PyTorch's semi-structured sparse matmul.

For offset ``k`` the GEMM ``gathered[m, Cin] @ W[k] [Cin, Cout]`` is
``F.linear(gathered, W[k].T)``; with ``W[k].T`` [Cout, Cin] 2:4-sparse along Cin
(the layout :func:`~.masks.apply_nm_sparsity` produces) it can be stored with
``torch.sparse.to_sparse_semi_structured`` and run on sparse tensor cores
(CUDA, compute capability >= 8.0, fp16/bf16, shapes multiples of the backend's
block size). Layers that do not qualify stay dense.

Run the benchmark on a GPU with::

    python -m torchsparse_lite.prune.semi_structured --out benchmarks/results/semi_structured.json

It times the dense and the 2:4 path of the same layers on the same input in
the same process and writes JSON (+ PNG); on a machine without a suitable GPU it
says so and exits with status 2 (no figures are made up).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..kmap.kmap import KernelMap
from ..tensor import SparseTensor


def semi_structured_support(device: torch.device | str | None = None) -> tuple[bool, str]:
    """(usable, reason): PyTorch's semi-structured sparse matmul on ``device`` (default cuda:0)."""
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return False, "this PyTorch has no torch.sparse.to_sparse_semi_structured"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    dev = torch.device(device) if device is not None else torch.device("cuda", 0)
    if dev.type != "cuda":
        return False, f"device {dev} is not CUDA"
    major, minor = torch.cuda.get_device_capability(dev)
    if major < 8:
        return False, f"compute capability {major}.{minor} < 8.0 has no sparse tensor cores"
    return True, f"cuda capability {major}.{minor}"


def _constraints(dtype: torch.dtype) -> tuple[int, int]:
    """(min/multiple of rows, of cols) of the sparse operand for the active backend."""
    from torch.sparse import SparseSemiStructuredTensor  # noqa: PLC0415 - CUDA-only feature

    cls = SparseSemiStructuredTensor
    backend = (
        torch.sparse.semi_structured.SparseSemiStructuredTensorCUTLASS
        if cls._FORCE_CUTLASS
        else torch.sparse.semi_structured.SparseSemiStructuredTensorCUSPARSELT
    )
    try:
        cfg = backend._DTYPE_SHAPE_CONSTRAINTS[dtype]
    except KeyError:
        cfg = torch.sparse.semi_structured.SparseSemiStructuredTensorCUTLASS._DTYPE_SHAPE_CONSTRAINTS[dtype]
    return cfg.sparse_min_rows, cfg.sparse_min_cols


def layer_qualifies(weight: torch.Tensor) -> tuple[bool, str]:
    """Whether a [K, Cin, Cout] weight can use the sparse matmul (device, dtype, shape)."""
    ok, why = semi_structured_support(weight.device)
    if not ok:
        return False, why
    if weight.dtype not in (torch.float16, torch.bfloat16):
        return False, f"dtype {weight.dtype}: use float16 or bfloat16"
    rows, cols = _constraints(weight.dtype)
    cout, cin = weight.shape[2], weight.shape[1]
    if cout % rows or cin % cols:
        return False, f"Cout={cout} must be a multiple of {rows} and Cin={cin} of {cols}"
    return True, "ok"


def to_offset_operands(weight: torch.Tensor, sparse: bool) -> list[torch.Tensor]:
    """Per-offset ``W[k].T`` [Cout, Cin]; semi-structured sparse tensors when ``sparse``."""
    ops = [weight[k].t().contiguous() for k in range(weight.shape[0])]
    if sparse:
        ops = [torch.sparse.to_sparse_semi_structured(w) for w in ops]
    return ops


def gather_linear_scatter(
    feats: torch.Tensor,
    operands: Sequence[torch.Tensor],
    kmap: KernelMap,
    out_channels: int,
    linear: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.linear,
    pad_rows: int = 1,
) -> torch.Tensor:
    """``out[out_idx] += linear(feats[in_idx], operands[k])`` for every offset ``k``.

    Args:
        feats: [n_in, Cin]; operands: K matrices [Cout, Cin] (dense or semi-structured).
        kmap: the layer's kernel map.
        linear: the matmul (``F.linear``; semi-structured operands dispatch to the sparse kernel).
        pad_rows: pad each gathered block to a multiple of this many rows (sparse kernels need 8..64).

    Returns:
        [n_out, Cout] features.
    """
    out = feats.new_zeros((kmap.n_out, out_channels))
    for k, (start, end) in enumerate(kmap.bounds):
        if end == start:
            continue
        rows = end - start
        g = feats.index_select(0, kmap.in_idx[start:end])
        pad = (-rows) % pad_rows
        if pad:
            g = F.pad(g, (0, 0, 0, pad))
        out.index_add_(0, kmap.out_idx[start:end], linear(g, operands[k])[:rows])
    return out


class SemiStructuredConv3d(nn.Module):
    """Inference wrapper running a 2:4-sparse :class:`~torchsparse_lite.nn.Conv3d` through sparse matmuls.

    The weight is converted once (it must already be 2:4 along Cin); when the
    layer does not qualify (see :func:`layer_qualifies`) it runs dense operands
    through the same gather-linear-scatter path.
    """

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.sparse, self.reason = layer_qualifies(conv.weight)
        self.operands = to_offset_operands(conv.weight.detach(), self.sparse)

    def forward(self, x: SparseTensor) -> SparseTensor:
        kmap = self.conv.kernel_map(x)
        feats = gather_linear_scatter(
            x.feats, self.operands, kmap, self.conv.out_channels, pad_rows=64 if self.sparse else 1
        )
        if self.conv.bias is not None:
            feats = feats + self.conv.bias
        return SparseTensor(feats, kmap.out_coords, self.conv.output_stride(x.stride), caches=x.caches, validate=False)


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3


def benchmark_semi_structured(
    channels: Sequence[int] = (64, 128, 256),
    n_points: int = 100_000,
    extent: int = 200,
    dtype: torch.dtype = torch.float16,
    repeats: int = 20,
    seed: int = 0,
) -> dict:
    """Dense vs 2:4-sparse gather-GEMM-scatter of a 3x3x3 submanifold conv, same data, same run.

    Returns:
        ``{"device", "torch", "rows": [{"channels", "dense_ms", "sparse_ms", "speedup", "max_abs_diff"}]}``.

    Raises:
        RuntimeError: when no suitable GPU is present.
    """
    from ..kmap.kmap import build_kernel_map  # noqa: PLC0415
    from .masks import nm_mask_lastdim  # noqa: PLC0415

    ok, why = semi_structured_support()
    if not ok:
        raise RuntimeError(f"semi-structured sparse matmul unavailable: {why}")
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(seed)
    xyz = torch.unique(torch.randint(0, extent, (n_points, 3), generator=gen), dim=0)
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.long), xyz], 1).to(torch.int32).to(dev)
    kmap = build_kernel_map(coords, (3, 3, 3), (1, 1, 1), (1, 1, 1), mode="submanifold")
    rows = []
    for c in channels:
        feats = torch.randn(len(coords), c, generator=gen).to(dev, dtype)
        w = torch.randn(27, c, c, generator=gen).to(dev, dtype)
        w = w * nm_mask_lastdim(w.transpose(1, 2), 2, 4).transpose(1, 2)
        dense_ops = to_offset_operands(w, sparse=False)
        sparse_ops = to_offset_operands(w, sparse=True)
        dense = gather_linear_scatter(feats, dense_ops, kmap, c, pad_rows=64)
        sparse = gather_linear_scatter(feats, sparse_ops, kmap, c, pad_rows=64)
        t_dense = _time(lambda: gather_linear_scatter(feats, dense_ops, kmap, c, pad_rows=64), repeats)  # noqa: B023
        t_sparse = _time(lambda: gather_linear_scatter(feats, sparse_ops, kmap, c, pad_rows=64), repeats)  # noqa: B023
        rows.append(
            {
                "channels": c,
                "points": len(coords),
                "map_pairs": int(sum(kmap.counts)),
                "dense_ms": t_dense,
                "sparse_ms": t_sparse,
                "speedup": t_dense / t_sparse,
                "max_abs_diff": float((dense.float() - sparse.float()).abs().max()),
            }
        )
    return {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "dtype": str(dtype), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/semi_structured.json")
    p.add_argument("--points", type=int, default=100_000)
    p.add_argument("--channels", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    ok, why = semi_structured_support()
    if not ok:
        print(f"no run: {why}", file=sys.stderr)
        return 2
    res = benchmark_semi_structured(args.channels, args.points, repeats=args.repeats)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(5, 3.5))
    cs = [r["channels"] for r in res["rows"]]
    ax.bar([str(c) for c in cs], [r["speedup"] for r in res["rows"]])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("channels (Cin = Cout)")
    ax.set_ylabel("dense time / 2:4 time")
    ax.set_title(f"2:4 gather-GEMM-scatter, {res['device']}")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
