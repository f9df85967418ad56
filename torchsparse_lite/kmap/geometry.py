"""The geometry of one sparse convolution, decided once.

A :class:`ConvGeometry` holds everything that fixes *which* input meets
*which* output through *which* weight: kernel size, stride, dilation, padding,
the mode (submanifold / conv / transposed), the strided-output rule and an
optional spatial bound. The module, the map cache key, the map builder, the
:class:`~torchsparse_lite.kmap.kernel_map.KernelMap` and the grouping tuner's layer
signature all read it from here instead of spelling it out.

Offsets: tap ``k`` (per axis ``0 <= k < kernel_size``) sits at
``k * dilation - padding``; for a conv the input of output ``o`` through that
tap is ``o * stride + offset``, for a transposed conv the output of input
``i`` is ``i * stride + offset``. This is exactly a dense ``conv3d`` (or
``conv_transpose3d``) with that padding, restricted to the active sites.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from ..config import DOWNSAMPLE_MODES

MODES = ("submanifold", "conv", "transposed")

IntOr3 = int | Sequence[int]


def triple(value: IntOr3, name: str, minimum: int = 1) -> tuple[int, int, int]:
    """Normalise an int or a 3-sequence of ints ``>= minimum`` to a 3-tuple."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or 3 ints, got {value!r}")
    if isinstance(value, int):
        out = (value, value, value)
    else:
        try:
            out = tuple(int(v) for v in value)
        except TypeError:
            raise TypeError(f"{name} must be an int or 3 ints, got {value!r}") from None
        if len(out) != 3:
            raise ValueError(f"{name} must be an int or 3 ints, got {value!r}")
    if min(out) < minimum:
        raise ValueError(f"{name} must be >= {minimum} on every axis, got {out}")
    return out  # type: ignore[return-value]


KERNEL_SHAPES = ("box", "cross", "star")


