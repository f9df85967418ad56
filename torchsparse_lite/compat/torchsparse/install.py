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

__all__ = ["Installation", "install", "uninstall"]

NAMES = (
    "torchsparse",
    "torchsparse.tensor",
    "torchsparse.nn",
    "torchsparse.nn.functional",
    "torchsparse.utils",
    "torchsparse.utils.quantize",
    "torchsparse.utils.collate",
)


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


class Installation:
    """Handle of one :func:`install`: what ``sys.modules`` held before, restored by :meth:`uninstall`."""

    def __init__(self, saved: dict[str, types.ModuleType | None]) -> None:
        self._saved = saved
        self.active = True

    def uninstall(self) -> None:
        """Restore the previous ``sys.modules`` entries (idempotent)."""
        if not self.active:
            return
        for name, module in self._saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        self.active = False
        if _ACTIVE and _ACTIVE[-1] is self:
            _ACTIVE.pop()

    def __enter__(self) -> Installation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


_ACTIVE: list[Installation] = []


def install() -> Installation:
    """Register the compat modules as ``torchsparse`` & co.; returns the handle that undoes it.

    Raises:
        RuntimeError: already installed (uninstall first).
    """
    if _ACTIVE:
        raise RuntimeError("torchsparse_lite.compat.torchsparse is already installed; call uninstall() first")
    modules = _modules()
    handle = Installation({name: sys.modules.get(name) for name in NAMES})
    sys.modules.update(modules)
    _ACTIVE.append(handle)
    return handle


def uninstall() -> None:
    """Undo the active :func:`install` (no-op when not installed)."""
    if _ACTIVE:
        _ACTIVE[-1].uninstall()
