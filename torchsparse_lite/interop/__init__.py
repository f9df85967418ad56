"""Checkpoint interchange with TorchSparse and spconv.

* :mod:`.weights` converts one conv weight between the layouts
  (ours ``[K, Cin, Cout]``, x fastest; TorchSparse's ``[K, Cin, Cout]`` in its
  own tap order — x fastest for odd kernel volumes, z fastest for even ones —
  and ``[Cin, Cout]`` for a 1x1x1 conv; spconv 2.x ``[Cout, kx, ky, kz, Cin]``;
  spconv 1.x ``[kx, ky, kz, Cin, Cout]``).
* :mod:`.checkpoints` converts whole state dicts and loads them into a model.
"""

from .checkpoints import (
    from_spconv_state_dict,
    from_torchsparse_state_dict,
    load_spconv_checkpoint,
    load_torchsparse_checkpoint,
    to_spconv_state_dict,
    to_torchsparse_state_dict,
)
from .weights import (
    check_torchsparse_geometry,
    spconv_to_weight,
    torchsparse_paddings,
    torchsparse_tap_order,
    torchsparse_to_weight,
    weight_to_spconv,
    weight_to_torchsparse,
)

__all__ = [
    "check_torchsparse_geometry",
    "from_spconv_state_dict",
    "from_torchsparse_state_dict",
    "load_spconv_checkpoint",
    "load_torchsparse_checkpoint",
    "spconv_to_weight",
    "to_spconv_state_dict",
    "to_torchsparse_state_dict",
    "torchsparse_paddings",
    "torchsparse_tap_order",
    "torchsparse_to_weight",
    "weight_to_spconv",
    "weight_to_torchsparse",
]
