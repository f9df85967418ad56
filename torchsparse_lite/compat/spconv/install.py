"""Opt-in registration of this package under spconv's import names in ``sys.modules``.

After :func:`install`, ``import spconv.pytorch as spconv``,
``from spconv.pytorch import SparseConvTensor``, ``from spconv.pytorch.utils
import PointToVoxel`` and the other ``spconv.pytorch.*`` modules this package
mirrors resolve to it. Any real ``spconv`` modules already in ``sys.modules``
are set aside and put back by :func:`uninstall` (objects imported from them
before stay as they were). ``with install(): ...`` scopes it.
"""

from __future__ import annotations

import importlib
import sys
import types

from ..registry import Installation, install_modules, uninstall_modules
from .modules import ConvAlgo

PACKAGE = __name__.rsplit(".", 1)[0]
SPCONV_API_VERSION = "2.3.8"
# spconv.pytorch.<name> -> our module; every module of the package, so none loads twice under two names
SUBMODULES = {
    "core": "tensor", "conv": "conv", "modules": "modules", "pool": "pool", "functional": "functional",
    "tables": "tables", "utils": "utils", "convolution": "convolution", "indices": "indices", "rules": "rules",
    "tensor": "tensor", "install": "install",
}  # fmt: skip


ROOTS = ("spconv",)


def _top_modules(package: types.ModuleType) -> dict[str, types.ModuleType]:
    """The stand-ins for the top-level ``spconv`` package and ``spconv.core`` (``ConvAlgo``)."""
    top = types.ModuleType("spconv", "torchsparse_lite.compat.spconv installed under spconv's names")
    top.__path__ = []  # a package: its submodules resolve through sys.modules only
    top.__version__ = SPCONV_API_VERSION
    core = types.ModuleType("spconv.core", "spconv.core stand-in: ConvAlgo")
    core.ConvAlgo = ConvAlgo
    top.pytorch, top.core, top.ConvAlgo = package, core, ConvAlgo
    return {"spconv": top, "spconv.core": core}


def install() -> Installation:
    """Register this package as ``spconv.pytorch`` (plus ``spconv``, ``spconv.core`` and the submodules).

    Returns:
        the :class:`Installation` handle (its ``module`` is this package); undo
        with ``handle.uninstall()``, :func:`uninstall` or ``with install(): ...``
        (tests must undo it: the real spconv may be installed and used elsewhere).

    Raises:
        RuntimeError: already installed.
    """
    package = importlib.import_module(PACKAGE)
    ours = _top_modules(package)
    ours["spconv.pytorch"] = package
    for alias, module in SUBMODULES.items():
        ours[f"spconv.pytorch.{alias}"] = importlib.import_module(f"{PACKAGE}.{module}")
    handle = install_modules(PACKAGE, ROOTS, ours)
    handle.module = package
    return handle


def uninstall() -> None:
    """Undo :func:`install` (a no-op when not installed)."""
    uninstall_modules(ROOTS)


def installed() -> bool:
    """True while :func:`install` is in effect."""
    return sys.modules.get("spconv.pytorch") is importlib.import_module(PACKAGE)
