"""The gather-and-dot inner loop every sparse-conv kernel is built around.

A sparse conv is a sum of small dense GEMMs whose operand rows are
*scattered*: for kernel offset ``k`` the rows of ``feats`` that take part are
named by an index (a pair list, or a neighbour table), not by a range. The
three conv kernels (:mod:`.gather_gemm_scatter`, :mod:`.implicit_gemm`,
:mod:`.weight_grad`) differ in which program owns which output tile and in how
the tile reaches memory; how they load and multiply their tiles is the same,
and lives here, once.

What is gathered (:func:`load_tile`). A program holds a vector ``rows`` of
``BLOCK_M`` row numbers it looked up itself. The gather is fused into the
load: the pointer tile ``ptr + rows[:, None] * stride_r + cols[None, :] *
stride_c`` reads ``BLOCK_M`` scattered rows, a run of channels each, straight
into registers; no ``feats[rows]`` buffer is ever written to global memory.
Every operand of every conv kernel is such a tile (the weight tile too, with
``rows`` a plain range of input channels), so one masked load serves all six.

The K loop (:func:`gather_dot`, the two forward kernels). The reduction runs
over input channels, ``BLOCK_K`` at a time: each step multiplies the gathered
``BLOCK_M x BLOCK_K`` tile by the ``BLOCK_K x BLOCK_N`` tile of the weight
matrix and accumulates into ``acc``. ``acc`` is fp32 whatever the input
dtype, stays in registers across the loop, and goes back to the kernel, which
alone decides how it reaches memory (atomic add, store, or load-add-store).
The row numbers are loaded once, before the loop, so the only irregular loads
are the feature rows themselves. The weight gradient reduces along the *map*
instead (``grad_w[k] = feats[in]^T @ grad_out[out]``): its loop walks
``BLOCK_M`` pairs a step and gathers both operands, so it cannot use the
channel loop; it uses :func:`load_tile` twice and its own ``tl.dot`` of
``a^T @ b``.

Why the shared piece is a *load*, not a "load, load, dot" step. Triton
evaluates a call's arguments before the call, so a step helper taking two
pointer tiles would compute both operands' addresses before the first load,
while the loops as written compute each operand's address next to its own
load. The result is the same arithmetic in another order, and ``ptxas``
allocates registers differently (one sm_80 variant went from 128 to 160
registers a thread when that was tried). Passing the index vectors instead
keeps every instruction where the kernel had it.

Masks. Every load is masked on both axes and fills with zeros: rows past the
end of a map (or absent neighbours), channels past ``n_cin`` in the last K
step, output channels past ``n_cout`` in the last N tile. A channel past
``n_cin`` is zero in *both* operands, so it adds exactly ``0.0``; a masked row
or output channel only touches accumulator entries the kernel never stores
(its final store is masked again). Ragged edges thus need no special case in
the arithmetic.

Precision. ``PRECISION`` is ``tl.dot``'s ``input_precision``: ``"tf32"`` (fp32
on TF32 tensor cores, only when the caller allowed it) or ``"ieee"`` (full
fp32 FMAs for fp32 inputs; fp16/bf16 operands go to the tensor cores as they
are), see :func:`dot_precision`. Accumulation is fp32 in every case.

``UPCAST`` is a shim for the interpreter only: under ``TRITON_INTERPRET=1``
``tl.dot`` misreads bf16 operands, so :func:`load_tile` converts each tile to
fp32 (lossless: every bf16 value is an fp32 value, and the product of two is
exact in fp32). :func:`needs_upcast` turns it on for bf16 under the
interpreter and nowhere else; compiled kernels never take the branch, so it
emits no instruction on the GPU.

Both helpers are ordinary ``@triton.jit`` functions, inlined into the calling
kernel: the PTX is, instruction for instruction and in the same order, that
of the loops written out in the kernel (the software pipeline ``num_stages``
builds around the K loop included). What inlining adds is line-info labels
for the inlined lines, which move ``ptxas``'s register counts by a few either
way; ``tests/test_kernels_compile.py`` checks that no launch spills.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tiles import is_interpreted


@triton.jit
def load_tile(ptr, rows, cols, rows_ok, cols_ok, stride_r, stride_c, UPCAST: tl.constexpr):
    """``ptr[rows[:, None], cols[None, :]]`` through the strides, zeros outside ``rows_ok x cols_ok``.

    With gathered ``rows`` this is the gather; with ``UPCAST`` the tile comes back as fp32.
    """
    tile = tl.load(
        ptr + rows[:, None] * stride_r + cols[None, :] * stride_c,
        mask=rows_ok[:, None] & cols_ok[None, :],
        other=0.0,
    )
    if UPCAST:  # the interpreter's dot misreads bf16; the GPU path never takes this branch
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def gather_dot(acc, feats_ptr, rows, rows_ok, stride_fm, stride_fk,
               w_ptr, cols, cols_ok, stride_wk, stride_wn, n_cin, ak,
               BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``acc + feats[rows, :n_cin] @ w[:n_cin, cols]``, ``BLOCK_K`` channels a step.

    ``rows`` (int64, ``BLOCK_M``) are the gathered feature rows, read as zeros
    where ``rows_ok`` is false; ``w_ptr`` points at one offset's
    ``[n_cin, n_cout]`` weight matrix and ``cols`` (``BLOCK_N``) at its output
    channels, masked by ``cols_ok``. ``ak`` is ``tl.arange(0, BLOCK_K)`` in
    int64, made by the kernel once, outside its own loops: made in here, the
    implicit GEMM's offset loop would hoist it elsewhere and recompute one
    channel mask per offset.
    """
    for k0 in range(0, n_cin, BLOCK_K):
        rk = k0 + ak
        k_ok = rk < n_cin
        a = load_tile(feats_ptr, rows, rk, rows_ok, k_ok, stride_fm, stride_fk, UPCAST)  # BLOCK_M x BLOCK_K, gathered
        b = load_tile(w_ptr, rk, cols, k_ok, cols_ok, stride_wk, stride_wn, UPCAST)  # BLOCK_K x BLOCK_N
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    return acc


def dot_precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    """``PRECISION`` (``tl.dot``'s ``input_precision``): TF32 only for fp32 inputs when allowed."""
    return "tf32" if (dtype == torch.float32 and allow_tf32) else "ieee"


def needs_upcast(dtype: torch.dtype, kernel: object) -> bool:
    """``UPCAST``: bf16 operands of a kernel running under the interpreter (see the module docstring)."""
    return dtype == torch.bfloat16 and is_interpreted(kernel)
