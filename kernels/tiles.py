"""Tile sizes shared by the sparse-conv kernels, and interpreter detection.

Why these sizes (GPU). Shared by every precision:

* ``block_m = 64`` map rows per program: each row is a *gathered* feature row
  (an irregular load), so a tile must be tall enough that the weight tile it
  multiplies is reused across many rows, but short enough that offsets with
  small maps (a few hundred pairs at the coarse levels of a U-Net) still fill
  the machine with programs.
* ``block_n`` = Cout rounded up to a power of two (>= 16, ``tl.dot``'s least),
  ``block_k`` = Cin likewise: one program usually covers every output
  channel of a row, so a gathered row is loaded once, and the reduction over
  input channels runs in one or a few steps (Cin is 16..256 in MinkUNet).

What differs is how much of a tile fits in registers, read off ``ptxas -v``
for every launch the wrappers make on sm_80 and sm_90
(``tests/test_kernels_compile.py`` asserts zero spill bytes for all of them):

* fp16 / bf16 (tensor cores): ``block_n <= 128``, ``block_k <= 64``; a
  64 x 128 tile runs on 8 warps (32 fp32 accumulators a thread). On 4 warps
  the atomic kernel hit 255 registers and spilled on sm_80 (96 B), and at 3
  stages spilled again; on 8 warps it needs 226 (sm_80) / 102 (sm_90).
* fp32 with TF32 (tensor cores, 4-byte operands): ``block_k <= 32``, the
  64 x 128 tile on 8 warps. With ``block_k = 64`` the operand tiles are twice
  the fp16 ones: on sm_80 the weight gradient spilled on 4 warps and the
  accumulating implicit GEMM on 8.
* fp32 without TF32 (plain FMA, the default, see ``EngineConfig.tf32``):
  ``block_n <= 64``, ``block_k <= 16``, 4 warps. An FMA ``tl.dot`` keeps a
  slice of both operand tiles in registers per thread: the old 64 x 128 x 64
  tile used 255 registers plus spills on sm_90, and on sm_80 ptxas fell back
  to 32 registers with 9-15 KB of spill stores in all three conv kernels
  (correct, very slow); 64 x 64 x 32 still spilled on sm_80. 64 x 64 x 16
  leaves 32 accumulators a thread and compiles without spills on both
  (at most 254 registers on sm_80, 168 on sm_90).

Under ``TRITON_INTERPRET=1`` every program runs in Python and each ``tl``
call costs about a millisecond whatever the tile size (numpy vectorises
inside a tile), so the defaults there are the *largest* tiles: the test
suite's tiny shapes then run in one program per launch. Tests pass small
explicit tiles where they need the multi-tile loops exercised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
from triton.runtime.interpreter import InterpretedFunction


def is_interpreted(kernel: object) -> bool:
    """True when ``kernel`` was decorated under ``TRITON_INTERPRET=1`` (runs on the CPU)."""
    return isinstance(kernel, InterpretedFunction)


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(1, n))))


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes of one kernel launch.

    Attributes:
        block_m: map rows (pairs or output rows) per program.
        block_n: output channels per program.
        block_k: input channels per reduction step.
        num_warps, num_stages: Triton launch parameters (ignored by the interpreter).
        split_rows: weight gradient only; map rows one program reduces before
            its partial sum is written (long maps are split for parallelism).
    """

    block_m: int = 64
    block_n: int = 64
    block_k: int = 32
    num_warps: int = 4
    num_stages: int = 2
    split_rows: int = 4096

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n", "block_k"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 16 or v & (v - 1):
                raise ValueError(f"{name} must be a power of two >= 16 (tl.dot needs that), got {v!r}")
        for name in ("num_warps", "num_stages"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1 or (name == "num_warps" and v & (v - 1)):
                raise ValueError(f"{name} must be a positive int (a power of two for num_warps), got {v!r}")
        if not isinstance(self.split_rows, int) or self.split_rows < self.block_m:
            raise ValueError(f"split_rows ({self.split_rows!r}) must be an int >= block_m ({self.block_m})")


# (largest block_n, largest block_k) per precision; see the module docstring.
GPU_CAPS = {"fp16": (128, 64), "bf16": (128, 64), "tf32": (128, 32), "fp32": (64, 16)}


def precision_name(dtype: torch.dtype, tf32: bool) -> str:
    """``"fp16"``, ``"bf16"``, ``"tf32"`` (fp32 on TF32 tensor cores) or ``"fp32"`` (full-precision FMA)."""
    if dtype == torch.float16:
        return "fp16"
    if dtype == torch.bfloat16:
        return "bf16"
    if dtype == torch.float32:
        return "tf32" if tf32 else "fp32"
    raise TypeError(f"dtype must be float32, float16 or bfloat16, got {dtype}")


def default_tiles(
    cin: int, cout: int, interpreted: bool, dtype: torch.dtype = torch.float32, tf32: bool = False
) -> TileConfig:
    """Tile sizes for a ``cin`` -> ``cout`` conv in ``dtype`` (see the module docstring).

    Args:
        cin, cout: channels (positive ints).
        interpreted: the kernels run under ``TRITON_INTERPRET=1`` (largest tiles, one program per launch).
        dtype: the features' dtype; tf32: fp32 on TF32 tensor cores.
    """
    for name, v in (("cin", cin), ("cout", cout)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    prec = precision_name(dtype, tf32)
    if interpreted:
        return TileConfig(block_m=64, block_n=_pow2(cout, 16, 64), block_k=_pow2(cin, 16, 64), split_rows=64)
    max_n, max_k = GPU_CAPS[prec]
    block_n, block_k = _pow2(cout, 16, max_n), _pow2(cin, 16, max_k)
    warps = 8 if block_n >= 128 else 4  # at most 32 fp32 accumulators a thread
    return TileConfig(block_m=64, block_n=block_n, block_k=block_k, num_warps=warps, num_stages=2)
