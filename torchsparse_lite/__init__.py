"""torchsparse_lite: point-cloud sparse convolution for PyTorch, no C++/CUDA build."""

from .config import EngineConfig, get_config, set_config, use_config
from .kmap import KernelMap, build_kernel_map
from .tensor import SparseTensor, cat
from .utils import sparse_collate, sparse_quantize

__version__ = "0.1.0"

__all__ = [
    "EngineConfig",
    "KernelMap",
    "SparseTensor",
    "build_kernel_map",
    "cat",
    "get_config",
    "set_config",
    "sparse_collate",
    "sparse_quantize",
    "use_config",
]
