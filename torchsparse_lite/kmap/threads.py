"""Run independent NumPy calls on PyTorch's CPU threads.

NumPy's binary search (``np.searchsorted``) is the fastest sorted lookup on
the CPU here (see :class:`~torchsparse_lite.kmap.index.SortIndex`), but it
runs on one core. It releases the GIL, so independent searches on a small
thread pool run side by side: :func:`thread_map` does that with as many
workers as ``torch.get_num_threads()`` allows, and serially on one thread,
so results never depend on the thread count.

The pool is created on first use and rebuilt after a fork (a forked
DataLoader worker inherits no running threads).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_pools: dict[int, ThreadPoolExecutor] = {}  # by worker count; emptied in a forked child


def _forget_pools() -> None:
    _pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def thread_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``, spread over ``torch.get_num_threads()`` threads when that is > 1.

    ``fn`` must release the GIL for this to pay (NumPy's searches do) and must
    not depend on which thread runs it. Exceptions propagate as from a loop.
    """
    workers = min(torch.get_num_threads(), len(items))
    if workers <= 1:
        return [fn(x) for x in items]
    pool = _pools.get(workers)
    if pool is None:
        pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="torchsparse_lite")
    return list(pool.map(fn, items))
