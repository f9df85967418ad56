"""How a conv's geometry travels as custom-op arguments (ints, lists of ints, strings).

An op's schema admits no Python objects, so a
:class:`~torchsparse_lite.kmap.geometry.ConvGeometry` is flattened to five
arguments and rebuilt (and re-validated) inside the op:

* ``shape``: 15 ints, kernel size, stride, dilation, padding, output padding (3 each);
* ``mode``, ``rule``: the mode and the strided-output rule (``downsample_mode``);
* ``bound``: the spatial bound (3 ints) or ``[]`` for an unbounded grid;
* ``taps``: the kept tap indices or ``[]`` for the full box.
"""

from __future__ import annotations

import operator

from ..kmap.geometry import ConvGeometry

GeometryArgs = tuple[list[int], str, str, list[int], list[int]]


def geometry_args(geometry: ConvGeometry) -> GeometryArgs:
    """``(shape, mode, rule, bound, taps)`` of ``geometry`` (see the module doc)."""
    g = geometry
    shape = [*g.kernel_size, *g.stride, *g.dilation, *g.padding, *g.output_padding]  # type: ignore[misc]
    # operator.index: a traced graph specialises any symbolic int here (a grid shape read off an input)
    ints = lambda values: [operator.index(v) for v in values]  # noqa: E731
    return ints(shape), g.mode, g.downsample_mode, ints(g.bound or ()), ints(g.offsets_subset or ())


def geometry_of(shape: list[int], mode: str, rule: str, bound: list[int], taps: list[int]) -> ConvGeometry:
    """The :class:`ConvGeometry` that :func:`geometry_args` flattened."""
    if len(shape) != 15:
        raise ValueError(f"a geometry's shape argument holds 15 ints (kernel, stride, dilation, padding, "
                         f"output padding), got {len(shape)}")  # fmt: skip
    k, s, d, p, op = (tuple(shape[i : i + 3]) for i in range(0, 15, 3))
    return ConvGeometry(k, s, d, p, mode, rule, tuple(bound) or None, op, tuple(taps) or None)  # type: ignore[arg-type]
