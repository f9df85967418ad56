"""Value checks in a traced graph: the eager check, run at run time by a custom op, raising the eager error.

A check that reads tensor values (a maximum, ``.tolist()``, ``bool(t.all())``)
cannot run while ``torch.compile`` or ``torch.export`` traces: the values do
not exist yet, and a graph cannot branch on them. The map-building ops run
theirs inside (:mod:`.maps`); every other one goes through
:func:`checked`:

* eagerly, ``checked(x, name, *ints)`` calls the registered check and returns
  ``x`` itself (no copy, no extra work);
* in a graph it calls ``torchsparse_lite::checked(x, name, ints) -> x'``, whose
  real kernel runs the same check on the real tensor, so bad input raises the
  eager ``ValueError`` with its message when the graph runs. The op returns a
  copy of ``x`` that the caller uses in place of ``x`` (a result that is used
  keeps the op in the graph; an integer tensor such as coordinates is the
  intended argument, it has no gradient).

A check is a function ``check(x, *ints) -> None`` registered under a name
with :func:`value_check` by the module that defines it; a graph (or a loaded
exported program) needs that module imported before it runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Check = Callable[..., None]
CHECKS: dict[str, Check] = {}


def value_check(name: str) -> Callable[[Check], Check]:
    """Register the decorated ``check(x, *ints) -> None`` (raises on bad values) under ``name``."""

    def register(check: Check) -> Check:
        if CHECKS.get(name, check) is not check:
            raise ValueError(f"a value check named {name!r} is already registered")
        CHECKS[name] = check
        return check

    return register


def _check_named(name: str) -> Check:
    check = CHECKS.get(name)
    if check is None:
        raise ValueError(f"no value check named {name!r} is registered; import the module that defines it")
    return check


@torch.library.custom_op("torchsparse_lite::checked", mutates_args=())
def checked_op(x: Tensor, check: str, args: list[int]) -> Tensor:
    """Run the check ``check`` on ``x`` (raises its error) -> a copy of ``x``."""
    _check_named(check)(x, *args)
    return x.clone()


@checked_op.register_fake
def _checked_fake(x, check, args):
    _check_named(check)  # an unknown name fails while tracing already
    return torch.empty_like(x)


def checked(x: Tensor, check: str, *args: int) -> Tensor:
    """``x`` after the check ``check`` accepted its values (see the module doc): use the result, not ``x``."""
    if torch.compiler.is_compiling():
        return checked_op(x, check, list(args))
    _check_named(check)(x, *args)
    return x
