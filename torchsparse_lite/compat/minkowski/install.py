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
import sys
from dataclasses import dataclass, field
from types import ModuleType

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


@dataclass
class Installation:
    """What :func:`install` replaced; :meth:`uninstall` restores it (idempotent)."""

    saved: dict[str, ModuleType | None] = field(default_factory=dict)
    active: bool = True

    def uninstall(self) -> None:
        if not self.active:
            return
        for name, previous in self.saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
        self.active = False
        if self in _STACK:
            _STACK.remove(self)

    def __enter__(self) -> Installation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


_STACK: list[Installation] = []


def install() -> Installation:
    """Register this package under ``MinkowskiEngine`` and its submodule names; returns the undo handle."""
    handle = Installation()
    for name, sub in MODULES.items():
        module = importlib.import_module(f"{PACKAGE}.{sub}" if sub else PACKAGE)
        handle.saved[name] = sys.modules.get(name)
        sys.modules[name] = module
    _STACK.append(handle)
    return handle


def uninstall(handle: Installation | None = None) -> None:
    """Undo ``handle`` (default: the latest :func:`install` still active)."""
    if handle is None:
        if not _STACK:
            return
        handle = _STACK[-1]
    handle.uninstall()
