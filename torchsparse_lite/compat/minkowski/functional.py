"""``MinkowskiEngine.MinkowskiFunctional``: ``torch.nn.functional`` applied to a SparseTensor's features.

Each function ``f(input, *args, **kwargs)`` returns a SparseTensor on the
input's coordinates with ``torch.nn.functional.f(input.F, *args, **kwargs)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F

from .tensor import SparseTensor

NAMES = (
    "threshold",
    "relu",
    "hardtanh",
    "hardswish",
    "relu6",
    "elu",
    "selu",
    "celu",
    "leaky_relu",
    "prelu",
    "rrelu",
    "glu",
    "gelu",
    "logsigmoid",
    "hardshrink",
    "tanhshrink",
    "softsign",
    "softplus",
    "softmin",
    "softmax",
    "softshrink",
    "gumbel_softmax",
    "log_softmax",
    "tanh",
    "sigmoid",
    "hardsigmoid",
    "silu",
    "batch_norm",
    "normalize",
    "linear",
    "dropout",
    "alpha_dropout",
)


def _wrap(name: str) -> Callable[..., SparseTensor]:
    fn = getattr(F, name)

    def apply(input: SparseTensor, *args: object, **kwargs: object) -> SparseTensor:
        if not isinstance(input, SparseTensor):
            raise TypeError(f"MinkowskiFunctional.{name} expects a SparseTensor, got {type(input).__name__}")
        return SparseTensor(
            fn(input.F, *args, **kwargs),
            coordinate_map_key=input.coordinate_map_key,
            coordinate_manager=input.coordinate_manager,
        )

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = f"``torch.nn.functional.{name}`` on the features of a SparseTensor."
    return apply


globals().update({name: _wrap(name) for name in NAMES})

__all__ = list(NAMES)
