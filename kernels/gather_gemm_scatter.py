"""Fused gather -> GEMM -> scatter (weight-stationary, atomic scatter).

The story of one program: it owns ``BLOCK_M`` consecutive pairs of one kernel
offset ``k`` and ``BLOCK_N`` output channels. It loads the pairs' input row
numbers, then, ``BLOCK_K`` input channels at a time, loads those rows of the
features straight from global memory (the gather happens inside the kernel,
no ``feats[in_idx]`` buffer is ever written), multiplies them by the matching
tile of ``weight[k]`` and accumulates in fp32 registers. At the end the tile
is added to the output rows with ``atomic_add``: two pairs of different
offsets may hit the same output row, so concurrent programs must not
overwrite each other.

One launch executes one *group* of offsets of a grouping plan (see
``torchsparse_lite.grouping``): the grid is padded to the group's longest map
(``tiles_m`` row tiles per offset) and programs past the end of a shorter map
return at once, so padding costs an idle program, not arithmetic.

Specialisation: the launcher compiles one binary per distinct set of
argument properties (an int equal to 1 becomes a constant, ints divisible by
16 get alignment hints). That is worth it for the channel counts and strides
(a unit channel stride and 16-aligned rows turn the gathers into vector loads)
but not for ``tiles_m``, which changes with every map, nor for the alignment
of the descriptor slices, which are read one scalar per program: those are
excluded, so the compiled variants follow the channel and stride regimes, not
the map sizes of every layer and every scan.

Program order: the output-channel tile varies fastest. The ``tiles_n``
programs that share one set of gathered rows are therefore launched together
and the irregular row loads of the later ones hit in L2; the weight tile they
need is small and stays cached for all programs of an offset anyway.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .device import on_device
from .gather_dot import dot_precision, gather_dot, needs_upcast
from .tiles import TileConfig


@triton.jit(
    do_not_specialize=["tiles_m"],
    do_not_specialize_on_alignment=["grp_offset_ptr", "grp_start_ptr", "grp_count_ptr"],
)
def gather_gemm_scatter_kernel(
    feats_ptr,
    weight_ptr,
    out_ptr,
    in_idx_ptr,
    out_idx_ptr,
    grp_offset_ptr,
    grp_start_ptr,
    grp_count_ptr,
    tiles_m,
    n_cin,
    n_cout,
    stride_fm,
    stride_fk,
    stride_wo,
    stride_wk,
    stride_wn,
    stride_om,
    stride_on,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    # Index math in int64 throughout: row * stride overflows int32 on big
    # scans, and the interpreter skips its int32 overflow checks for int64.
    pid = tl.program_id(0).to(tl.int64)
    tiles_n = (n_cout + BLOCK_N - 1) // BLOCK_N
    pid_n = pid % tiles_n
    pid_gm = pid // tiles_n
    g = pid_gm // tiles_m
    pid_m = pid_gm % tiles_m
    count = tl.load(grp_count_ptr + g)
    if pid_m * BLOCK_M >= count:
        return  # padding of a shorter map inside its group
    k = tl.load(grp_offset_ptr + g)
    start = tl.load(grp_start_ptr + g)

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rm < count
    src = tl.load(in_idx_ptr + start + rm, mask=row_ok, other=0)
    dst = tl.load(out_idx_ptr + start + rm, mask=row_ok, other=0)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = rn < n_cout
    w_base = weight_ptr + k * stride_wo

    ak = tl.arange(0, BLOCK_K).to(tl.int64)

    # The gather and the K loop over input channels: see gather_dot.py.
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc = gather_dot(acc, feats_ptr, src, row_ok, stride_fm, stride_fk,
                     w_base, rn, col_ok, stride_wk, stride_wn, n_cin, ak, BLOCK_K, PRECISION, UPCAST)
    tl.atomic_add(
        out_ptr + dst[:, None] * stride_om + rn[None, :] * stride_on,
        acc,
        mask=row_ok[:, None] & col_ok[None, :],
        sem="relaxed",
    )


def gather_gemm_scatter(
    feats: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor,
    in_idx: torch.Tensor,
    out_idx: torch.Tensor,
    groups: list[tuple[torch.Tensor, int]],
    tiles: TileConfig,
    allow_tf32: bool,
) -> int:
    """Accumulate ``out[out_idx] += feats[in_idx] @ weight[k]`` group by group.

    Args:
        feats: [N, Cin] fp32/fp16/bf16.
        weight: [K, Cin, Cout] (any strides; the backward passes a transposed view).
        out: [n_out, Cout] fp32 accumulator, added to in place.
        in_idx, out_idx: [M] int64 pairs grouped by offset.
        groups: per launch, a [3, G] int64 descriptor (offset ids, starts
            into the pair arrays, counts) on the device and the group's
            longest map.
        tiles: tile sizes; allow_tf32: TF32 for fp32 inputs.

    Returns:
        The number of kernel launches (made with ``feats``' device current, see :mod:`.device`).
    """
    launches = 0
    with on_device(feats=feats, weight=weight, out=out, in_idx=in_idx, out_idx=out_idx):
        for desc, longest in groups:
            if longest == 0:
                continue
            _launch(feats, weight, out, in_idx, out_idx, desc, longest, tiles, allow_tf32)
            launches += 1
    return launches


def _launch(feats, weight, out, in_idx, out_idx, desc, longest, tiles, allow_tf32) -> None:
    """One launch over one group's ``desc`` (see :func:`gather_gemm_scatter`)."""
    cin, cout = weight.shape[1], weight.shape[2]
    upcast = needs_upcast(feats.dtype, gather_gemm_scatter_kernel)
    tiles_m = triton.cdiv(longest, tiles.block_m)
    grid = (triton.cdiv(cout, tiles.block_n) * tiles_m * desc.shape[1],)
    gather_gemm_scatter_kernel[grid](
        feats, weight, out, in_idx, out_idx, desc[0], desc[1], desc[2],
        tiles_m, cin, cout,
        feats.stride(0), feats.stride(1),
        weight.stride(0), weight.stride(1), weight.stride(2),
        out.stride(0), out.stride(1),
        BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, BLOCK_K=tiles.block_k,
        PRECISION=dot_precision(feats.dtype, allow_tf32), UPCAST=upcast,
        num_warps=tiles.num_warps, num_stages=tiles.num_stages,
    )  # fmt: skip
