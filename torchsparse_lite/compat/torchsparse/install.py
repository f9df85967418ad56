"""Opt-in registration of this package under TorchSparse's import names in ``sys.modules``.

After :func:`install`, ``import torchsparse``, ``import torchsparse.nn as spnn``,
``from torchsparse.nn import functional as F``, ``from torchsparse.utils.quantize
import sparse_quantize`` and ``from torchsparse.utils.collate import
sparse_collate_fn`` resolve here. :func:`uninstall` (or leaving the ``with``
block of the returned handle) restores whatever those names held before.
"""

from __future__ import annotations

import sys
import types

from ..registry import Installation, install_modules, uninstall_modules

__all__ = ["Installation", "install", "uninstall"]

def _modules() -> dict[str, types.ModuleType]:
    pkg = sys.modules[__package__]  # this package (its __init__ imported this module, so it is loaded)

    return {
        "torchsparse": pkg,
        "torchsparse.tensor": pkg.tensor,
        "torchsparse.nn": pkg.nn,
        "torchsparse.nn.functional": pkg.nn.functional,
        "torchsparse.utils": pkg.utils,
        "torchsparse.utils.quantize": pkg.utils.quantize,
        "torchsparse.utils.collate": pkg.utils.collate,
    }


def install() -> Installation:
    """Register the compat modules as ``torchsparse`` & co.; returns the handle that undoes it.

    Raises:
        RuntimeError: already installed (uninstall first).
    """
    return install_modules(__package__, ("torchsparse",), _modules())


def uninstall() -> None:
    """Undo the active :func:`install` (no-op when not installed)."""
    uninstall_modules(("torchsparse",))
