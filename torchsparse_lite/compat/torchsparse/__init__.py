"""Drop-in ``torchsparse`` (TorchSparse 2.1 API) on the native engine.

``import torchsparse_lite.compat.torchsparse as torchsparse`` (or call
:func:`install` to answer ``import torchsparse``) and run TorchSparse 2.1 model
code unchanged: ``SparseTensor(feats, coords, stride=1, spatial_range=None)``
with batch-first coordinates in stride units, ``torchsparse.cat``,
``torchsparse.nn`` (``Conv3d`` with TorchSparse's ``kernel`` parameter and tap
order, ``BatchNorm``, ``GroupNorm``, ``ReLU``, ``LeakyReLU``,
``GlobalAvgPool``, ``GlobalMaxPool``), ``torchsparse.nn.functional`` mode
switches, ``torchsparse.utils.quantize.sparse_quantize`` and
``torchsparse.utils.collate.sparse_collate(_fn)``. See
``docs/migrating_torchsparse.md``.
"""

from . import nn, tensor, utils
from .install import install, uninstall
from .tensor import SparseTensor, cat

__version__ = "2.1.0"  # the TorchSparse API version mirrored (code branches on it to pick the coordinate order)

__all__ = ["SparseTensor", "cat", "install", "nn", "tensor", "uninstall", "utils"]
