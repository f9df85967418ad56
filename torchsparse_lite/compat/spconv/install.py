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

from .modules import ConvAlgo

PACKAGE = __name__.rsplit(".", 1)[0]
SPCONV_API_VERSION = "2.3.8"
# spconv.pytorch.<name> -> our module; every module of the package, so none loads twice under two names
SUBMODULES = {
    "core": "tensor", "conv": "conv", "modules": "modules", "pool": "pool", "functional": "functional",
    "tables": "tables", "utils": "utils", "convolution": "convolution", "indices": "indices", "rules": "rules",
    "tensor": "tensor", "install": "install",
}  # fmt: skip


def _is_spconv(name: str) -> bool:
    return name == "spconv" or name.startswith("spconv.")


def _top_modules(package: types.ModuleType) -> dict[str, types.ModuleType]:
    """The stand-ins for the top-level ``spconv`` package and ``spconv.core`` (``ConvAlgo``)."""
    top = types.ModuleType("spconv", "torchsparse_lite.compat.spconv installed under spconv's names")
    top.__path__ = []  # a package: its submodules resolve through sys.modules only
    top.__version__ = SPCONV_API_VERSION
    core = types.ModuleType("spconv.core", "spconv.core stand-in: ConvAlgo")
    core.ConvAlgo = ConvAlgo
    top.pytorch, top.core, top.ConvAlgo = package, core, ConvAlgo
    return {"spconv": top, "spconv.core": core}


class Installation:
    """Handle of one :func:`install`; :meth:`uninstall` (or leaving a ``with`` block) undoes it."""

    def __init__(self, ours: dict[str, types.ModuleType], saved: dict[str, types.ModuleType]) -> None:
        self._ours, self._saved = ours, saved
        self.module = ours["spconv.pytorch"]
        self.active = True

    def uninstall(self) -> None:
        """Remove the registered names (and spconv submodules imported meanwhile); restore the saved ones."""
        if not self.active:
            return
        for name in [n for n in sys.modules if _is_spconv(n)]:
            del sys.modules[name]
        sys.modules.update(self._saved)
        self.active = False
        _ACTIVE.clear()

    def __enter__(self) -> Installation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


_ACTIVE: list[Installation] = []


def install() -> Installation:
    """Register this package as ``spconv.pytorch`` (plus ``spconv``, ``spconv.core`` and the submodules).

    Returns:
        the :class:`Installation` handle; undo with ``handle.uninstall()``,
        :func:`uninstall` or ``with install(): ...`` (tests must undo it: the
        real spconv may be installed and used elsewhere).

    Raises:
        RuntimeError: already installed.
    """
    if _ACTIVE:
        raise RuntimeError("torchsparse_lite.compat.spconv is already installed; call uninstall() first")
    package = importlib.import_module(PACKAGE)
    saved = {name: mod for name, mod in sys.modules.items() if _is_spconv(name)}
    for name in saved:
        del sys.modules[name]
    ours = _top_modules(package)
    ours["spconv.pytorch"] = package
    for alias, module in SUBMODULES.items():
        ours[f"spconv.pytorch.{alias}"] = importlib.import_module(f"{PACKAGE}.{module}")
    sys.modules.update(ours)
    _ACTIVE.append(Installation(ours, saved))
    return _ACTIVE[0]


def uninstall() -> None:
    """Undo :func:`install` (a no-op when not installed)."""
    if _ACTIVE:
        _ACTIVE[0].uninstall()


def installed() -> bool:
    """True while :func:`install` is in effect."""
    return bool(_ACTIVE)
