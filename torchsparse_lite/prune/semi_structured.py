"""2:4-sparse weights in the gather -> GEMM -> scatter path via PyTorch's semi-structured sparse matmul.

For offset ``k`` the GEMM ``gathered[m, Cin] @ W[k] [Cin, Cout]`` is
``F.linear(gathered, W[k].T)``; with ``W[k].T`` [Cout, Cin] 2:4-sparse along Cin
(the layout :func:`~.masks.apply_nm_sparsity` produces) it can be stored with
``torch.sparse.to_sparse_semi_structured`` and run on sparse tensor cores
(CUDA, compute capability >= 8.0, fp16/bf16, shapes multiples of the backend's
block size). Layers that do not qualify stay dense.

The dense-vs-2:4 timing lives in ``benchmarks/semi_structured_24.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..grouping import scatter_offsets
from ..kmap.kernel_map import KernelMap
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


# The strictest sparse-operand block of both backends for float16 / bfloat16 (CUTLASS: 32 rows x 64
# columns; cuSPARSELt: 16 x 16): a layer that fits it fits whichever backend runs.
FALLBACK_CONSTRAINTS = (32, 64)


def sparse_shape_constraints(dtype: torch.dtype) -> tuple[int, int]:
    """(rows, cols) the sparse operand [Cout, Cin] must be a multiple of, for ``dtype`` on the active backend.

    PyTorch publishes no API for these sizes; they are read from the private
    ``SparseSemiStructuredTensor._FORCE_CUTLASS`` (which backend
    ``to_sparse_semi_structured`` picks) and the backends'
    ``_DTYPE_SHAPE_CONSTRAINTS`` tables. This probe fails soft: when those
    internals are missing or changed it returns :data:`FALLBACK_CONSTRAINTS`,
    so a layer is at worst left dense, never converted into a failing shape.
    """
    try:
        semi = importlib.import_module("torch.sparse.semi_structured")
        cutlass, cusparselt = semi.SparseSemiStructuredTensorCUTLASS, semi.SparseSemiStructuredTensorCUSPARSELT
        active = cutlass if semi.SparseSemiStructuredTensor._FORCE_CUTLASS else cusparselt
        table = active._DTYPE_SHAPE_CONSTRAINTS
        cfg = table[dtype] if dtype in table else cutlass._DTYPE_SHAPE_CONSTRAINTS[dtype]
        rows, cols = int(cfg.sparse_min_rows), int(cfg.sparse_min_cols)
    except (ImportError, AttributeError, KeyError, TypeError, ValueError):
        return FALLBACK_CONSTRAINTS
    return (rows, cols) if rows > 0 and cols > 0 else FALLBACK_CONSTRAINTS


def layer_qualifies(weight: torch.Tensor) -> tuple[bool, str]:
    """Whether a [K, Cin, Cout] weight can use the sparse matmul (device, dtype, shape)."""
    ok, why = semi_structured_support(weight.device)
    if not ok:
        return False, why
    if weight.dtype not in (torch.float16, torch.bfloat16):
        return False, f"dtype {weight.dtype}: use float16 or bfloat16"
    rows, cols = sparse_shape_constraints(weight.dtype)
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
    chunk_rows: int = 1 << 17,
) -> torch.Tensor:
    """``out[out_idx] += linear(feats[in_idx], operands[k])`` for every offset ``k``.

    The scatter is the PyTorch executor's (:func:`~torchsparse_lite.grouping.scatter_offsets`)
    with this GEMM plugged in.

    Args:
        feats: [n_in, Cin]; operands: K matrices [Cout, Cin] (dense or semi-structured).
        kmap: the layer's kernel map.
        linear: the matmul (``F.linear``; semi-structured operands dispatch to the sparse kernel).
        pad_rows: pad each gathered block to a multiple of this many rows (sparse kernels need 8..64).
        chunk_rows: most rows gathered at once per offset.

    Returns:
        [n_out, Cout] features.
    """
    def gemm(g: torch.Tensor, k: int) -> torch.Tensor:
        rows = g.shape[0]
        pad = (-rows) % pad_rows
        return linear(F.pad(g, (0, 0, 0, pad)) if pad else g, operands[k])[:rows]

    out = feats.new_zeros((kmap.n_out, out_channels))
    for k, (start, end) in enumerate(kmap.bounds):
        if end > start:
            scatter_offsets(feats, gemm, kmap.in_idx[start:end], kmap.out_idx[start:end], k, out, chunk_rows)
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
        return SparseTensor(feats, kmap.out_coords, self.conv.output_stride(x.stride), cache=x.cache, validate=False)
