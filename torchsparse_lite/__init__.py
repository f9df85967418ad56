"""torchsparse_lite: point-cloud sparse convolution for PyTorch, no C++/CUDA build.

The core names (SparseTensor, the config, kernel maps, quantization) load with
the package; the public subpackages (``nn``, ``functional``, ``models``,
``prune``, ``datasets``, ``detection``, ``compat``, …) load on first access,
as ``torch.nn`` does, so ``import torchsparse_lite as tsl; tsl.nn.Conv3d(...)``
works without slowing ``import torchsparse_lite``.
"""

import importlib

from .config import EngineConfig, get_config, set_config, use_config
from .kmap import KernelMap, build_kernel_map
from .kmap.geometry import ConvGeometry
from .tensor import SparseTensor, cat
from .utils import sparse_collate, sparse_quantize

__version__ = "0.1.0"

SUBPACKAGES = (
    "bench",
    "compat",
    "datasets",
    "detection",
    "functional",
    "grouping",
    "interop",
    "kernels",
    "kmap",
    "models",
    "nn",
    "prune",
    "train",
    "utils",
)

__all__ = [
    "ConvGeometry",
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
    *SUBPACKAGES,
]


def __getattr__(name: str) -> object:
    """Import a public subpackage on first attribute access (PEP 562)."""
    if name in SUBPACKAGES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SUBPACKAGES))