def kernel_taps(kernel_size: IntOr3, shape: str) -> tuple[int, ...] | None:
    """Full-box indices (x fastest) of the taps of a named kernel shape of an odd, centred kernel.

    * ``"box"``: every tap (returns None: no subset);
    * ``"cross"``: the centre and the three axis lines through it
      (``3 * (k - 1) + 1`` taps; 7 of a 3x3x3 kernel: the 6-neighbourhood);
    * ``"star"``: the cross plus the four body diagonals (15 taps of 3x3x3).
    """
    if shape not in KERNEL_SHAPES:
        raise ValueError(f"kernel shape must be one of {KERNEL_SHAPES} or a sequence of tap indices, got {shape!r}")
    ks = triple(kernel_size, "kernel_size")
    if shape == "box":
        return None
    if any(k % 2 == 0 for k in ks):
        raise ValueError(f"the {shape!r} kernel shape needs an odd kernel size on every axis, got {ks}")
    kept = []
    for k in range(ks[0] * ks[1] * ks[2]):
        off = (k % ks[0] - ks[0] // 2, k // ks[0] % ks[1] - ks[1] // 2, k // (ks[0] * ks[1]) - ks[2] // 2)
        mags = {abs(v) for v in off if v}
        on_axis = sum(v != 0 for v in off) <= 1
        diagonal = shape == "star" and len(mags) == 1 and all(off)
        if on_axis or diagonal:
            kept.append(k)
    return tuple(kept)


def default_padding(kernel_size: tuple[int, int, int], dilation: tuple[int, int, int]) -> tuple[int, int, int]:
    """The engine's default padding: ``d * (k // 2)`` for odd ``k`` (centred taps), 0 for even ``k``.

    Even kernels therefore use offsets ``0 .. k-1`` (the down-sampling k=2
    s=2 conv of MinkUNet sees exactly the voxels of its output's window).
    """
    return tuple(d * (k // 2) if k % 2 else 0 for k, d in zip(kernel_size, dilation))  # type: ignore[return-value]


@dataclass(frozen=True)
class ConvGeometry:
    """Geometry of one sparse convolution (hashable: it is the map cache key).

    Attributes:
        kernel_size, stride, dilation: per axis, >= 1.
        padding: per axis, >= 0; ``None`` at construction means
            :func:`default_padding`.
        mode: ``"submanifold"`` (outputs = inputs, stride 1), ``"conv"``
            (strided or generative) or ``"transposed"``.
        downsample_mode: output rule of a strided conv: ``"spconv"`` (every
            output site of the dense conv whose window holds an input) or
            ``"minkowski"`` (unique ``c // stride``).
        bound: spatial shape of the input grid (per axis, in input units) or
            None for an unbounded grid. With a bound, outputs outside the
            dense conv's output shape (:attr:`out_shape`) are dropped, as
            spconv does.
        output_padding: extra size on the high side of a transposed conv's
            output shape (only affects :attr:`out_shape`).
        offsets_subset: indices of the kept taps when the kernel is a subset
            of the full box (None = all taps).
    """

    kernel_size: tuple[int, int, int]
    stride: tuple[int, int, int] = (1, 1, 1)
    dilation: tuple[int, int, int] = (1, 1, 1)
    padding: tuple[int, int, int] | None = None
    mode: str = "submanifold"
    downsample_mode: str = "spconv"
    bound: tuple[int, int, int] | None = None
    output_padding: tuple[int, int, int] = (0, 0, 0)
    offsets_subset: tuple[int, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        ks = triple(self.kernel_size, "kernel_size")
        st = triple(self.stride, "stride")
        dl = triple(self.dilation, "dilation")
        pad = default_padding(ks, dl) if self.padding is None else triple(self.padding, "padding", 0)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.downsample_mode not in DOWNSAMPLE_MODES:
            raise ValueError(f"downsample_mode must be one of {DOWNSAMPLE_MODES}, got {self.downsample_mode!r}")
        if self.mode == "submanifold" and st != (1, 1, 1):
            raise ValueError(f"a submanifold conv needs stride 1, got {st}")
        bound = None if self.bound is None else triple(self.bound, "bound", 0)
        opad = triple(self.output_padding, "output_padding", 0)
        if any(p >= max(s, d) for p, s, d in zip(opad, st, dl)):
            raise ValueError(f"output_padding {opad} must be smaller than stride {st} or dilation {dl} on each axis")
        for name, value in (("kernel_size", ks), ("stride", st), ("dilation", dl), ("padding", pad)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "bound", bound)
        object.__setattr__(self, "output_padding", opad)
        if self.offsets_subset is not None:
            subset = tuple(int(k) for k in self.offsets_subset)
            volume = ks[0] * ks[1] * ks[2]
            if not subset or len(set(subset)) != len(subset) or min(subset) < 0 or max(subset) >= volume:
                raise ValueError(f"offsets_subset must be distinct tap indices in [0, {volume}), got {subset}")
            object.__setattr__(self, "offsets_subset", tuple(sorted(subset)))

    # ----------------------------------------------------------------- taps
    @property
    def volume(self) -> int:
        """Number of taps (kept taps when :attr:`offsets_subset` is set)."""
        if self.offsets_subset is not None:
            return len(self.offsets_subset)
        return self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]

    def offsets(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """[K, 3] int64 tap offsets ``k * dilation - padding``, x varying fastest (TorchSparse's order)."""
        axes = [
            torch.arange(k, dtype=torch.int64) * d - p
            for k, d, p in zip(self.kernel_size, self.dilation, self.padding)  # type: ignore[arg-type]
        ]
        gz, gy, gx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        out = torch.stack([gx.reshape(-1), gy.reshape(-1), gz.reshape(-1)], dim=1)
        if self.offsets_subset is not None:
            out = out[list(self.offsets_subset)]
        return out.to(device)

    @property
    def symmetric(self) -> bool:
        """True when tap ``k`` is minus tap ``K-1-k`` and the centre tap is zero (so the map mirrors).

        A tap subset keeps the property when it holds the centre and, with
        every tap, its mirror (cross and star kernels do): sorted full-box
        indices closed under ``k -> V-1-k`` pair position ``j`` with ``J-1-j``.
        """
        if self.mode != "submanifold":
            return False
        axes = zip(self.kernel_size, self.dilation, self.padding)  # type: ignore[arg-type]
        centred = all(k % 2 == 1 and p == d * (k // 2) for k, d, p in axes)
        if not centred or self.offsets_subset is None:
            return centred
        full = self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]
        kept = set(self.offsets_subset)
        return full // 2 in kept and all(full - 1 - k in kept for k in kept)

    @property
    def tiles(self) -> bool:
        """True when the windows tile the grid: offsets on every axis are exactly ``0 .. stride-1``."""
        return (
            self.offsets_subset is None
            and self.kernel_size == self.stride
            and self.dilation == (1, 1, 1)
            and self.padding == (0, 0, 0)
        )

    # --------------------------------------------------------------- shapes
    @property
    def out_shape(self) -> tuple[int, int, int] | None:
        """Spatial shape of the output grid implied by :attr:`bound` (None when unbounded).

        conv: ``floor((n + 2p - d(k-1) - 1) / s) + 1``; transposed:
        ``(n - 1) s - 2p + d(k-1) + output_padding + 1``; submanifold: ``n``.
        """
        if self.bound is None:
            return None
        if self.mode == "submanifold":
            return self.bound
        out = []
        for n, k, s, d, p, op in zip(
            self.bound, self.kernel_size, self.stride, self.dilation, self.padding, self.output_padding  # type: ignore[arg-type]
        ):
            if self.mode == "conv":
                out.append(max((n + 2 * p - d * (k - 1) - 1) // s + 1, 0))
            else:
                out.append(max((n - 1) * s - 2 * p + d * (k - 1) + op + 1, 0))
        return tuple(out)  # type: ignore[return-value]

    def with_bound(self, bound: IntOr3 | None) -> ConvGeometry:
        """The same geometry on an input grid of spatial shape ``bound`` (None: unbounded)."""
        return replace(self, bound=None if bound is None else triple(bound, "bound", 0))

    def transposed(self) -> ConvGeometry:
        """The geometry of the transposed conv that undoes this one (same taps, mode swapped)."""
        flip = {"conv": "transposed", "transposed": "conv"}.get(self.mode, self.mode)
        return replace(self, mode=flip, bound=self.out_shape if self.bound is not None else None)

    def same_taps(self, other: ConvGeometry) -> bool:
        """True when ``other`` has the same kernel, stride, dilation, padding and tap subset."""
        return (self.kernel_size, self.stride, self.dilation, self.padding, self.offsets_subset) == (
            other.kernel_size,
            other.stride,
            other.dilation,
            other.padding,
            other.offsets_subset,
        )
