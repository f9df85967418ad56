"""Registering a compat package under another library's import names in ``sys.modules``, and undoing it.

One mechanism for the three compat packages: :func:`install_modules` saves and
removes every module already registered under the library's root names (say
``spconv``, ``spconv.pytorch``, …), registers ours, and returns an
:class:`Installation` whose :meth:`~Installation.uninstall` removes everything
registered under those roots since (including submodules the model code
imported meanwhile) and puts the saved modules back.
"""

from __future__ import annotations

import sys
from types import ModuleType

_ACTIVE: dict[tuple[str, ...], Installation] = {}  # mirrors what sys.modules (itself global) holds


def _under(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


class Installation:
    """Handle of one installation; :meth:`uninstall` (or leaving a ``with`` block) undoes it."""

    def __init__(self, library: str, roots: tuple[str, ...], saved: dict[str, ModuleType], module: ModuleType):
        self.library, self.roots, self._saved = library, roots, saved
        self.module = module  # the compat package now importable under the library's name
        self.active = True

    def uninstall(self) -> None:
        """Remove every module registered under the roots and restore the saved ones (idempotent)."""
        if not self.active:
            return
        for name in [n for n in sys.modules if _under(n, self.roots)]:
            del sys.modules[name]
        sys.modules.update(self._saved)
        self.active = False
        _ACTIVE.pop(self.roots, None)

    def __enter__(self) -> Installation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


def install_modules(library: str, roots: tuple[str, ...], modules: dict[str, ModuleType]) -> Installation:
    """Register ``modules`` (import name -> module) in place of whatever ``sys.modules`` holds under ``roots``.

    Args:
        library: the package being installed, for messages (e.g. ``"torchsparse_lite.compat.spconv"``).
        roots: the top-level import names taken over (every name below them is saved and removed).
        modules: what to register; ``modules[roots[0]]`` is the handle's :attr:`Installation.module`.

    Raises:
        RuntimeError: ``library`` is installed already.
    """
    if roots in _ACTIVE:
        raise RuntimeError(f"{library} is already installed; call uninstall() first")
    saved = {name: mod for name, mod in sys.modules.items() if _under(name, roots)}
    for name in saved:
        del sys.modules[name]
    sys.modules.update(modules)
    handle = Installation(library, roots, saved, modules[roots[0]])
    _ACTIVE[roots] = handle
    return handle


def uninstall_modules(roots: tuple[str, ...]) -> None:
    """Undo the active installation under ``roots`` (a no-op when there is none)."""
    handle = _ACTIVE.get(roots)
    if handle is not None:
        handle.uninstall()
