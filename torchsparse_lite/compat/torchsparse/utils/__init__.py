"""``torchsparse.utils``: ``quantize.sparse_quantize`` and ``collate.sparse_collate(_fn)``."""

from . import collate, quantize
from .collate import sparse_collate, sparse_collate_fn
from .quantize import sparse_quantize

__all__ = ["collate", "quantize", "sparse_collate", "sparse_collate_fn", "sparse_quantize"]
