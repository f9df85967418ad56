"""Which GPU, and which stream, a launch goes to.

A Triton launch runs on ``torch.cuda.current_device()`` and on that device's
current stream, whatever device its tensors live on. Tensors on ``cuda:1``
launched while device 0 is current make the kernel dereference another GPU's
addresses (an illegal-address fault, or silent garbage with peer access), and
even where that works the kernel runs on device 0's stream, unordered with
the PyTorch ops that produced its inputs on device 1's stream.

Every wrapper therefore launches inside :func:`on_device`, which checks that
all the launch's tensors share one device and makes that device current
(``torch.cuda.device``) for the launch: the kernel then runs on the tensors'
GPU and on *its* current stream, the one PyTorch's own ops there use, so a
caller's ``with torch.cuda.stream(s):`` is honoured too.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

_LAUNCH_DEVICE: contextvars.ContextVar[torch.device | None] = contextvars.ContextVar(
    "torchsparse_lite_launch_device", default=None
)


def launch_device() -> torch.device | None:
    """The device of the innermost :func:`on_device` block, or None outside one."""
    return _LAUNCH_DEVICE.get()


@contextlib.contextmanager
def on_device(**tensors: torch.Tensor) -> Iterator[torch.device]:
    """Make the (single) device of ``tensors`` current for the launches in the block.

    Args:
        tensors: the launch's tensors by argument name (named in the error).

    Raises:
        ValueError: when the tensors are on different devices.
    """
    if not tensors:
        raise ValueError("on_device needs at least one tensor")
    (first, ref), *rest = tensors.items()
    device = ref.device
    for name, t in rest:
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but {first} on {device}; every tensor of a launch must "
                             "be on one device")
    token = _LAUNCH_DEVICE.set(device)
    try:
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            yield device
    finally:
        _LAUNCH_DEVICE.reset(token)
