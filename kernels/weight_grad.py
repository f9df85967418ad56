"""Weight gradient: per offset, ``grad_w[k] = feats[in_idx_k]^T @ grad_out[out_idx_k]``.

The story of one program: it owns one ``BLOCK_K x BLOCK_N`` tile of
``grad_w[k]`` and a slice of at most ``split_rows`` pairs of offset ``k``.
It walks the slice ``BLOCK_M`` pairs at a time, gathers those rows of the
features and of the output gradient (both fused loads, no buffers), and
accumulates ``a^T @ b`` in fp32 registers.

Why split: the reduction runs along the map, and one offset's map can hold
~100k pairs (the centre tap of a submanifold conv) while the tile grid of
``grad_w[k]`` is tiny (one tile for 32x32 channels). Splitting the map gives
every offset ``n_split`` programs; each writes its partial tile to its own
slot of a ``[K, n_split, Cin, Cout]`` fp32 buffer and one ``sum`` over the
split axis finishes the job. There are no atomics, so the weight gradient is
bit-reproducible in every mode.

The split count and split length change with the map, so the launcher does
not specialise on them; the descriptor slices are read one scalar per
program, so their alignment is not specialised either.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .device import on_device
from .gather_dot import dot_precision, load_tile, needs_upcast
from .tiles import TileConfig

MAX_SPLITS = 16  # bounds the partial buffer to 16 * K * Cin * Cout fp32


@triton.jit(do_not_specialize=["n_split", "split_rows"],
            do_not_specialize_on_alignment=["starts_ptr", "counts_ptr"])
def weight_grad_kernel(
    feats_ptr,
    grad_ptr,
    part_ptr,
    in_idx_ptr,
    out_idx_ptr,
    starts_ptr,
    counts_ptr,
    n_split,
    split_rows,
    n_cin,
    n_cout,
    stride_fm,
    stride_fk,
    stride_gm,
    stride_gn,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_ks = tl.program_id(0).to(tl.int64)  # int64 index math, see gather_gemm_scatter.py
    pid_t = tl.program_id(1).to(tl.int64)
    k = pid_ks // n_split
    s = pid_ks % n_split
    count = tl.load(counts_ptr + k)
    lo = s * split_rows
    if lo >= count:
        return  # the partial buffer starts zeroed
    hi = tl.minimum(lo + split_rows, count)
    start = tl.load(starts_ptr + k)
    tiles_n = (n_cout + BLOCK_N - 1) // BLOCK_N
    ri = (pid_t // tiles_n) * BLOCK_K + tl.arange(0, BLOCK_K)
    rj = (pid_t % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    i_ok = ri < n_cin
    j_ok = rj < n_cout

    am = tl.arange(0, BLOCK_M).to(tl.int64)

    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    for r0 in range(lo, hi, BLOCK_M):
        rm = r0 + am
        ok = rm < hi
        src = tl.load(in_idx_ptr + start + rm, mask=ok, other=0)
        dst = tl.load(out_idx_ptr + start + rm, mask=ok, other=0)
        # Both operands gathered (see gather_dot.py); the reduction runs along the map, hence a^T @ b.
        a = load_tile(feats_ptr, src, ri, ok, i_ok, stride_fm, stride_fk, UPCAST)  # BLOCK_M x BLOCK_K
        b = load_tile(grad_ptr, dst, rj, ok, j_ok, stride_gm, stride_gn, UPCAST)  # BLOCK_M x BLOCK_N
        acc = tl.dot(tl.trans(a), b, acc, input_precision=PRECISION)
    out = part_ptr + pid_ks * n_cin * n_cout + ri[:, None] * n_cout + rj[None, :]
    tl.store(out, acc, mask=i_ok[:, None] & j_ok[None, :])


def weight_grad(
    feats: torch.Tensor,
    grad_out: torch.Tensor,
    in_idx: torch.Tensor,
    out_idx: torch.Tensor,
    counts: tuple[int, ...],
    tiles: TileConfig,
    allow_tf32: bool,
) -> torch.Tensor:
    """[K, Cin, Cout] fp32 weight gradient of a sparse conv, in one launch.

    Args:
        feats: [N_in, Cin]; grad_out: [N_out, Cout] (same dtype).
        in_idx, out_idx: [M] int64 pairs grouped by offset, ``counts`` per offset.
    """
    volume, cin, cout = len(counts), feats.shape[1], grad_out.shape[1]
    longest = max(counts, default=0)
    if longest == 0:
        return torch.zeros((volume, cin, cout), dtype=torch.float32, device=feats.device)
    split = max(tiles.split_rows, triton.cdiv(longest, MAX_SPLITS))
    split = triton.cdiv(split, tiles.block_m) * tiles.block_m
    n_split = triton.cdiv(longest, split)
    starts = [0]
    for c in counts[:-1]:
        starts.append(starts[-1] + c)
    desc = torch.tensor([starts, list(counts)], dtype=torch.int64).to(feats.device)
    part = torch.zeros((volume * n_split, cin, cout), dtype=torch.float32, device=feats.device)
    upcast = needs_upcast(feats.dtype, weight_grad_kernel)
    grid = (volume * n_split, triton.cdiv(cin, tiles.block_k) * triton.cdiv(cout, tiles.block_n))
    with on_device(feats=feats, grad_out=grad_out, in_idx=in_idx, out_idx=out_idx):
        weight_grad_kernel[grid](
            feats, grad_out, part, in_idx, out_idx, desc[0], desc[1], n_split, split, cin, cout,
            feats.stride(0), feats.stride(1), grad_out.stride(0), grad_out.stride(1),
            BLOCK_M=tiles.block_m, BLOCK_K=tiles.block_k, BLOCK_N=tiles.block_n,
            PRECISION=dot_precision(feats.dtype, allow_tf32), UPCAST=upcast,
            num_warps=tiles.num_warps, num_stages=tiles.num_stages,
        )  # fmt: skip
    part = part.view(volume, n_split, cin, cout)
    return part[:, 0] if n_split == 1 else part.sum(dim=1)
