"""Opt-in registration of this layer as ``MinkowskiEngine`` in ``sys.modules``.

After :func:`install`, ``import MinkowskiEngine as ME``, ``import
MinkowskiEngine.MinkowskiFunctional as MEF`` and ``from
MinkowskiEngine.modules.resnet_block import BasicBlock`` resolve to this
package. :func:`install` returns a handle whose :meth:`~Installation.uninstall`
(or leaving it as a context manager, or :func:`uninstall`) puts back whatever
those names pointed to before.
"""

from __future__ import annotations

import importlib

from ..registry import Installation, install_modules, uninstall_modules

PACKAGE = __name__.rsplit(".", 1)[0]

# ME import name -> submodule of this package ("" = the package itself).
MODULES = {
    "MinkowskiEngine": "",
    "MinkowskiEngine.utils": "utils",
    "MinkowskiEngine.MinkowskiOps": "ops",
    "MinkowskiEngine.MinkowskiFunctional": "functional",
    "MinkowskiEngine.modules": "modules",
    "MinkowskiEngine.modules.resnet_block": "modules.resnet_block",
    "MinkowskiEngine.MinkowskiSparseTensor": "tensor",
    "MinkowskiEngine.MinkowskiTensor": "tensor",
    "MinkowskiEngine.MinkowskiConvolution": "conv",
    "MinkowskiEngine.MinkowskiPooling": "pooling",
    "MinkowskiEngine.MinkowskiNonlinearity": "layers",
    "MinkowskiEngine.MinkowskiNormalization": "layers",
    "MinkowskiEngine.MinkowskiNetwork": "layers",
    "MinkowskiEngine.MinkowskiCommon": "layers",
    "MinkowskiEngine.MinkowskiCoordinateManager": "manager",
    "MinkowskiEngine.MinkowskiKernelGenerator": "kernel",
}


ROOTS = ("MinkowskiEngine",)


def install() -> Installation:
    """Register this package under ``MinkowskiEngine`` and its submodule names; returns the undo handle.

    Raises:
        RuntimeError: already installed (uninstall first).
    """
    modules = {name: importlib.import_module(f"{PACKAGE}.{sub}" if sub else PACKAGE) for name, sub in MODULES.items()}
    return install_modules(PACKAGE, ROOTS, modules)


def uninstall(handle: Installation | None = None) -> None:
    """Undo ``handle`` (default: the active :func:`install`)."""
    if handle is not None:
        handle.uninstall()
    else:
        uninstall_modules(ROOTS)
