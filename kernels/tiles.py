"""Tile sizes shared by the sparse-conv kernels, and interpreter detection.

Why these sizes (GPU):

* ``block_m = 64`` map rows per program: each row is a *gathered* feature row
  (an irregular load), so a tile must be tall enough that the weight tile it
  multiplies is reused across many rows, but short enough that offsets with
  small maps (a few hundred pairs at the coarse levels of a U-Net) still fill
  the machine with programs.
* ``block_n`` = Cout rounded up to a power of two, capped at 128: one program
  usually covers every output channel of a row, so a gathered row is loaded
  once, and the 128 cap keeps the fp32 accumulator (64 x 128) in registers.
* ``block_k`` = Cin rounded up to a power of two, capped at 64: the reduction
  over input channels runs in one or a few steps (Cin is 16..256 in
  MinkUNet), and ``tl.dot`` needs every dimension >= 16.

Under ``TRITON_INTERPRET=1`` every program runs in Python and each ``tl``
call costs about a millisecond whatever the tile size (numpy vectorises
inside a tile), so the defaults there are the *largest* tiles: the test
suite's tiny shapes then run in one program per launch. Tests pass small
explicit tiles where they need the multi-tile loops exercised.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        if self.split_rows < self.block_m:
            raise ValueError(f"split_rows ({self.split_rows}) must be >= block_m ({self.block_m})")


def default_tiles(cin: int, cout: int, interpreted: bool) -> TileConfig:
    """Tile sizes for a conv with ``cin`` -> ``cout`` channels (see the module docstring)."""
    if interpreted:
        return TileConfig(block_m=64, block_n=_pow2(cout, 16, 64), block_k=_pow2(cin, 16, 64), split_rows=64)
    return TileConfig(block_m=64, block_n=_pow2(cout, 16, 128), block_k=_pow2(cin, 16, 64))
