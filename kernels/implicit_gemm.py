"""Output-stationary sparse conv (implicit GEMM over a neighbour table).

The story of one program: it owns ``BLOCK_M`` consecutive *output* rows and
``BLOCK_N`` output channels, and loops over the offsets of one group. For
offset ``k`` it reads its rows' input neighbours from the table
``nbmap[k, out_row]`` (-1 where the neighbour is absent), loads those input
rows tile by tile (the gather, fused), and multiplies by ``weight[k]`` into
fp32 registers. An offset with no neighbour in the whole tile is skipped. At
the end the program owns its output tile exclusively, so it *stores* instead
of adding atomically: the summation order is fixed by the loop, and the
result is bit-identical from run to run. This is the dataflow the
deterministic mode uses.

A plan with several groups runs one launch per group; launches after the
first load the tile, add, and store it again (``ACCUMULATE``), still without
atomics because one launch never has two programs on one output tile.

The table costs ``K * n_out`` int32 (27 x 95k rows = 10 MB for a 3x3x3
conv on one SemanticKITTI scan); its rows are read coalesced, one offset at a
time, and the input rows they name are the only irregular loads.

``n_offs`` and ``n_rows`` change with every group and every scan, so the
launcher does not specialise on them (see :mod:`.gather_gemm_scatter`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .device import on_device
from .gather_dot import dot_precision, gather_dot, needs_upcast
from .tiles import TileConfig


@triton.jit(do_not_specialize=["n_offs", "n_rows"], do_not_specialize_on_alignment=["offs_ptr"])
def implicit_gemm_kernel(
    feats_ptr,
    weight_ptr,
    out_ptr,
    nbmap_ptr,
    offs_ptr,
    n_offs,
    n_rows,
    n_cin,
    n_cout,
    stride_fm,
    stride_fk,
    stride_wo,
    stride_wk,
    stride_wn,
    stride_om,
    stride_on,
    ACCUMULATE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)  # int64 index math, see gather_gemm_scatter.py
    tiles_n = (n_cout + BLOCK_N - 1) // BLOCK_N
    pid_n = pid % tiles_n
    pid_m = pid // tiles_n
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rm < n_rows
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = rn < n_cout

    ak = tl.arange(0, BLOCK_K).to(tl.int64)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for j in range(0, n_offs):
        k = tl.load(offs_ptr + j).to(tl.int64)
        src = tl.load(nbmap_ptr + k * n_rows + rm, mask=row_ok, other=-1)
        hit = src >= 0
        if tl.max(hit.to(tl.int32), axis=0) > 0:
            src64 = tl.where(hit, src, 0).to(tl.int64)
            w_base = weight_ptr + k * stride_wo
            acc = gather_dot(acc, feats_ptr, src64, hit, stride_fm, stride_fk,
                             w_base, rn, col_ok, stride_wk, stride_wn, n_cin, ak, BLOCK_K, PRECISION, UPCAST)
    ptrs = out_ptr + rm[:, None] * stride_om + rn[None, :] * stride_on
    mask = row_ok[:, None] & col_ok[None, :]
    if ACCUMULATE:
        acc += tl.load(ptrs, mask=mask, other=0.0)
    tl.store(ptrs, acc, mask=mask)


def neighbour_table(in_idx: torch.Tensor, out_idx: torch.Tensor, counts: tuple[int, ...], n_out: int) -> torch.Tensor:
    """[K, n_out] int32: ``table[k, o]`` = input row paired with output ``o`` by offset ``k``, else -1.

    Each (offset, output) pair appears at most once in a kernel map, so the
    scatter writes every cell at most once and is deterministic.
    """
    volume = len(counts)
    table = torch.full((volume, n_out), -1, dtype=torch.int32, device=in_idx.device)
    if in_idx.numel():
        k = torch.repeat_interleave(
            torch.arange(volume, device=in_idx.device), torch.tensor(counts, device=in_idx.device)
        )
        table.view(-1)[k * n_out + out_idx] = in_idx.to(torch.int32)
    return table


def implicit_gemm(
    feats: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor,
    table: torch.Tensor,
    groups: list[torch.Tensor],
    tiles: TileConfig,
    allow_tf32: bool,
) -> int:
    """``out[o] = sum_k feats[table[k, o]] @ weight[k]`` over the offsets of ``groups``, without atomics.

    Args:
        feats: [N, Cin]; weight: [K, Cin, Cout] (any strides).
        out: [n_out, Cout] fp32, overwritten by the first launch.
        table: [K, n_out] int32 from :func:`neighbour_table`.
        groups: per launch, an int32 tensor of offset ids on the device.

    Returns:
        The number of kernel launches.
    """
    n_rows, cin, cout = table.shape[1], weight.shape[1], weight.shape[2]
    upcast = needs_upcast(feats.dtype, implicit_gemm_kernel)
    grid = (triton.cdiv(n_rows, tiles.block_m) * triton.cdiv(cout, tiles.block_n),)
    launches = 0
    with on_device(feats=feats, weight=weight, out=out, table=table):
        for offs in groups:
            if n_rows == 0 or offs.numel() == 0:
                continue
            implicit_gemm_kernel[grid](
                feats, weight, out, table, offs, offs.numel(), n_rows, cin, cout,
                feats.stride(0), feats.stride(1),
                weight.stride(0), weight.stride(1), weight.stride(2),
                out.stride(0), out.stride(1),
                ACCUMULATE=launches > 0,
                BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, BLOCK_K=tiles.block_k,
                PRECISION=dot_precision(feats.dtype, allow_tf32), UPCAST=upcast,
                num_warps=tiles.num_warps, num_stages=tiles.num_stages,
            )  # fmt: skip
            launches += 1
    if launches == 0:
        out.zero_()
    return launches
