"""How TorchSparse 2.1 runs one ``Conv3d``, as a native :class:`ConvGeometry`.

Read from TorchSparse 2.1's source (``nn/modules/conv.py``,
``nn/functional/conv/conv.py``, ``nn/functional/conv/kmap/*``,
``backend/others/sparsemapping_cuda.cu``, ``backend/hashmap/hashmap_cuda.cu``).
Tap ``u`` (per axis ``0 <= u < k``) reads the input at ``o * s + u - p`` for
output ``o``, i.e. native padding ``p``; the weight row of a tap follows
:func:`~torchsparse_lite.interop.weights.torchsparse_tap_order` (x fastest for
an odd kernel volume, z fastest for an even one).

* Module padding: ``(k - 1) // 2`` on axes with odd ``k`` and stride 1, the
  ``padding`` argument (default 0) elsewhere.
* Submanifold (stride 1): odd volume -> centred taps; even volume -> taps at
  ``0 .. k-1`` (``hashmap_on_the_fly``) or centred by ``(k - 1) // 2``
  (``hashmap``).
* Strided, ``hashmap_on_the_fly`` (default): taps at ``u - padding``; outputs
  every ``o`` whose window holds an input ("spconv" rule), limited to the
  dense conv's output grid of the input's extent: ``spatial_range`` or, without
  one, the per-axis maximum coordinate + 1 (so a k=2 s=2 conv drops an input
  at an even maximum coordinate, as TorchSparse 2.1 does). The released
  source ignores ``downsample_mode`` here; ``"minkowski"`` is honoured as in
  ``hashmap`` mode instead.
* Strided, ``hashmap`` or ``downsample_mode="minkowski"``: taps centred by
  ``(k - 1) // 2`` (the hash lookup ignores ``padding``); outputs unique
  ``c // s`` without a bound when the mode is "minkowski" or every stride is
  1 or ``k``, else the "spconv" rule with the module padding (only supported
  when that padding equals the centring).
* Transposed (not generative): the map of the strided conv with the same
  kernel and stride that produced the input (TorchSparse's key:
  input stride / stride, kernel, stride, dilation), transposed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ....kmap.geometry import ConvGeometry

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class ConvPlan:
    """One TorchSparse conv in native terms.

    Attributes:
        geometry: the native geometry (bound filled in per input).
        bounded: outputs are limited to the dense conv's output grid of the
            input's extent (``spatial_range`` or max coordinate + 1).
    """

    geometry: ConvGeometry
    bounded: bool


def module_padding(kernel_size: Triple, stride: Triple, padding: int | Sequence[int]) -> Triple:
    """TorchSparse 2.1 ``Conv3d.padding``: ``(k-1)//2`` where ``k`` is odd and the stride 1, else ``padding``."""
    if isinstance(padding, bool):
        raise TypeError(f"padding must be an int or 3 ints, got {padding!r}")
    pad = (padding,) * 3 if isinstance(padding, int) else tuple(int(p) for p in padding)
    if len(pad) != 3 or min(pad) < 0:
        raise ValueError(f"padding must be a non-negative int or 3 of them, got {padding!r}")
    return tuple((k - 1) // 2 if k % 2 and s == 1 else p for k, s, p in zip(kernel_size, stride, pad))  # type: ignore[return-value]


def _centred(kernel_size: Triple) -> Triple:
    return tuple((k - 1) // 2 for k in kernel_size)  # type: ignore[return-value]


def plan_conv(kernel_size: Triple, stride: Triple, padding: Triple, kmap_mode: str, downsample_mode: str) -> ConvPlan:
    """The native plan of a (not transposed) TorchSparse conv; ``padding`` is the module padding.

    Raises:
        NotImplementedError: a strided ``hashmap``-mode conv with the
            "spconv" rule whose padding differs from the tap centring.
    """
    volume = kernel_size[0] * kernel_size[1] * kernel_size[2]
    centred = _centred(kernel_size)
    if stride == (1, 1, 1):
        pad = centred if volume % 2 or kmap_mode == "hashmap" else (0, 0, 0)
        return ConvPlan(ConvGeometry(kernel_size, padding=pad, mode="submanifold"), bounded=False)
    floor_rule = all(s in (1, k) for s, k in zip(stride, kernel_size))
    if downsample_mode == "minkowski" or (kmap_mode == "hashmap" and floor_rule):
        geometry = ConvGeometry(kernel_size, stride, padding=centred, mode="conv", downsample_mode="minkowski")
        return ConvPlan(geometry, bounded=False)
    if kmap_mode == "hashmap" and padding != centred:
        raise NotImplementedError(
            f"kmap_mode='hashmap' with kernel_size {kernel_size}, stride {stride}, padding {padding}: TorchSparse "
            f"2.1 then computes the outputs with padding {padding} but looks the taps up centred at {centred}; "
            "torchsparse_lite does not reproduce that mix: use kmap_mode='hashmap_on_the_fly' (the default) or "
            f"padding={centred}"
        )
    return ConvPlan(ConvGeometry(kernel_size, stride, padding=padding, mode="conv"), bounded=True)


def map_key(tensor_stride: Triple, kernel_size: Triple, stride: Triple) -> str:
    """Name of a strided conv's map in the native cache (TorchSparse's kmap key, dilation 1)."""
    return f"torchsparse:{tensor_stride}:{kernel_size}:{stride}"


def out_spatial_range(
    spatial_range: tuple[int, ...] | None, kernel_size: Triple, stride: Triple, padding: Triple
) -> tuple[int, ...] | None:
    """TorchSparse's output ``spatial_range``: ``(n + 2p - (k-1) - 1) // s + 1`` per axis, batch kept."""
    if spatial_range is None:
        return None
    shape = ((n + 2 * p - (k - 1) - 1) // s + 1 for n, k, s, p in zip(spatial_range[1:], kernel_size, stride, padding))
    return (spatial_range[0], *shape)
